/* The sender and the storage SCU against real peers: DCMTK's storescp
 * (plain and TLS, certificates made with the openssl CLI in the test's
 * directory) and the node's own listener (dcm_shim.h) where a peer must
 * reject an association or answer a chosen status. Every peer binds a
 * free port on 127.0.0.1, runs in the test's directory, and is stopped by
 * its PID (and dies with the test process if the test fails). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "server/dcm_shim.h"
#include "server/error.h"
#include "server/metrics.h"
#include "server/scu.h"
#include "server/sender.h"
#include "storage/index.h"
#include "storage/outbox.h"
#include "tests/unit/test.h"

#define MAX_OBJ 8

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A TCP port free on 127.0.0.1 right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts storescp on a free port (into *port), writing what it receives
 * to OUT (made here) and its output to LOG; EXTRA are more options, NULL
 * terminated. Returns its PID once it listens, or -1. */
static pid_t start_storescp(int *port, const char *out, const char *log,
                            const char *const *extra)
{
    const char *argv[32];
    char portstr[16];
    int n = 0;
    *port = free_port();
    snprintf(portstr, sizeof portstr, "%d", *port);
    mkdir(out, 0755);
    argv[n++] = "storescp";
    argv[n++] = "-v";
    argv[n++] = "-od";
    argv[n++] = out;
    argv[n++] = "+B"; /* write the data set as it came */
    while (extra && *extra && n < 28)
        argv[n++] = *extra++;
    argv[n++] = portstr;
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        setenv("TCP_NODELAY", "1", 1);
        FILE *f = freopen(log, "w", stdout);
        if (f)
            dup2(fileno(f), 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; pid > 0 && i < 200; i++) {
        if (listening(*port))
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        sleep_ms(25);
    }
    return -1;
}

static void stop_child(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100 && waitpid(pid, NULL, WNOHANG) == 0; i++)
        sleep_ms(20);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Lines of PATH that contain NEEDLE. */
static int count_in_file(const char *path, const char *needle)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

/* N slices of a CT series in DATA/res (relative paths in OBJ). */
static int make_objects(const char *data, int n, vg_outbox_object_t *obj)
{
    if (test_sh("/usr/bin/python3 scripts/make-ct-series --out %s/res --slices %d --size 32"
           " --seed 3 >/dev/null",
           data, n) != 0)
        return -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/res", data);
    DIR *d = opendir(dir);
    struct dirent *e;
    int k = 0;
    while (d && (e = readdir(d)) && k < n) {
        if (!strstr(e->d_name, ".dcm"))
            continue;
        char path[PATH_MAX + 300], why[256];
        vg_instance_meta_t m;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (vg_dcm_read_meta(path, &m, why, sizeof why) < 0)
            break;
        memset(&obj[k], 0, sizeof obj[k]);
        snprintf(obj[k].study_uid, sizeof obj[k].study_uid, "%.64s", m.study_uid);
        snprintf(obj[k].series_uid, sizeof obj[k].series_uid, "%.64s", m.series_uid);
        snprintf(obj[k].sop_uid, sizeof obj[k].sop_uid, "%.64s", m.sop_instance_uid);
        snprintf(obj[k].sop_class_uid, sizeof obj[k].sop_class_uid, "%.64s",
                 m.sop_class_uid);
        snprintf(obj[k].path, sizeof obj[k].path, "res/%s", e->d_name);
        k++;
    }
    if (d)
        closedir(d);
    return k == n ? 0 : -1;
}

/* Loads the configuration TEXT written to the test's directory. */
static vg_config_t *load_config(const char *text)
{
    char path[PATH_MAX], err[4096];
    snprintf(path, sizeof path, "%s/vigil.conf", test_tmpdir());
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    vg_config_t *cfg = NULL;
    if (vg_config_load(path, &cfg, err, sizeof err) < 0)
        fprintf(stderr, "%s\n", err);
    return cfg;
}

/* The node's part of every configuration: data in DIR/data, short
 * timeouts. */
static int node_config(char *buf, size_t len, int retry_initial, int retry_max,
                       int max_attempts, const char *node_extra)
{
    return snprintf(buf, len,
                    "[node]\nae_title = VIGIL\nacse_timeout = 5\ndimse_timeout = 10\n%s"
                    "[storage]\ndir = data\n"
                    "[outbox]\nretry_initial_seconds = %d\nretry_max_seconds = %d\n"
                    "max_attempts = %d\n",
                    node_extra, retry_initial, retry_max, max_attempts);
}

static int open_data(vg_index_t **idx, char *data, size_t len)
{
    char path[PATH_MAX + 32], err[256];
    snprintf(data, len, "%s/data", test_tmpdir());
    mkdir(data, 0755);
    snprintf(path, sizeof path, "%s/index.sqlite", data);
    return vg_index_open(path, idx, err, sizeof err);
}

/* Polls entry ID until PRED holds or TIMEOUT_MS passes; 0 when it held. */
static int wait_entry(vg_index_t *idx, int64_t id, int (*pred)(const vg_outbox_entry_t *),
                      int timeout_ms, vg_outbox_entry_t *e)
{
    for (int t = 0; t <= timeout_ms; t += 50) {
        if (vg_outbox_get(idx, id, e) == 0 && pred(e))
            return 0;
        sleep_ms(50);
    }
    return -1;
}

static int is_sent(const vg_outbox_entry_t *e)
{
    return strcmp(e->state, "sent") == 0;
}

static int is_failed(const vg_outbox_entry_t *e)
{
    return strcmp(e->state, "failed") == 0;
}

static int tried_once(const vg_outbox_entry_t *e)
{
    return e->attempts >= 1;
}

/* Reads PATH whole; the caller frees *buf. */
static long slurp(const char *path, unsigned char **buf)
{
    FILE *f = fopen(path, "rb");
    long n = -1;
    *buf = NULL;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (*buf = malloc((size_t)n)) &&
        fread(*buf, 1, (size_t)n, f) != (size_t)n)
        n = -1;
    if (f)
        fclose(f);
    return n;
}

/* Where a Part 10 file's data set starts: after the preamble, "DICM" and
 * the file meta group, whose length (0002,0000) says how long it is. */
static long dataset_offset(const unsigned char *b, long n)
{
    if (n < 144 || memcmp(b + 128, "DICM", 4) != 0 || b[132] != 2 || b[133] != 0 ||
        b[134] != 0 || b[135] != 0 || memcmp(b + 136, "UL", 2) != 0)
        return -1;
    long glen = b[140] | b[141] << 8 | b[142] << 16 | (long)b[143] << 24;
    return 144 + glen <= n ? 144 + glen : -1;
}

/* 1 when the data sets of A and B are the same bytes (the file meta
 * header is the receiver's own). */
static int same_dataset(const char *a, const char *b)
{
    unsigned char *x, *y;
    long nx = slurp(a, &x), ny = slurp(b, &y);
    long ox = dataset_offset(x, nx), oy = dataset_offset(y, ny);
    int same = ox > 0 && oy > 0 && nx - ox == ny - oy &&
               memcmp(x + ox, y + oy, (size_t)(nx - ox)) == 0;
    free(x);
    free(y);
    return same;
}

/* The file in DIR whose name ends with SOP_UID (storescp: "CT.<uid>"). */
static int find_received(const char *dir, const char *sop_uid, char *path, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    size_t u = strlen(sop_uid);
    while (d && !found && (e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k > u && strcmp(e->d_name + k - u, sop_uid) == 0 &&
            e->d_name[k - u - 1] == '.') {
            snprintf(path, len, "%s/%s", dir, e->d_name);
            found = 1;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* --------------------------------------------------------------- tests */

/* Three objects, all left "sending" by a "crash": recovered at start,
 * sent once, arrive bit-identical, and are not sent again after a
 * restart. */
TEST_IMPL(sender_delivers_to_storescp)
{
    char data[PATH_MAX], out[PATH_MAX + 8], log[PATH_MAX + 16], text[2048];
    vg_index_t *idx = NULL;
    vg_outbox_object_t obj[3];
    ASSERT_EQ(open_data(&idx, data, sizeof data), 0);
    ASSERT_EQ(make_objects(data, 3, obj), 0);
    snprintf(out, sizeof out, "%s/in", test_tmpdir());
    snprintf(log, sizeof log, "%s/storescp.log", test_tmpdir());
    int port;
    pid_t scp =
        start_storescp(&port, out, log, (const char *const[]){"-aet", "PACS", NULL});
    ASSERT_GT(scp, 0);

    for (int i = 0; i < 3; i++)
        ASSERT_EQ(vg_outbox_add(idx, &obj[i], "pacs", vg_now_ms()), 0);
    vg_outbox_entry_t e[3];
    int n = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", vg_now_ms(), e, 3, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(vg_outbox_recover(idx), 3); /* what the node does at start */

    size_t k = (size_t)node_config(text, sizeof text, 1, 2, 0, "");
    snprintf(
        text + k, sizeof text - k,
        "[ae pacs]\nae_title = PACS\nhost = 127.0.0.1\nport = %d\nrole = destination\n",
        port);
    vg_config_t *cfg = load_config(text);
    ASSERT(cfg != NULL);
    char err[512];
    vg_sender_t *s = NULL;
    ASSERT_EQ(vg_sender_start(cfg, &s, err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(wait_entry(idx, i + 1, is_sent, 20000, &e[0]), 0);
    ASSERT_EQ(e[0].attempts, 1);
    ASSERT_GT(e[0].sent_ms, 0);
    ASSERT_EQ((long long)vg_metric_get(outbox_sent), 3);
    ASSERT_EQ((long long)vg_metric_get(outbox_failed), 0);
    vg_sender_stop(s);
    ASSERT_EQ(vg_sender_join(s, 5000), 0);

    for (int i = 0; i < 3; i++) {
        char src[PATH_MAX * 2], got[PATH_MAX * 2];
        snprintf(src, sizeof src, "%s/%s", data, obj[i].path);
        ASSERT(find_received(out, obj[i].sop_uid, got, sizeof got));
        if (!same_dataset(src, got))
            TEST__FAIL("%s and %s differ", src, got);
    }
    ASSERT_EQ(count_in_file(log, "Received Store Request"), 3);

    /* A restart: nothing left to send, nothing sent again. */
    ASSERT_EQ(vg_outbox_recover(idx), 0);
    ASSERT_EQ(vg_sender_start(cfg, &s, err, sizeof err), 0);
    vg_sender_wake(s);
    sleep_ms(1500);
    vg_sender_stop(s);
    ASSERT_EQ(vg_sender_join(s, 5000), 0);
    ASSERT_EQ(count_in_file(log, "Received Store Request"), 3);
    int64_t c[VG_OUTBOX_NSTATES];
    ASSERT_EQ(vg_outbox_counts(idx, c), 0);
    ASSERT_EQ(c[VG_OUTBOX_SENT], 3);
    stop_child(scp);
    vg_config_destroy(cfg);
    vg_index_close(idx);
    return 0;
}

/* Nothing listening: each attempt fails with a clear error, waits its
 * backoff, and after max_attempts the entry is failed, not lost. */
TEST_IMPL(sender_destination_down)
{
    char data[PATH_MAX], text[2048];
    vg_index_t *idx = NULL;
    vg_outbox_object_t obj[1];
    ASSERT_EQ(open_data(&idx, data, sizeof data), 0);
    ASSERT_EQ(make_objects(data, 1, obj), 0);
    int port = free_port();
    ASSERT_EQ(vg_outbox_add(idx, &obj[0], "pacs", vg_now_ms()), 0);
    size_t k = (size_t)node_config(text, sizeof text, 1, 1, 3, "");
    snprintf(
        text + k, sizeof text - k,
        "[ae pacs]\nae_title = PACS\nhost = 127.0.0.1\nport = %d\nrole = destination\n",
        port);
    vg_config_t *cfg = load_config(text);
    ASSERT(cfg != NULL);
    char err[512], want[128];
    vg_sender_t *s = NULL;
    int64_t t0 = vg_now_ms();
    ASSERT_EQ(vg_sender_start(cfg, &s, err, sizeof err), 0);
    vg_outbox_entry_t e;
    ASSERT_EQ(wait_entry(idx, 1, tried_once, 10000, &e), 0);
    int64_t t1 = vg_now_ms();
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_EQ(e.attempts, 1);
    snprintf(want, sizeof want, "connection refused 127.0.0.1:%d", port);
    ASSERT_STR_CONTAINS(e.last_error, want);
    /* Due again one retry_initial_seconds after the failure. */
    ASSERT_GE(e.next_attempt_ms, t0 + 1000);
    ASSERT_LE(e.next_attempt_ms, t1 + 1000);

    ASSERT_EQ(wait_entry(idx, 1, is_failed, 15000, &e), 0);
    ASSERT_EQ(e.attempts, 3);
    ASSERT_STR_CONTAINS(e.last_error, want);
    ASSERT_GE(vg_now_ms() - t0, 2000); /* two waits of a second */
    ASSERT_EQ((long long)vg_metric_get(outbox_failed), 3);
    ASSERT_EQ((long long)vg_metric_get(outbox_sent), 0);
    vg_sender_stop(s);
    ASSERT_EQ(vg_sender_join(s, 5000), 0);
    vg_config_destroy(cfg);
    vg_index_close(idx);
    return 0;
}

/* --- the node's own listener as a peer that rejects, or answers a status */

/* The SOP instances the peer answers A700 and B000; the others 0000. */
static char fail_uid[65], warn_uid[65];

static unsigned store_status(const char *sop_uid)
{
    return strcmp(sop_uid, fail_uid) == 0   ? 0xA700
           : strcmp(sop_uid, warn_uid) == 0 ? 0xB000
                                            : 0;
}

static int always_stop(void *arg)
{
    (void)arg;
    return 1;
}

static vg_assoc_decision_t peer_check(void *ctx, const char *calling, const char *called,
                                      const char *peer)
{
    (void)ctx, (void)peer;
    if (strcmp(calling, "VIGIL") != 0)
        return VG_ASSOC_REJECT_CALLING_AE;
    return strcmp(called, "GOODPACS") == 0 ? VG_ASSOC_ACCEPT : VG_ASSOC_REJECT_CALLED_AE;
}

static void *peer_begin(void *ctx, const char *calling, const char *peer)
{
    (void)calling, (void)peer;
    return ctx;
}

static void peer_end(void *ctx, void *session)
{
    (void)ctx, (void)session;
}

static unsigned peer_admit(void *ctx, void *session, char *comment, size_t len)
{
    (void)ctx, (void)session, (void)comment, (void)len;
    return 0;
}

static void peer_file(void *ctx, void *session, const char *tmp)
{
    (void)ctx, (void)session, (void)tmp;
}

static unsigned peer_store(void *ctx, void *session, const char *tmp,
                           const vg_instance_meta_t *meta, const char *parse_error,
                           const char *affected, char *comment, size_t len)
{
    (void)ctx, (void)session, (void)meta, (void)parse_error;
    unlink(tmp);
    unsigned st = store_status(affected);
    if (st == 0xA700)
        snprintf(comment, len, "disk full");
    return st;
}

static void peer_failed(void *ctx, void *session, const char *why)
{
    (void)ctx, (void)session, (void)why;
}

static void peer_refused(void *ctx, vg_refusal_t why, const char *calling,
                         const char *called, const char *peer, const char *detail)
{
    (void)ctx, (void)why, (void)calling, (void)called, (void)peer, (void)detail;
}

static vg_scp_callbacks_t peer_cb = {
    .check = peer_check,
    .begin = peer_begin,
    .end = peer_end,
    .admit = peer_admit,
    .progress = peer_file,
    .received = peer_file,
    .store = peer_store,
    .receive_failed = peer_failed,
    .refused = peer_refused,
};

static int start_peer(vg_scp_t **scp, int *port)
{
    static char tmp[PATH_MAX];
    char err[256];
    snprintf(tmp, sizeof tmp, "%s/peer-tmp", test_tmpdir());
    mkdir(tmp, 0755);
    *port = free_port();
    vg_scp_options_t opt = {.ae_title = "GOODPACS",
                            .bind = "127.0.0.1",
                            .port = *port,
                            .max_associations = 4,
                            .acse_timeout = 5,
                            .dimse_timeout = 10,
                            .tmp_dir = tmp};
    peer_cb.ctx = &peer_cb;
    int rc = vg_scp_start(&opt, &peer_cb, NULL, NULL, scp, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "peer: %s\n", err);
    return rc;
}

/* The destination does not know the called AE title: a failed attempt
 * whose error says so. */
TEST_IMPL(sender_association_rejected)
{
    char data[PATH_MAX], text[2048];
    vg_index_t *idx = NULL;
    vg_outbox_object_t obj[1];
    ASSERT_EQ(open_data(&idx, data, sizeof data), 0);
    ASSERT_EQ(make_objects(data, 1, obj), 0);
    vg_scp_t *scp = NULL;
    int port;
    ASSERT_EQ(start_peer(&scp, &port), 0);
    ASSERT_EQ(vg_outbox_add(idx, &obj[0], "pacs", vg_now_ms()), 0);
    size_t k = (size_t)node_config(text, sizeof text, 60, 600, 0, "");
    snprintf(text + k, sizeof text - k,
             "[ae pacs]\nae_title = WRONGPACS\nhost = 127.0.0.1\nport = %d\n"
             "role = destination\n",
             port);
    vg_config_t *cfg = load_config(text);
    ASSERT(cfg != NULL);
    char err[512], want[160];
    vg_sender_t *s = NULL;
    ASSERT_EQ(vg_sender_start(cfg, &s, err, sizeof err), 0);
    vg_outbox_entry_t e;
    ASSERT_EQ(wait_entry(idx, 1, tried_once, 10000, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    snprintf(want, sizeof want,
             "association rejected by 127.0.0.1:%d: called AE title "
             "\"WRONGPACS\" not recognised",
             port);
    ASSERT_STR_CONTAINS(e.last_error, want);
    ASSERT_GE(e.next_attempt_ms, vg_now_ms() + 50000); /* 60 s backoff */
    vg_sender_stop(s);
    ASSERT_EQ(vg_sender_join(s, 5000), 0);
    vg_scp_stop(scp);
    ASSERT_EQ(vg_scp_join(scp, 5000), 0);
    vg_config_destroy(cfg);
    vg_index_close(idx);
    return 0;
}

/* Per-file outcomes in one association: a failure status with its
 * comment, a warning that still counts as stored, success, and a file
 * that cannot be read; then a calling AE title the peer refuses. */
TEST_IMPL(scu_statuses_per_file)
{
    char data[PATH_MAX], paths[4][PATH_MAX * 2], err[512], want[160];
    vg_index_t *idx = NULL;
    vg_outbox_object_t obj[3];
    ASSERT_EQ(open_data(&idx, data, sizeof data), 0);
    ASSERT_EQ(make_objects(data, 3, obj), 0);
    vg_scp_t *scp = NULL;
    int port;
    ASSERT_EQ(start_peer(&scp, &port), 0);
    vg_scu_init(0);
    vg_scu_item_t items[4];
    memset(items, 0, sizeof items);
    snprintf(fail_uid, sizeof fail_uid, "%s", obj[0].sop_uid);
    snprintf(warn_uid, sizeof warn_uid, "%s", obj[1].sop_uid);
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", data, obj[i].path);
        items[i].path = paths[i];
        items[i].sop_uid = obj[i].sop_uid;
    }
    snprintf(paths[3], sizeof paths[3], "%s/missing.dcm", data);
    items[3].path = paths[3];
    vg_scu_peer_t peer = {.calling_ae = "VIGIL",
                          .called_ae = "GOODPACS",
                          .host = "127.0.0.1",
                          .port = port,
                          .acse_timeout = 5,
                          .dimse_timeout = 10};
    ASSERT_EQ(vg_scu_send(&peer, items, 4, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(items[0].outcome, VG_SCU_FAILED);
    ASSERT_EQ(items[0].status, 0xA700);
    ASSERT_STR_EQ(items[0].error, "status 0xA700 out of resources: disk full");
    ASSERT_EQ(items[1].outcome, VG_SCU_ACKED);
    ASSERT_EQ(items[1].status, 0xB000);
    ASSERT_STR_CONTAINS(items[1].error, "warning 0xB000");
    ASSERT_EQ(items[2].outcome, VG_SCU_ACKED);
    ASSERT_EQ(items[2].status, 0);
    ASSERT_STR_EQ(items[2].error, "");
    ASSERT_EQ(items[3].outcome, VG_SCU_FAILED);
    ASSERT_EQ(items[3].status, -1);
    ASSERT_STR_CONTAINS(items[3].error, "cannot read");

    /* A file that holds another SOP instance than the one expected. */
    items[0].sop_uid = "1.2.3.4";
    ASSERT_EQ(vg_scu_send(&peer, items, 1, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(items[0].outcome, VG_SCU_FAILED);
    ASSERT_STR_CONTAINS(items[0].error, "not 1.2.3.4");

    /* Stopped before the first file: nothing sent, association released. */
    items[0].sop_uid = obj[2].sop_uid;
    items[0].path = paths[2];
    ASSERT_EQ(vg_scu_send(&peer, items, 1, always_stop, NULL, err, sizeof err), 0);
    ASSERT_EQ(items[0].outcome, VG_SCU_NOT_SENT);

    peer.calling_ae = "STRANGER";
    ASSERT_LT(vg_scu_send(&peer, items, 1, NULL, NULL, err, sizeof err), 0);
    snprintf(want, sizeof want,
             "association rejected by 127.0.0.1:%d: calling AE title "
             "\"STRANGER\" not recognised",
             port);
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(items[0].outcome, VG_SCU_NOT_SENT);
    vg_scp_stop(scp);
    ASSERT_EQ(vg_scp_join(scp, 5000), 0);
    vg_index_close(idx);
    return 0;
}

/* --- TLS --------------------------------------------------------------- */

/* A CA, a server certificate and a client certificate it signed, and an
 * unrelated CA, in DIR. */
static int make_certs(const char *dir)
{
    return test_sh("cd %s && exec >openssl.log 2>&1 &&"
              " openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt"
              "  -days 2 -subj /CN=Vigil-Test-CA &&"
              " openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt"
              "  -days 2 -subj /CN=Other-CA &&"
              " for n in server node; do"
              "  openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr"
              "   -subj /CN=127.0.0.1 &&"
              "  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
              "   -out $n.crt -days 2 || exit 1;"
              " done",
              dir);
}

TEST_IMPL(sender_tls_verifies_the_destination)
{
    char data[PATH_MAX], out[PATH_MAX + 8], log[PATH_MAX + 16], text[4096];
    char key[PATH_MAX + 16], crt[PATH_MAX + 16], ca[PATH_MAX + 16];
    const char *dir = test_tmpdir();
    vg_index_t *idx = NULL;
    vg_outbox_object_t obj[1];
    ASSERT_EQ(make_certs(dir), 0);
    ASSERT_EQ(open_data(&idx, data, sizeof data), 0);
    ASSERT_EQ(make_objects(data, 1, obj), 0);
    snprintf(out, sizeof out, "%s/in", dir);
    snprintf(log, sizeof log, "%s/storescp.log", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(crt, sizeof crt, "%s/server.crt", dir);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    /* storescp requires a client certificate by default (-rc). */
    int port;
    pid_t scp = start_storescp(
        &port, out, log, (const char *const[]){"+tls", key, crt, "-pw", "+cf", ca, NULL});
    ASSERT_GT(scp, 0);

    ASSERT_EQ(vg_outbox_add(idx, &obj[0], "secure", vg_now_ms()), 0);
    ASSERT_EQ(vg_outbox_add(idx, &obj[0], "impostor", vg_now_ms()), 0);
    ASSERT_EQ(vg_outbox_add(idx, &obj[0], "plain", vg_now_ms()), 0);
    char ident[2 * PATH_MAX + 64];
    snprintf(ident, sizeof ident,
             "tls_certificate = %s/node.crt\ntls_private_key = %s/node.key\n", dir, dir);
    size_t k = (size_t)node_config(text, sizeof text, 60, 600, 0, ident);
    /* The right CA; one that did not sign the server's certificate; no TLS. */
    const char *ae[3][2] = {{"secure", "tls = yes\ntls_ca_file = ca.crt\n"},
                            {"impostor", "tls = yes\ntls_ca_file = other.crt\n"},
                            {"plain", "tls = no\n"}};
    for (int i = 0; i < 3; i++)
        k += (size_t)snprintf(text + k, sizeof text - k,
                              "[ae %s]\nae_title = SCP%d\nhost = 127.0.0.1\nport = %d\n"
                              "role = destination\n%s",
                              ae[i][0], i, port, ae[i][1]);
    vg_config_t *cfg = load_config(text);
    ASSERT(cfg != NULL);
    char err[512];
    vg_sender_t *s = NULL;
    ASSERT_EQ(vg_sender_start(cfg, &s, err, sizeof err), 0);
    vg_outbox_entry_t e;
    ASSERT_EQ(wait_entry(idx, 1, is_sent, 20000, &e), 0);
    ASSERT_STR_EQ(e.destination, "secure");
    ASSERT_EQ(wait_entry(idx, 2, tried_once, 20000, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    char want[160];
    snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%d failed: ", port);
    ASSERT_STR_CONTAINS(e.last_error, want);
    ASSERT_STR_CONTAINS(e.last_error, "certificate verify failed");
    ASSERT_EQ(wait_entry(idx, 3, tried_once, 20000, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT(e.last_error[0] != '\0');
    vg_sender_stop(s);
    ASSERT_EQ(vg_sender_join(s, 5000), 0);

    char src[PATH_MAX * 2], got[PATH_MAX * 2];
    snprintf(src, sizeof src, "%s/%s", data, obj[0].path);
    ASSERT(find_received(out, obj[0].sop_uid, got, sizeof got));
    ASSERT(same_dataset(src, got));
    ASSERT_EQ(count_in_file(log, "Received Store Request"), 1);
    stop_child(scp);
    vg_config_destroy(cfg);
    vg_index_close(idx);
    return 0;
}
