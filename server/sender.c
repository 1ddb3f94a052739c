/* The outbox's sender thread; see sender.h. Per tick: the destinations
 * with due entries, then per destination batches of up to BATCH entries,
 * each batch one association. Every outcome is committed as soon as it is
 * known, so an acknowledged object is recorded before the next one goes.
 * A destination whose association failed is left alone until the
 * earliest retry of what it failed (or until woken: a retry by hand), so
 * a PACS that is down costs one connection attempt per wait, not one per
 * second. */
#include "server/sender.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/error.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/scu.h"
#include "storage/index.h"
#include "storage/outbox.h"

#define BATCH 32     /* entries per association */
#define MAX_DESTS 64 /* destinations looked at per tick */
#define TICK_MS 1000

/* What a send needs from the configuration; replaced whole on SIGHUP. */
typedef struct conf {
    char ae_title[VG_AE_TITLE_MAX + 1];
    int acse_timeout, dimse_timeout;
    char tls_certificate[VG_PATH_MAX];
    char tls_private_key[VG_PATH_MAX];
    vg_outbox_policy_t policy;
    vg_ae_cfg_t *aes; /* owned */
    int n_aes;
} conf_t;

/* One destination that is not tried again before UNTIL_MS. */
typedef struct hold {
    char name[64];
    int64_t until_ms;
} hold_t;

struct vg_sender {
    pthread_t thread;
    pthread_mutex_t lock; /* guards conf, woken */
    pthread_cond_t cond;
    conf_t *conf;
    int woken;
    atomic_int stopping;
    vg_index_t *idx; /* the thread's connection */
    char dir[VG_PATH_MAX];
    hold_t holds[MAX_DESTS]; /* the thread's own */
    int n_holds;
    vg_outbox_entry_t batch[BATCH];
    vg_scu_item_t items[BATCH];
    char paths[BATCH][VG_PATH_MAX + VG_OUTBOX_PATH_MAX + 2];
};

/* The destination's settings, copied from S's configuration. */
typedef struct dest {
    vg_ae_cfg_t ae;
    char calling[VG_AE_TITLE_MAX + 1];
    char cert[VG_PATH_MAX], key[VG_PATH_MAX];
    int acse_timeout, dimse_timeout;
    vg_outbox_policy_t policy;
} dest_t;

static void conf_free(conf_t *c)
{
    if (c)
        free(c->aes);
    free(c);
}

static conf_t *conf_copy(const vg_config_t *cfg)
{
    conf_t *c = calloc(1, sizeof *c);
    if (!c || (cfg->n_aes && !(c->aes = malloc(sizeof *c->aes * (size_t)cfg->n_aes)))) {
        conf_free(c);
        return NULL;
    }
    if (cfg->n_aes)
        memcpy(c->aes, cfg->aes, sizeof *c->aes * (size_t)cfg->n_aes);
    c->n_aes = cfg->n_aes;
    snprintf(c->ae_title, sizeof c->ae_title, "%s", cfg->node.ae_title);
    c->acse_timeout = cfg->node.acse_timeout;
    c->dimse_timeout = cfg->node.dimse_timeout;
    snprintf(c->tls_certificate, sizeof c->tls_certificate, "%s",
             cfg->node.tls_certificate);
    snprintf(c->tls_private_key, sizeof c->tls_private_key, "%s",
             cfg->node.tls_private_key);
    c->policy = (vg_outbox_policy_t){
        .retry_initial_ms = (int64_t)cfg->outbox.retry_initial_seconds * 1000,
        .retry_max_ms = (int64_t)cfg->outbox.retry_max_seconds * 1000,
        .max_attempts = cfg->outbox.max_attempts,
    };
    return c;
}

/* Fills *d for the [ae NAME] destination; 0, or VG_ENOTFOUND with the
 * policy filled all the same. */
static int find_dest(vg_sender_t *s, const char *name, dest_t *d)
{
    int rc = VG_ENOTFOUND;
    pthread_mutex_lock(&s->lock);
    const conf_t *c = s->conf;
    for (int i = 0; i < c->n_aes; i++)
        if (c->aes[i].role == VG_ROLE_DESTINATION && strcmp(c->aes[i].name, name) == 0) {
            d->ae = c->aes[i];
            rc = 0;
        }
    snprintf(d->calling, sizeof d->calling, "%s", c->ae_title);
    snprintf(d->cert, sizeof d->cert, "%s", c->tls_certificate);
    snprintf(d->key, sizeof d->key, "%s", c->tls_private_key);
    d->acse_timeout = c->acse_timeout;
    d->dimse_timeout = c->dimse_timeout;
    d->policy = c->policy;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int should_stop(void *arg)
{
    return atomic_load(&((vg_sender_t *)arg)->stopping);
}

/* --- holds: destinations left alone after a failed association --------- */

static hold_t *hold_of(vg_sender_t *s, const char *name)
{
    for (int i = 0; i < s->n_holds; i++)
        if (strcmp(s->holds[i].name, name) == 0)
            return &s->holds[i];
    return NULL;
}

static int held(vg_sender_t *s, const char *name, int64_t now)
{
    hold_t *h = hold_of(s, name);
    return h && h->until_ms > now;
}

static void hold(vg_sender_t *s, const char *name, int64_t until_ms)
{
    hold_t *h = hold_of(s, name);
    if (!h && s->n_holds < MAX_DESTS)
        h = &s->holds[s->n_holds++];
    if (h) {
        snprintf(h->name, sizeof h->name, "%s", name);
        h->until_ms = until_ms;
    }
}

/* --- outcomes ------------------------------------------------------------ */

/* Records a failed attempt of entry E; returns its next due time (-1:
 * failed for good), or 0 when it could not be recorded. */
static int64_t record_failure(vg_sender_t *s, const vg_outbox_entry_t *e, const dest_t *d,
                              const char *why, int log_each)
{
    int64_t next = 0, now = vg_now_ms();
    if (vg_outbox_mark_failed(s->idx, e->id, why, &d->policy, now, &next) < 0) {
        vg_log(VG_LOG_ERROR, "outbox %lld: cannot record a failed send: %s",
               (long long)e->id, vg_strerror(VG_EDB));
        return 0;
    }
    vg_metric_add(outbox_failed, 1);
    if (next < 0)
        vg_log(VG_LOG_ERROR,
               "outbox %lld: %s not sent to [ae %s] after %d attempts, no more "
               "retries (POST /api/v1/outbox/%lld/retry sends it again): %s",
               (long long)e->id, e->obj.sop_uid, e->destination, e->attempts + 1,
               (long long)e->id, why);
    else if (log_each)
        vg_log(VG_LOG_WARN,
               "outbox %lld: %s not sent to [ae %s]: %s; next attempt in %lld s",
               (long long)e->id, e->obj.sop_uid, e->destination, why,
               (long long)((next - now + 999) / 1000));
    return next;
}

static void record_sent(vg_sender_t *s, const vg_outbox_entry_t *e, const dest_t *d,
                        const vg_scu_item_t *it)
{
    if (vg_outbox_mark_sent(s->idx, e->id, vg_now_ms()) < 0) {
        /* It stays "sending", so the next start sends it again: the
         * destination then sees the same SOP Instance UID twice. */
        vg_log(VG_LOG_ERROR, "outbox %lld: sent to [ae %s] but not recorded: %s",
               (long long)e->id, e->destination, vg_strerror(VG_EDB));
        return;
    }
    vg_metric_add(outbox_sent, 1);
    vg_log(VG_LOG_INFO, "outbox %lld: sent %s (class %s, study %s) to [ae %s] %s@%s:%d%s%s",
           (long long)e->id, e->obj.sop_uid, e->obj.sop_class_uid, e->obj.study_uid,
           e->destination, d->ae.ae_title, d->ae.host, d->ae.port, it->error[0] ? "; " : "",
           it->error);
}

/* Entries taken for a destination that the configuration no longer has. */
static void fail_unknown(vg_sender_t *s, int n, const dest_t *d)
{
    char why[160];
    snprintf(why, sizeof why, "no [ae %s] with role = destination in the configuration",
             s->batch[0].destination);
    int64_t first = 0;
    for (int i = 0; i < n; i++) {
        int64_t next = record_failure(s, &s->batch[i], d, why, 0);
        if (next > 0 && (!first || next < first))
            first = next;
    }
    vg_log(VG_LOG_WARN,
           "outbox: %d object%s waiting for [ae %s], which is not a destination "
           "in the configuration",
           n, n == 1 ? "" : "s", s->batch[0].destination);
    hold(s, s->batch[0].destination, first);
}

/* The association for the batch could not be made: one failed attempt
 * for each entry, one log line. */
static void fail_association(vg_sender_t *s, int n, const dest_t *d, const char *why)
{
    int64_t first = 0, now = vg_now_ms();
    for (int i = 0; i < n; i++) {
        const vg_scu_item_t *it = &s->items[i];
        int64_t next = record_failure(s, &s->batch[i], d,
                                      it->outcome == VG_SCU_FAILED ? it->error : why, 0);
        if (next > 0 && (!first || next < first))
            first = next;
    }
    if (first > 0)
        vg_log(VG_LOG_WARN,
               "outbox: %d object%s not sent to [ae %s] %s@%s:%d: %s; next "
               "attempt in %lld s",
               n, n == 1 ? "" : "s", d->ae.name, d->ae.ae_title, d->ae.host, d->ae.port,
               why, (long long)((first - now + 999) / 1000));
    hold(s, d->ae.name, first);
}

/* --- one batch ----------------------------------------------------------- */

/* Sends one batch of DEST's due entries. Returns how many were taken,
 * or -1 when the destination is to be left alone for now. */
static int send_batch(vg_sender_t *s, const char *name)
{
    int n = 0;
    if (vg_outbox_lease(s->idx, name, vg_now_ms(), s->batch, BATCH, &n) < 0) {
        vg_log(VG_LOG_ERROR, "outbox: cannot take entries for [ae %s]: %s", name,
               vg_strerror(VG_EDB));
        return -1;
    }
    if (n == 0)
        return 0;
    dest_t d;
    if (find_dest(s, name, &d) < 0) {
        fail_unknown(s, n, &d);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        snprintf(s->paths[i], sizeof s->paths[i], "%s/%s", s->dir, s->batch[i].obj.path);
        s->items[i] =
            (vg_scu_item_t){.path = s->paths[i], .sop_uid = s->batch[i].obj.sop_uid};
    }
    vg_scu_peer_t peer = {
        .calling_ae = d.calling,
        .called_ae = d.ae.ae_title,
        .host = d.ae.host,
        .port = d.ae.port,
        .acse_timeout = d.acse_timeout,
        .dimse_timeout = d.dimse_timeout,
        .tls = d.ae.tls,
        .tls_ca_file = d.ae.tls_ca_file,
        .tls_certificate = d.cert,
        .tls_private_key = d.key,
    };
    char err[512];
    int rc = vg_scu_send(&peer, s->items, n, should_stop, s, err, sizeof err);
    if (rc < 0) {
        fail_association(s, n, &d, err);
        return -1;
    }
    int released = 0;
    for (int i = 0; i < n; i++) {
        const vg_scu_item_t *it = &s->items[i];
        if (it->outcome == VG_SCU_ACKED) {
            record_sent(s, &s->batch[i], &d, it);
        } else if (it->outcome == VG_SCU_FAILED) {
            record_failure(s, &s->batch[i], &d, it->error, 1);
        } else if (vg_outbox_release(s->idx, s->batch[i].id) == 0) {
            released++;
        } else {
            vg_log(VG_LOG_ERROR, "outbox %lld: cannot put back in the queue: %s",
                   (long long)s->batch[i].id, vg_strerror(VG_EDB));
        }
    }
    /* Entries not tried: stopping, or the association broke; the next
     * tick takes them again. */
    return released ? -1 : n;
}

/* --- the thread ---------------------------------------------------------- */

static void tick(vg_sender_t *s)
{
    char names[MAX_DESTS][64];
    int n = 0;
    if (vg_outbox_due_destinations(s->idx, vg_now_ms(), names, MAX_DESTS, &n) < 0) {
        vg_log(VG_LOG_ERROR, "outbox: cannot read due entries: %s", vg_strerror(VG_EDB));
        return;
    }
    for (int i = 0; i < n && !should_stop(s); i++) {
        if (held(s, names[i], vg_now_ms()))
            continue;
        int taken;
        do
            taken = send_batch(s, names[i]);
        while (taken == BATCH && !should_stop(s));
    }
}

static void *run(void *arg)
{
    vg_sender_t *s = arg;
    while (!should_stop(s)) {
        tick(s);
        pthread_mutex_lock(&s->lock);
        if (!s->woken && !should_stop(s)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += TICK_MS / 1000;
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        if (s->woken)
            s->n_holds = 0; /* a retry by hand, or new entries: try now */
        s->woken = 0;
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

int vg_sender_start(const vg_config_t *cfg, vg_sender_t **out, char *err, size_t errlen)
{
    *out = NULL;
    vg_sender_t *s = calloc(1, sizeof *s);
    if (!s || !(s->conf = conf_copy(cfg))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    vg_scu_init(cfg->node.log_level >= VG_LOG_DEBUG);
    snprintf(s->dir, sizeof s->dir, "%s", cfg->storage.dir);
    char db[VG_PATH_MAX + 32], why[256];
    snprintf(db, sizeof db, "%s/index.sqlite", cfg->storage.dir);
    int rc = vg_index_open(db, &s->idx, why, sizeof why);
    if (rc < 0) {
        snprintf(err, errlen, "index %s: %s", db, why);
        conf_free(s->conf);
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if ((rc = pthread_create(&s->thread, NULL, run, s)) != 0) {
        snprintf(err, errlen, "cannot start the sender thread: %s", strerror(rc));
        vg_index_close(s->idx);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        conf_free(s->conf);
        free(s);
        return -rc;
    }
    *out = s;
    return 0;
}

void vg_sender_wake(vg_sender_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->woken = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int vg_sender_set_config(vg_sender_t *s, const vg_config_t *cfg)
{
    conf_t *fresh = conf_copy(cfg), *old;
    if (!fresh)
        return -ENOMEM;
    pthread_mutex_lock(&s->lock);
    old = s->conf;
    s->conf = fresh;
    s->woken = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    conf_free(old);
    return 0;
}

void vg_sender_stop(vg_sender_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->stopping, 1);
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int vg_sender_join(vg_sender_t *s, int timeout_ms)
{
    if (!s)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    if (pthread_timedjoin_np(s->thread, NULL, &ts) != 0)
        return VG_EBUSY;
    vg_index_close(s->idx);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    conf_free(s->conf);
    free(s);
    return 0;
}
