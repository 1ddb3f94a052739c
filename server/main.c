/* The vigil daemon: loads the configuration, prepares storage, starts the
 * DICOM listener (its own threads), the HTTP API (on the libuv loop), the
 * analysis worker processes (server/workers_proc.h; the model runtime is
 * never linked here) and the outbox's sender (its own thread), runs
 * series/study completion on a loop timer, and handles signals:
 * SIGTERM/SIGINT drain and exit 0 (workers and sender stopped too),
 * SIGHUP re-reads the [ae] table (and the [outbox] policy). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "server/api.h"
#include "server/dcm_shim.h"
#include "server/error.h"
#include "server/http.h"
#include "server/log.h"
#include "server/receiver.h"
#include "server/sender.h"
#include "server/workers_proc.h"
#include "storage/grouping.h"
#include "storage/index.h"
#include "storage/outbox.h"
#include "storage/queue.h"
#include "storage/store.h"

#include <sqlite3.h>

#define VIGIL_VERSION "0.1.0"

typedef struct node {
    vg_config_t *cfg;
    const char *config_path;
    uv_loop_t *loop;
    vg_index_t *idx;                 /* the loop thread's connection */
    vg_receiver_t *receiver;
    vg_workers_t *workers;           /* analysis processes; NULL once stopping */
    vg_sender_t *sender;             /* the outbox's sender thread, or NULL */
    int64_t stop_by_ms;              /* when stopping: the shutdown deadline */
    vg_scp_t *scp;
    vg_http_t *http;
    vg_api_t api;
    uv_async_t stored_async;         /* an instance was committed */
    uv_async_t scp_done_async;       /* the DICOM listener ended */
    uv_timer_t grouping_timer;
    uv_timer_t shutdown_timer;
    uv_signal_t sig_term, sig_int, sig_hup;
    int stopping;
    int scp_done;
} node_t;

static void on_grouping_timer(uv_timer_t *t);

static void schedule_grouping(node_t *n, int64_t delay_ms)
{
    if (delay_ms < 50)
        delay_ms = 50;
    if (uv_is_active((uv_handle_t *)&n->grouping_timer) &&
        uv_timer_get_due_in(&n->grouping_timer) <= (uint64_t)delay_ms)
        return;
    uv_timer_start(&n->grouping_timer, on_grouping_timer, (uint64_t)delay_ms, 0);
}

static void on_grouping_timer(uv_timer_t *t)
{
    node_t *n = t->data;
    vg_grouping_result_t res;
    int64_t now = vg_now_ms(), due = -1;
    if (vg_grouping_tick(n->idx, n->cfg, now, &due, &res) < 0) {
        vg_log(VG_LOG_ERROR, "series completion failed: %s; retrying in 5 s",
               sqlite3_errmsg(vg_index_db(n->idx)));
        schedule_grouping(n, 5000);
        return;
    }
    if (res.jobs_queued)
        vg_workers_wake(n->workers);
    if (res.studies_completed)
        vg_log(VG_LOG_INFO, "%d stud%s complete", res.studies_completed,
               res.studies_completed == 1 ? "y" : "ies");
    if (due >= 0)
        schedule_grouping(n, due - now);
}

static void on_stored_async(uv_async_t *a)
{
    node_t *n = a->data;
    if (!uv_is_active((uv_handle_t *)&n->grouping_timer))
        schedule_grouping(n, (int64_t)n->cfg->storage.series_quiet_seconds * 1000);
}

/* Called from an association thread: only wakes the loop. */
static void on_stored(void *arg)
{
    uv_async_send(&((node_t *)arg)->stored_async);
}

/* The API's hook after an outbox retry. */
static void wake_sender(void *arg)
{
    vg_sender_wake(arg);
}

static void on_scp_stopped(void *arg)
{
    uv_async_send(&((node_t *)arg)->scp_done_async);
}

static void close_all(node_t *n)
{
    uv_close((uv_handle_t *)&n->stored_async, NULL);
    uv_close((uv_handle_t *)&n->scp_done_async, NULL);
    uv_close((uv_handle_t *)&n->grouping_timer, NULL);
    uv_close((uv_handle_t *)&n->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&n->sig_term, NULL);
    uv_close((uv_handle_t *)&n->sig_int, NULL);
    uv_close((uv_handle_t *)&n->sig_hup, NULL);
    vg_http_stop(n->http);
    n->http = NULL;
}

static void on_scp_done(uv_async_t *a)
{
    node_t *n = a->data;
    n->scp_done = 1;
    if (n->stopping)
        close_all(n);
    else
        vg_log(VG_LOG_ERROR, "the DICOM listener stopped unexpectedly");
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    node_t *n = t->data;
    vg_log(VG_LOG_WARN, "associations still running after %d s; exiting without them",
           n->cfg->node.shutdown_timeout);
    close_all(n);
}

static void on_term(uv_signal_t *s, int signum)
{
    node_t *n = s->data;
    if (n->stopping)
        return;
    n->stopping = 1;
    vg_log(VG_LOG_INFO, "%s: no new associations; letting running ones finish",
           strsignal(signum));
    n->api.accepting = 0;
    vg_scp_stop(n->scp);
    vg_sender_stop(n->sender);
    n->stop_by_ms = vg_now_ms() + (int64_t)n->cfg->node.shutdown_timeout * 1000;
    /* The loop runs until the workers are gone too. */
    vg_workers_stop(n->workers, n->cfg->node.shutdown_timeout);
    n->workers = NULL;
    uv_timer_start(&n->shutdown_timer, on_shutdown_timeout,
                   (uint64_t)n->cfg->node.shutdown_timeout * 1000 + 1500, 0);
}

static void on_hup(uv_signal_t *s, int signum)
{
    (void)signum;
    node_t *n = s->data;
    static char err[16384];
    vg_config_t *fresh = NULL;
    if (vg_config_load(n->config_path, &fresh, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERROR, "SIGHUP: configuration not reloaded:\n%s", err);
        return;
    }
    vg_receiver_set_aes(n->receiver, fresh);
    if (n->sender)
        vg_sender_set_config(n->sender, fresh);
    vg_log(VG_LOG_INFO, "SIGHUP: reloaded %d AE title%s from %s", fresh->n_aes,
           fresh->n_aes == 1 ? "" : "s", n->config_path);
    vg_config_destroy(fresh);
}

static int open_storage(node_t *n)
{
    const char *dir = n->cfg->storage.dir;
    int removed = 0, rc = vg_store_prepare(dir, &removed);
    if (rc < 0) {
        vg_log(VG_LOG_ERROR, "storage directory %s: %s", dir, vg_strerror(rc));
        return rc;
    }
    if (removed)
        vg_log(VG_LOG_INFO, "removed %d unacknowledged partial file%s from %s/tmp",
               removed, removed == 1 ? "" : "s", dir);
    char db[VG_PATH_MAX + 32], err[512], clean[8] = "";
    snprintf(db, sizeof db, "%s/index.sqlite", dir);
    if ((rc = vg_index_open(db, &n->idx, err, sizeof err)) < 0) {
        vg_log(VG_LOG_ERROR, "index %s: %s", db, err);
        return rc;
    }
    int first = vg_index_meta_get(n->idx, "clean_shutdown", clean, sizeof clean) ==
                VG_ENOTFOUND;
    if (!first && strcmp(clean, "1") != 0) {
        int indexed = 0, dropped = 0;
        vg_log(VG_LOG_WARN, "last stop was not clean: checking files against the index");
        if (vg_receiver_reconcile(dir, n->idx, &indexed, &dropped) == 0)
            vg_log(VG_LOG_INFO, "reconciled: %d file%s indexed, %d row%s dropped", indexed,
                   indexed == 1 ? "" : "s", dropped, dropped == 1 ? "" : "s");
    }
    int requeued = vg_queue_recover(n->idx);
    if (requeued > 0)
        vg_log(VG_LOG_INFO, "%d interrupted job%s back in the queue", requeued,
               requeued == 1 ? "" : "s");
    int resend = vg_outbox_recover(n->idx);
    if (resend > 0)
        vg_log(VG_LOG_INFO, "%d result object%s whose sending was interrupted will be "
               "sent again", resend, resend == 1 ? "" : "s");
    return vg_index_meta_set(n->idx, "clean_shutdown", "0");
}

static int start_network(node_t *n)
{
    char err[512];
    vg_config_t *c = n->cfg;
    int rc = vg_receiver_create(c, on_stored, n, &n->receiver);
    if (rc < 0)
        return rc;
    /* The listener keeps this pointer for its lifetime. */
    static char tmp_dir[VG_PATH_MAX + 8];
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tmp", c->storage.dir);
    vg_scp_options_t opt = {
        .ae_title = c->node.ae_title, .bind = c->node.bind, .port = c->node.port,
        .max_associations = c->node.max_associations,
        .acse_timeout = c->node.acse_timeout, .dimse_timeout = c->node.dimse_timeout,
        .tmp_dir = tmp_dir, .verbose = c->node.log_level >= VG_LOG_DEBUG,
    };
    rc = vg_scp_start(&opt, vg_receiver_callbacks(n->receiver), on_scp_stopped, n,
                      &n->scp, err, sizeof err);
    if (rc < 0) {
        vg_log(VG_LOG_ERROR, "%s", err);
        return rc;
    }
    n->api = (vg_api_t){.idx = n->idx, .accepting = 1, .ae_title = c->node.ae_title};
    if ((rc = vg_api_init(&n->api)) < 0) {
        vg_log(VG_LOG_ERROR, "API: cannot prepare its queries");
        return rc;
    }
    rc = vg_http_start(n->loop, c->http.bind, c->http.port, vg_api_handle, &n->api,
                       &n->http, err, sizeof err);
    if (rc < 0) {
        vg_log(VG_LOG_ERROR, "HTTP %s:%d: %s", c->http.bind, c->http.port, err);
        return rc;
    }
    vg_log(VG_LOG_INFO, "vigil %s: AE title %s on DICOM port %d, HTTP on %s:%d, data in %s",
           VIGIL_VERSION, c->node.ae_title, c->node.port, c->http.bind, c->http.port,
           c->storage.dir);
    return 0;
}

static void init_handles(node_t *n)
{
    uv_async_init(n->loop, &n->stored_async, on_stored_async);
    uv_async_init(n->loop, &n->scp_done_async, on_scp_done);
    uv_timer_init(n->loop, &n->grouping_timer);
    uv_timer_init(n->loop, &n->shutdown_timer);
    uv_signal_init(n->loop, &n->sig_term);
    uv_signal_init(n->loop, &n->sig_int);
    uv_signal_init(n->loop, &n->sig_hup);
    n->stored_async.data = n->scp_done_async.data = n;
    n->grouping_timer.data = n->shutdown_timer.data = n;
    n->sig_term.data = n->sig_int.data = n->sig_hup.data = n;
    uv_signal_start(&n->sig_term, on_term, SIGTERM);
    uv_signal_start(&n->sig_int, on_term, SIGINT);
    uv_signal_start(&n->sig_hup, on_hup, SIGHUP);
}

static int run_node(node_t *n)
{
    signal(SIGPIPE, SIG_IGN);
    n->loop = uv_default_loop();
    if (open_storage(n) < 0)
        return 1;
    init_handles(n);
    if (start_network(n) < 0) {
        n->stopping = 1;
        if (n->scp) {
            vg_scp_stop(n->scp);
            vg_scp_join(n->scp, 3000);
        }
        close_all(n);
        uv_run(n->loop, UV_RUN_DEFAULT);
        return 1;
    }
    char err[256];
    if (vg_workers_start(n->loop, n->cfg, n->idx, &n->workers, err, sizeof err) < 0)
        vg_log(VG_LOG_ERROR, "analysis workers: %s; series are queued, not analysed", err);
    if (vg_sender_start(n->cfg, &n->sender, err, sizeof err) < 0)
        vg_log(VG_LOG_ERROR, "outbox sender: %s; results are queued, not sent", err);
    n->api.wake = wake_sender;
    n->api.wake_arg = n->sender;
    /* Series left receiving by the last run fall due from their own times. */
    schedule_grouping(n, 0);
    uv_run(n->loop, UV_RUN_DEFAULT);

    int drained = n->scp_done && vg_scp_join(n->scp, 1000) == 0;
    vg_sender_stop(n->sender);
    int64_t left = n->stop_by_ms - vg_now_ms();
    /* An abandoned send stays "sending" and goes again at the next start. */
    int sender_done = vg_sender_join(n->sender, left > 1000 ? (int)left : 1000) == 0;
    vg_api_close(&n->api);
    if (drained)
        vg_index_meta_set(n->idx, "clean_shutdown", "1");
    vg_index_close(n->idx);
    vg_log(VG_LOG_INFO, "stopped%s", drained ? "" : " (associations were cut short)");
    if (!sender_done)
        vg_log(VG_LOG_WARN, "outbox: a send was still running; it goes again next start");
    if (!drained || !sender_done) {
        /* Association threads may still be inside DCMTK: leave without
         * running destructors under them. Nothing acknowledged is lost. */
        fflush(stderr);
        _exit(0);
    }
    vg_receiver_destroy(n->receiver);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil -c FILE            run the node in the foreground\n"
               "       vigil --check-config -c FILE   validate a configuration\n"
               "       vigil --print-keys     list every configuration key\n"
               "       vigil --version\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'k'},
        {"print-keys", no_argument, NULL, 'p'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'k': check = 1; break;
        case 'p': vg_config_print_keys(stdout); return 0;
        case 'V': printf("vigil %s\n", VIGIL_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!path || optind < argc) {
        usage(stderr);
        return 2;
    }
    static char err[16384];
    node_t n = {.config_path = path};
    if (vg_config_load(path, &n.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s%s", err, err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
        return 1;
    }
    if (check) {
        vg_config_destroy(n.cfg);
        return 0;
    }
    vg_log_set_level(n.cfg->node.log_level);
    int rc = run_node(&n);
    vg_config_destroy(n.cfg);
    return rc;
}
