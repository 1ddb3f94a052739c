/* Association policy and the durable store path; see receiver.h.
 * Order of a C-STORE: dataset in DIR/tmp -> header read -> checks ->
 * fsync + rename + directory fsync -> row committed -> success. A crash at
 * any point leaves either nothing acknowledged or a whole file. */
#include "server/receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/error.h"
#include "server/log.h"
#include "server/metrics.h"
#include "storage/store.h"
#include "storage/syncer.h"

#define STATUS_OUT_OF_RESOURCES 0xA700u
#define STATUS_CANNOT_UNDERSTAND 0xC000u

struct vg_receiver {
    char dir[VG_PATH_MAX];
    char db_path[VG_PATH_MAX + 32];
    char ae_title[VG_AE_TITLE_MAX + 1];
    uint64_t min_free_disk;
    int on_duplicate;
    int accept_unknown;
    pthread_rwlock_t ae_lock;        /* guards aes/n_aes (SIGHUP) */
    vg_ae_cfg_t *aes;
    int n_aes;
    atomic_int disk_low;             /* last watermark state, for logging */
    void (*stored)(void *);
    void *stored_arg;
    vg_scp_callbacks_t cb;
};

typedef struct session {
    vg_index_t *idx;                 /* this association's connection */
    vg_syncer_t *syncer;             /* fsyncs while we read and index */
    char calling[VG_AE_TITLE_MAX + 1];
    char peer[64];
    int stored;
} session_t;

/* 1 when PEER (an IP address) is HOST (an IP literal or a name). */
static int host_matches(const char *host, const char *peer)
{
    unsigned char a[16], b[16];
    const char *p = strncmp(peer, "::ffff:", 7) == 0 ? peer + 7 : peer;
    if (inet_pton(AF_INET, host, a) == 1)
        return inet_pton(AF_INET, p, b) == 1 && memcmp(a, b, 4) == 0;
    if (inet_pton(AF_INET6, host, a) == 1)
        return inet_pton(AF_INET6, peer, b) == 1 && memcmp(a, b, 16) == 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return 0;
    int match = 0;
    char buf[INET6_ADDRSTRLEN];
    for (struct addrinfo *ai = res; ai && !match; ai = ai->ai_next) {
        void *addr = ai->ai_family == AF_INET
                         ? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                         : (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (inet_ntop(ai->ai_family, addr, buf, sizeof buf))
            match = strcmp(buf, p) == 0 || strcmp(buf, peer) == 0;
    }
    freeaddrinfo(res);
    return match;
}

/* 1 when free space is below the watermark; logs each change of state. */
static int disk_is_low(vg_receiver_t *r)
{
    uint64_t free_bytes = 0;
    int low = vg_store_free_bytes(r->dir, &free_bytes) < 0 ||
              free_bytes < r->min_free_disk;
    if (atomic_exchange(&r->disk_low, low) != low) {
        if (low)
            vg_log(VG_LOG_ERROR,
                   "free disk %llu MiB is below min_free_disk %llu MiB: refusing new"
                   " instances and associations",
                   (unsigned long long)(free_bytes >> 20),
                   (unsigned long long)(r->min_free_disk >> 20));
        else
            vg_log(VG_LOG_WARN, "free disk %llu MiB is above min_free_disk again:"
                   " accepting", (unsigned long long)(free_bytes >> 20));
    }
    return low;
}

static vg_assoc_decision_t reject(vg_reject_t why, vg_assoc_decision_t d,
                                  const char *calling, const char *called,
                                  const char *peer, const char *text)
{
    vg_metric_add(assoc_rejected[why], 1);
    vg_log(VG_LOG_WARN, "association rejected (%s): calling AE '%s', called AE '%s',"
           " peer %s", text, calling, called, peer);
    return d;
}

static vg_assoc_decision_t on_check(void *ctx, const char *calling,
                                    const char *called, const char *peer)
{
    vg_receiver_t *r = ctx;
    if (strcmp(called, r->ae_title) != 0)
        return reject(VG_REJECT_CALLED_AE, VG_ASSOC_REJECT_CALLED_AE, calling,
                      called, peer, "called AE title is not ours");
    int known = 0, host_ok = 0;
    pthread_rwlock_rdlock(&r->ae_lock);
    for (int i = 0; i < r->n_aes; i++) {
        const vg_ae_cfg_t *ae = &r->aes[i];
        if (ae->role != VG_ROLE_SOURCE || strcmp(ae->ae_title, calling) != 0)
            continue;
        known = 1;
        if (!ae->host[0] || host_matches(ae->host, peer))
            host_ok = 1;
    }
    pthread_rwlock_unlock(&r->ae_lock);
    if (known && !host_ok && !r->accept_unknown)
        return reject(VG_REJECT_CALLING_HOST, VG_ASSOC_REJECT_CALLING_AE, calling,
                      called, peer, "calling AE title not allowed from this host");
    if (!known && !r->accept_unknown)
        return reject(VG_REJECT_CALLING_AE, VG_ASSOC_REJECT_CALLING_AE, calling,
                      called, peer, "calling AE title is not a configured source");
    if (disk_is_low(r))
        return reject(VG_REJECT_DISK_LOW, VG_ASSOC_REJECT_CONGESTION, calling,
                      called, peer, "free disk below min_free_disk");
    return VG_ASSOC_ACCEPT;
}

static void *on_begin(void *ctx, const char *calling, const char *peer)
{
    vg_receiver_t *r = ctx;
    session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    char err[256];
    if (vg_index_open(r->db_path, &s->idx, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERROR, "association from %s: cannot open index: %s", peer, err);
        free(s);
        return NULL;
    }
    if (vg_syncer_create(&s->syncer) < 0) {
        vg_log(VG_LOG_ERROR, "association from %s: cannot start its fsync thread", peer);
        vg_index_close(s->idx);
        free(s);
        return NULL;
    }
    /* The file, not the row, is the durable record: see vg_index_set_full_sync. */
    vg_index_set_full_sync(s->idx, 0);
    snprintf(s->calling, sizeof s->calling, "%s", calling);
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    vg_metric_add(assoc_accepted, 1);
    vg_metric_add(assoc_active, 1);
    vg_log(VG_LOG_INFO, "association accepted: calling AE '%s', peer %s", calling, peer);
    return s;
}

static void on_end(void *ctx, void *session)
{
    (void)ctx;
    session_t *s = session;
    vg_log(VG_LOG_INFO, "association ended: calling AE '%s', peer %s, %d stored",
           s->calling, s->peer, s->stored);
    vg_syncer_destroy(s->syncer);
    vg_index_close(s->idx);
    free(s);
    atomic_fetch_sub_explicit(&vg_metrics.assoc_active, 1, memory_order_relaxed);
}

static void on_progress(void *ctx, void *session, const char *tmp)
{
    (void)ctx;
    vg_syncer_writeback(((session_t *)session)->syncer, tmp);
}

static void on_received(void *ctx, void *session, const char *tmp)
{
    (void)ctx;
    vg_syncer_start(((session_t *)session)->syncer, tmp);
}

static unsigned on_admit(void *ctx, void *session, char *comment, size_t len)
{
    (void)session;
    vg_receiver_t *r = ctx;
    if (disk_is_low(r)) {
        vg_metric_add(store_failures[VG_STOREFAIL_DISK], 1);
        snprintf(comment, len, "free disk below watermark");
        return STATUS_OUT_OF_RESOURCES;
    }
    return 0;
}

/* Answers a refused dataset: the temp file goes, the reason is logged. */
static unsigned refuse(session_t *s, const char *tmp, vg_storefail_t why,
                       unsigned status, char *comment, size_t len,
                       const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static unsigned refuse(session_t *s, const char *tmp, vg_storefail_t why,
                       unsigned status, char *comment, size_t len,
                       const char *fmt, ...)
{
    vg_syncer_wait(s->syncer);
    unlink(tmp);
    vg_metric_add(store_failures[why], 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(comment, len, fmt, ap);
    va_end(ap);
    vg_log(VG_LOG_WARN, "C-STORE from '%s' (%s) refused with %04X: %s", s->calling,
           s->peer, status, comment);
    return status;
}

static unsigned check_uids(session_t *s, const char *tmp, const vg_instance_meta_t *m,
                           const char *affected, char *comment, size_t len)
{
    const struct {
        const char *value, *name;
    } uids[] = {{m->study_uid, "Study Instance UID"},
                {m->series_uid, "Series Instance UID"},
                {m->sop_instance_uid, "SOP Instance UID"}};
    for (size_t i = 0; i < sizeof uids / sizeof uids[0]; i++) {
        if (!uids[i].value[0])
            return refuse(s, tmp, VG_STOREFAIL_MISSING_UID, STATUS_CANNOT_UNDERSTAND,
                          comment, len, "missing %s", uids[i].name);
        if (!vg_uid_valid(uids[i].value))
            return refuse(s, tmp, VG_STOREFAIL_BAD_UID, STATUS_CANNOT_UNDERSTAND,
                          comment, len, "invalid %s", uids[i].name);
    }
    if (affected && affected[0] && strcmp(affected, m->sop_instance_uid) != 0)
        return refuse(s, tmp, VG_STOREFAIL_BAD_UID, STATUS_CANNOT_UNDERSTAND, comment,
                      len, "%s", "SOP Instance UID differs from the request");
    return 0;
}

static unsigned on_store(void *ctx, void *session, const char *tmp,
                         const vg_instance_meta_t *m, const char *parse_error,
                         const char *affected, char *comment, size_t len)
{
    vg_receiver_t *r = ctx;
    session_t *s = session;
    if (!m)
        return refuse(s, tmp, VG_STOREFAIL_PARSE, STATUS_CANNOT_UNDERSTAND, comment,
                      len, "cannot parse dataset: %s", parse_error);
    unsigned st = check_uids(s, tmp, m, affected, comment, len);
    if (st)
        return st;

    char old[VG_PATH_MAX] = "", rel[VG_PATH_MAX];
    int found = vg_index_find_instance(s->idx, m->sop_instance_uid, old, sizeof old);
    if (found < 0)
        return refuse(s, tmp, VG_STOREFAIL_DB, STATUS_OUT_OF_RESOURCES, comment, len,
                      "%s", "index unavailable");
    if (found && r->on_duplicate == VG_DUP_KEEP) {
        vg_syncer_wait(s->syncer);
        unlink(tmp);
        vg_metric_add(instances_duplicate, 1);
        vg_log(VG_LOG_INFO, "duplicate SOP Instance UID %s from '%s' kept the stored copy",
               m->sop_instance_uid, s->calling);
        return 0;
    }
    vg_store_relpath(rel, sizeof rel, m->study_uid, m->series_uid, m->sop_instance_uid);
    struct stat sb;
    int64_t size = stat(tmp, &sb) == 0 ? (int64_t)sb.st_size : 0;
    /* The temp file's fsync started when it arrived; the header was read
     * meanwhile. The directory's fsync then overlaps the index write: the
     * answer waits for both. */
    char parent[VG_PATH_MAX];
    int rc = vg_syncer_wait(s->syncer);
    if (rc == 0)
        rc = vg_store_link(r->dir, tmp, rel, parent, sizeof parent);
    if (rc < 0)
        return refuse(s, tmp, rc == -ENOSPC ? VG_STOREFAIL_DISK : VG_STOREFAIL_IO,
                      STATUS_OUT_OF_RESOURCES, comment, len, "cannot store: %s",
                      vg_strerror(rc));
    vg_syncer_start(s->syncer, parent);
    int indexed = vg_index_put_instance(s->idx, m, rel, size, s->calling, vg_now_ms());
    if ((rc = vg_syncer_wait(s->syncer)) < 0 || indexed < 0) {
        /* The file is whole in place; the next start indexes it. */
        vg_metric_add(store_failures[rc < 0 ? VG_STOREFAIL_IO : VG_STOREFAIL_DB], 1);
        snprintf(comment, len, rc < 0 ? "cannot store: directory not synced"
                                       : "index unavailable");
        vg_log(VG_LOG_ERROR, "C-STORE %s: stored but not acknowledged: %s",
               m->sop_instance_uid, comment);
        return STATUS_OUT_OF_RESOURCES;
    }
    if (found) {
        vg_metric_add(instances_duplicate, 1);
        if (strcmp(old, rel) != 0) {
            char oldabs[2 * VG_PATH_MAX];
            snprintf(oldabs, sizeof oldabs, "%s/%s", r->dir, old);
            unlink(oldabs);
        }
        vg_log(VG_LOG_INFO, "duplicate SOP Instance UID %s from '%s' replaced the stored"
               " copy", m->sop_instance_uid, s->calling);
    }
    s->stored++;
    vg_metric_add(instances_stored, 1);
    vg_metric_add(bytes_stored, (uint64_t)size);
    if (r->stored)
        r->stored(r->stored_arg);
    return 0;
}

static void on_receive_failed(void *ctx, void *session, const char *why)
{
    (void)ctx;
    session_t *s = session;
    vg_metric_add(store_failures[VG_STOREFAIL_NETWORK], 1);
    vg_log(VG_LOG_WARN, "C-STORE from '%s' (%s) not received: %s", s->calling, s->peer,
           why);
}

static void on_echo(void *ctx)
{
    (void)ctx;
    vg_metric_add(echo_requests, 1);
}

static void on_refused(void *ctx, vg_refusal_t why, const char *calling, const char *called,
                       const char *peer, const char *detail)
{
    (void)ctx;
    vg_reject_t label = why == VG_REFUSED_TOO_MANY   ? VG_REJECT_TOO_MANY
                        : why == VG_REFUSED_PROTOCOL ? VG_REJECT_PROTOCOL
                                                     : VG_REJECT_NO_CONTEXT;
    vg_metric_add(assoc_rejected[label], 1);
    vg_log(VG_LOG_WARN, "association rejected (%s): calling AE '%s', called AE '%s', peer %s",
           detail, calling, called, peer);
}

int vg_receiver_create(const vg_config_t *cfg, void (*stored)(void *), void *arg,
                       vg_receiver_t **out)
{
    vg_receiver_t *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    snprintf(r->dir, sizeof r->dir, "%s", cfg->storage.dir);
    snprintf(r->db_path, sizeof r->db_path, "%s/index.sqlite", cfg->storage.dir);
    snprintf(r->ae_title, sizeof r->ae_title, "%s", cfg->node.ae_title);
    r->min_free_disk = cfg->storage.min_free_disk;
    r->on_duplicate = cfg->storage.on_duplicate;
    r->accept_unknown = cfg->node.accept_unknown_sources;
    r->stored = stored;
    r->stored_arg = arg;
    pthread_rwlock_init(&r->ae_lock, NULL);
    r->cb = (vg_scp_callbacks_t){
        .ctx = r, .check = on_check, .begin = on_begin, .end = on_end,
        .admit = on_admit, .progress = on_progress, .received = on_received, .store = on_store, .receive_failed = on_receive_failed,
        .echo = on_echo, .refused = on_refused,
    };
    int rc = vg_receiver_set_aes(r, cfg);
    if (rc < 0) {
        vg_receiver_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

void vg_receiver_destroy(vg_receiver_t *r)
{
    if (!r)
        return;
    pthread_rwlock_destroy(&r->ae_lock);
    free(r->aes);
    free(r);
}

int vg_receiver_set_aes(vg_receiver_t *r, const vg_config_t *cfg)
{
    vg_ae_cfg_t *copy = NULL;
    if (cfg->n_aes > 0) {
        copy = malloc(sizeof *copy * (size_t)cfg->n_aes);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, cfg->aes, sizeof *copy * (size_t)cfg->n_aes);
    }
    pthread_rwlock_wrlock(&r->ae_lock);
    vg_ae_cfg_t *old = r->aes;
    r->aes = copy;
    r->n_aes = cfg->n_aes;
    pthread_rwlock_unlock(&r->ae_lock);
    free(old);
    return 0;
}

const vg_scp_callbacks_t *vg_receiver_callbacks(vg_receiver_t *r)
{
    return &r->cb;
}
