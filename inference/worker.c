/* The single-worker loop; see worker.h. Signals: SIGTERM and SIGINT set
 * a flag that is read between jobs; SIGUSR1 only ends an idle wait. All
 * three stay blocked except inside that wait, so one that arrives while
 * the loop decides to sleep is not lost, and threads that the runtime
 * starts later inherit the block and never take them. */
#include "inference/worker.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inference/bone.h"
#include "inference/breast.h"
#include "inference/manifest.h"
#include "inference/report.h"
#include "inference/runtime.h"
#include "inference/volume.h"
#include "server/error.h"
#include "server/log.h"
#include "storage/clinical.h"
#include "storage/grouping.h"
#include "storage/index.h"
#include "storage/queue.h"
#include "storage/results.h"
#include "storage/workers.h"

#define RELOAD_SECONDS 30
#define IDLE_MS 2000

typedef struct worker {
    vg_model_cfg_t cfg;
    char device[16];
    char name[96];   /* "bone@cpu": the lease owner */
    const vg_config_t *config;
    const char *dir; /* data directory */
    pid_t parent;
    vg_index_t *idx;
    vg_manifest_t man;
    vg_model_t *model;
    vg_model_t *classifier; /* the manifest's second stage, or NULL */
    time_t next_load;
    vg_worker_state_t st; /* what the workers table shows */
} worker_t;

static volatile sig_atomic_t stop_requested;

static void on_signal(int signum)
{
    if (signum != SIGUSR1)
        stop_requested = 1;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Writes the worker's row; a failure only delays what /healthz shows. A
 * row that names another process (a newer node started a new worker
 * while this one finished its job) is left alone. */
static void publish(worker_t *wk)
{
    wk->st.updated_ms = vg_now_ms();
    if (vg_worker_state_put(wk->idx, &wk->st) == VG_EDB)
        vg_log(VG_LOG_WARN, "%s: cannot record the worker's state in the index", wk->name);
}

static void set_status(worker_t *wk, int available, const char *error)
{
    int changed = wk->st.available != available || strcmp(wk->st.error, error) != 0 ||
                  strcmp(wk->st.version, wk->man.version) != 0;
    wk->st.available = available;
    snprintf(wk->st.error, sizeof wk->st.error, "%s", error);
    snprintf(wk->st.version, sizeof wk->st.version, "%s", wk->man.version);
    if (!changed)
        return;
    publish(wk);
    if (available)
        vg_log(VG_LOG_INFO, "model %s %s loaded on %s", wk->cfg.name, wk->man.version,
               wk->device);
    else
        vg_log(VG_LOG_ERROR,
               "model %s unavailable on %s: %s (jobs wait; retrying every %d s)",
               wk->cfg.name, wk->device, error, RELOAD_SECONDS);
}

/* Loads manifest, model and the classifier the manifest names; on
 * failure of any they all stay unloaded until the next attempt,
 * RELOAD_SECONDS later. */
static void try_load(worker_t *wk)
{
    char err[512];
    if (wk->model || time(NULL) < wk->next_load)
        return;
    wk->next_load = time(NULL) + RELOAD_SECONDS;
    if (vg_manifest_load(wk->cfg.manifest, &wk->man, err, sizeof err) < 0) {
        set_status(wk, 0, err);
        return;
    }
    if (strcmp(wk->man.task, "bone_lesions") != 0 &&
        strcmp(wk->man.task, "breast_risk") != 0) {
        snprintf(err, sizeof err, "%.300s: task '%s' is not one this node runs",
                 wk->cfg.manifest, wk->man.task);
        set_status(wk, 0, err);
        return;
    }
    vg_runtime_set_threads(wk->cfg.threads);
    if (vg_model_load(wk->man.model_path, wk->device, &wk->model, err, sizeof err) < 0) {
        set_status(wk, 0, err);
        return;
    }
    if (wk->man.classifier_path[0] &&
        vg_model_load(wk->man.classifier_path, wk->device, &wk->classifier, err, sizeof err) <
            0) {
        vg_model_destroy(wk->model);
        wk->model = NULL;
        set_status(wk, 0, err);
        return;
    }
    if (strcmp(wk->man.task, "breast_risk") == 0 &&
        vg_breast_warm_up(wk->model, &wk->man, err, sizeof err) < 0) {
        vg_model_destroy(wk->model);
        wk->model = NULL;
        set_status(wk, 0, err);
        return;
    }
    set_status(wk, 1, "");
}

static void result_init(vg_result_t *r, const worker_t *wk, const vg_job_t *job)
{
    memset(r, 0, sizeof *r);
    r->job_id = job->id;
    snprintf(r->series_uid, sizeof r->series_uid, "%s", job->series_uid);
    snprintf(r->study_uid, sizeof r->study_uid, "%s", job->study_uid);
    snprintf(r->model, sizeof r->model, "%s", wk->cfg.name);
    snprintf(r->model_version, sizeof r->model_version, "%s", wk->man.version);
    r->patient_score = -1;
    r->positive = -1;
}

static void store_result(worker_t *wk, vg_result_t *r)
{
    int rc = vg_results_put(wk->idx, r, vg_now_ms());
    if (rc == VG_ENOTFOUND)
        vg_log(VG_LOG_INFO, "%s: series %s changed during analysis; the newer job will run",
               wk->name, r->series_uid);
    else if (rc < 0)
        vg_log(VG_LOG_ERROR,
               "%s: cannot store the result of series %s (job %lld retried"
               " after its lease)",
               wk->name, r->series_uid, (long long)r->job_id);
}

/* A failure that another attempt may not repeat (model, memory, I/O).
 * Returns what the queue said (VG_ENOTFOUND: the job is no longer ours). */
static int fail_job(worker_t *wk, const vg_job_t *job, vg_result_t *r, const char *err)
{
    int rc = vg_queue_fail(wk->idx, job->id, err, wk->cfg.max_attempts, vg_now_ms());
    wk->st.jobs_failed++;
    if (job->attempts < wk->cfg.max_attempts) {
        vg_log(VG_LOG_WARN, "%s: series %s attempt %d of %d failed: %s", wk->name,
               job->series_uid, job->attempts, wk->cfg.max_attempts, err);
        return rc;
    }
    vg_log(VG_LOG_ERROR, "%s: series %s failed after %d attempts: %s", wk->name,
           job->series_uid, job->attempts, err);
    snprintf(r->status, sizeof r->status, "failed");
    snprintf(r->reason, sizeof r->reason, "%s", err);
    vg_results_put_final(wk->idx, r, vg_now_ms());
    return rc;
}

/* The job's route, or NULL when it has gone from the configuration
 * since the job was queued. */
static const vg_route_cfg_t *find_route(const worker_t *wk, const vg_job_t *job)
{
    for (int i = 0; i < wk->config->n_routes; i++)
        if (strcmp(wk->config->routes[i].name, job->route) == 0)
            return &wk->config->routes[i];
    return NULL;
}

/* The destinations of the job's route (none when the route has gone
 * from the configuration since the job was queued). */
static void set_destinations(const worker_t *wk, const vg_job_t *job, vg_result_t *r)
{
    const vg_route_cfg_t *rt = find_route(wk, job);
    if (rt) {
        for (int d = 0; d < rt->n_destinations && d < VG_RESULT_DESTINATIONS_MAX; d++)
            snprintf(r->destinations[d], sizeof r->destinations[d], "%s",
                     rt->destinations[d]);
        r->n_destinations = rt->n_destinations < VG_RESULT_DESTINATIONS_MAX
                                ? rt->n_destinations
                                : VG_RESULT_DESTINATIONS_MAX;
        return;
    }
    vg_log(VG_LOG_WARN, "%s: route %s of series %s is no longer configured; results stay"
           " in the node", wk->name, job->route, job->series_uid);
}

/* Writes the breast report of R; a failure before the last attempt
 * fails the attempt (a later one delivers it), after it the result is
 * kept and the reason says what did not reach the PACS. Returns 0 or the
 * code that fails the attempt, with err filled. */
static int write_breast_report(worker_t *wk, const vg_job_t *job, vg_result_t *r,
                               const char *const *evidence, int n_evidence, char *err,
                               size_t errlen)
{
    char werr[512];
    set_destinations(wk, job, r);
    int wrc = vg_report_write_breast(wk->dir, &wk->man, evidence, n_evidence, r, werr,
                                     sizeof werr);
    if (wrc < 0 && job->attempts < wk->cfg.max_attempts) {
        snprintf(err, errlen, "cannot write the result objects: %.400s", werr);
        return wrc;
    }
    if (wrc < 0) {
        vg_log(VG_LOG_ERROR, "%s: study %s: cannot write the result objects: %s", wk->name,
               job->study_uid, werr);
        snprintf(r->reason, sizeof r->reason, "result objects not written: %.200s", werr);
    }
    return 0;
}

/* A breast job: every mammogram and ultrasound image of the route's
 * group (the study, by default), with the clinical values posted for the
 * study. Each breast with a usable image is assessed. */
static void run_breast_job(worker_t *wk, const vg_job_t *job)
{
    vg_result_t r;
    char err[512] = "";
    char **paths = NULL;
    const char **used = NULL;
    int n = 0, n_used = 0;
    vg_breast_timings_t bt = {0};
    vg_clinical_t clin;
    double t0 = seconds();
    result_init(&r, wk, job);
    /* A route removed since the job was queued: the study's mammograms
     * and ultrasound still make the group (its results stay in the node). */
    const vg_route_cfg_t *route = find_route(wk, job);
    vg_route_cfg_t gone;
    if (!route) {
        memset(&gone, 0, sizeof gone);
        snprintf(gone.name, sizeof gone.name, "%s", job->route);
        snprintf(gone.model, sizeof gone.model, "%s", wk->cfg.name);
        snprintf(gone.modality, sizeof gone.modality, "MG,US");
        snprintf(gone.group, sizeof gone.group, "study");
        route = &gone;
    }
    int rc = vg_group_files(wk->idx, wk->dir, route, job, &paths, &n);
    if (rc == VG_ENOTFOUND) /* nothing left of the group: not analysable */
        rc = 0, n = 0;
    if (rc == 0)
        rc = vg_clinical_get(wk->idx, job->study_uid, &clin);
    if (rc == 0 && !(used = malloc((size_t)(n ? n : 1) * sizeof *used)))
        rc = -ENOMEM;
    if (rc == 0)
        rc = vg_breast_analyse(wk->model, &wk->man, (const char *const *)paths, n, &clin,
                               &r, used, &n_used, &bt, err, sizeof err);
    double t1 = seconds();
    if (rc == 0 && strcmp(r.status, "done") == 0) {
        rc = write_breast_report(wk, job, &r, used, n_used, err, sizeof err);
    } else if (rc == 0) {
        vg_log(VG_LOG_INFO, "%s: study %s not analysable: %s", wk->name, job->study_uid,
               r.reason);
        /* The report says so too; it takes patient and study from the
         * group's files. Without one only the node shows it. */
        char werr[512];
        set_destinations(wk, job, &r);
        if (n > 0 && vg_report_write_breast(wk->dir, &wk->man, (const char *const *)paths,
                                            n, &r, werr, sizeof werr) < 0)
            vg_log(VG_LOG_WARN, "%s: study %s: no report of the refusal: %s", wk->name,
                   job->study_uid, werr);
    }
    free(paths);
    free(used);
    if (rc < 0) {
        vg_result_clear(&r);
        fail_job(wk, job, &r, err[0] ? err : vg_strerror(rc));
        return;
    }
    snprintf(r.timings, sizeof r.timings,
             "{\"decode_s\":%.3f,\"model_s\":%.3f,\"encode_s\":%.3f,\"total_s\":%.3f,"
             "\"images\":%d,\"skipped\":%d}",
             bt.decode_s, bt.model_s, seconds() - t1, seconds() - t0, bt.images, bt.skipped);
    for (int i = 0; i < r.n_assessments; i++)
        vg_log(VG_LOG_INFO, "%s: study %s breast %s: malignancy %.3f, BI-RADS %s (%s)",
               wk->name, job->study_uid, r.assessments[i].laterality,
               r.assessments[i].malignancy_probability, r.assessments[i].birads,
               r.assessments[i].modalities_used);
    store_result(wk, &r);
    vg_result_clear(&r);
    wk->st.jobs_done++;
}

static void run_job(worker_t *wk, const vg_job_t *job)
{
    if (strcmp(wk->man.task, "breast_risk") == 0) {
        run_breast_job(wk, job);
        return;
    }
    vg_result_t r;
    char err[512] = "";
    char **paths = NULL;
    int n = 0;
    vg_volume_t *vol = NULL;
    vg_bone_timings_t bt;
    result_init(&r, wk, job);
    double t0 = seconds();
    int rc = vg_index_series_files(wk->idx, wk->dir, job->series_uid, &paths, &n);
    if (rc == 0)
        rc = vg_volume_read((const char *const *)paths, n, &vol, err, sizeof err);
    double t1 = seconds();
    if (rc == VG_ENOTANALYSABLE || rc == VG_EPARSE) {
        free(paths);
        snprintf(r.status, sizeof r.status, "not_analysable");
        snprintf(r.reason, sizeof r.reason, "%s", err);
        vg_log(VG_LOG_INFO, "%s: series %s not analysable: %s", wk->name, job->series_uid,
               err);
        store_result(wk, &r);
        return;
    }
    if (rc == 0)
        rc = vg_bone_analyse(wk->model, wk->classifier, &wk->man, vol, &r, &bt, err,
                             sizeof err);
    double t2 = seconds();
    if (rc == 0) {
        set_destinations(wk, job, &r);
        char werr[512];
        int wrc = vg_report_write(wk->dir, vol, &wk->man, paths[0], &r, werr, sizeof werr);
        /* Objects that cannot be written (a full disk) make the attempt
         * fail, so that a later one delivers them; after the last attempt
         * the findings are still kept and shown, and the reason says what
         * did not reach the PACS. */
        if (wrc < 0 && job->attempts < wk->cfg.max_attempts) {
            snprintf(err, sizeof err, "cannot write the result objects: %.400s", werr);
            rc = wrc;
            vg_result_clear(&r);
        } else if (wrc < 0) {
            vg_log(VG_LOG_ERROR, "%s: series %s: cannot write the result objects: %s",
                   wk->name, job->series_uid, werr);
            snprintf(r.reason, sizeof r.reason, "result objects not written: %.200s", werr);
        }
    }
    free(paths);
    vg_volume_destroy(vol);
    if (rc < 0) {
        fail_job(wk, job, &r, err[0] ? err : vg_strerror(rc));
        return;
    }
    snprintf(r.timings, sizeof r.timings,
             "{\"decode_s\":%.3f,\"resample_s\":%.3f,\"model_s\":%.3f,\"post_s\":%.3f,"
             "\"encode_s\":%.3f,\"windows\":%d,\"windows_total\":%d}",
             t1 - t0, bt.resample_s, bt.model_s, bt.post_s, seconds() - t2, bt.windows,
             bt.windows_total);
    vg_log(VG_LOG_INFO, "%s: series %s: %d finding%s, score %.3f (%s) in %.1f s", wk->name,
           job->series_uid, r.n_findings, r.n_findings == 1 ? "" : "s", r.patient_score,
           r.positive ? "positive" : "negative", seconds() - t0);
    store_result(wk, &r);
    vg_result_clear(&r);
    wk->st.jobs_done++;
}

/* Lets the signals that arrived since the last wait (during a job, a
 * model load) run their handlers. */
static void take_signals(const sigset_t *open)
{
    sigset_t held;
    sigprocmask(SIG_SETMASK, open, &held);
    sigprocmask(SIG_SETMASK, &held, NULL);
}

/* Sleeps up to IDLE_MS; any of our signals ends the wait at once, also
 * one that arrived since the last take_signals (it is pending). */
static void idle(const sigset_t *open)
{
    struct timespec ts = {IDLE_MS / 1000, (IDLE_MS % 1000) * 1000000L};
    ppoll(NULL, 0, &ts, open);
}

/* Handlers for SIGTERM, SIGINT, SIGUSR1, blocked from now on. *open is
 * the mask that lets them in. */
static void setup_signals(sigset_t *open)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigset_t ours;
    sigemptyset(&ours);
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&ours, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &ours, open);
    sigdelset(open, SIGTERM);
    sigdelset(open, SIGINT);
    sigdelset(open, SIGUSR1);
}

/* Jobs that a previous process of this worker held when it died count as
 * failed attempts, so a series that crashes the runtime every time ends
 * "failed" after max_attempts instead of taking the worker down forever. */
static void fail_orphans(worker_t *wk)
{
    vg_job_t job;
    vg_result_t r;
    int n = 0;
    while (n < 64 && vg_worker_state_orphan(wk->idx, wk->name, &job) == 0) {
        result_init(&r, wk, &job);
        n++;
        if (fail_job(wk, &job, &r, "the worker process died during this analysis") < 0)
            break;
    }
    if (n)
        publish(wk);
}

/* Takes the worker's row: one that names a process still alive means
 * that process runs this worker, and two would take each other's jobs
 * for orphans. Returns 0, or VG_EBUSY with err filled. */
static int claim_row(worker_t *wk, char *err, size_t errlen)
{
    vg_worker_state_t old;
    if (vg_worker_state_get(wk->idx, wk->name, &old) < 0 || old.pid <= 0 ||
        old.pid == (int)getpid())
        return 0;
    if (kill(old.pid, 0) == 0 || errno == EPERM) {
        snprintf(err, errlen, "process %d already runs worker %s", old.pid, wk->name);
        return VG_EBUSY;
    }
    vg_worker_state_exited(wk->idx, wk->name, old.pid, vg_now_ms());
    return 0;
}

static void worker_init(worker_t *wk, const vg_worker_opts_t *o, vg_index_t *idx)
{
    memset(wk, 0, sizeof *wk);
    wk->idx = idx;
    wk->cfg = *o->model;
    snprintf(wk->device, sizeof wk->device, "%s", o->device);
    snprintf(wk->name, sizeof wk->name, "%s@%s", wk->cfg.name, wk->device);
    wk->config = o->cfg;
    wk->dir = o->cfg->storage.dir;
    wk->parent = o->parent;
    /* Counters go on from the last process of this worker. */
    if (vg_worker_state_get(wk->idx, wk->name, &wk->st) < 0)
        memset(&wk->st, 0, sizeof wk->st);
    snprintf(wk->st.name, sizeof wk->st.name, "%s", wk->name);
    snprintf(wk->st.model, sizeof wk->st.model, "%s", wk->cfg.name);
    snprintf(wk->st.device, sizeof wk->st.device, "%s", wk->device);
    wk->st.pid = (int)getpid();
    wk->st.available = 0;
    snprintf(wk->st.error, sizeof wk->st.error, "loading");
}

int vg_worker_run(const vg_worker_opts_t *o, char *err, size_t errlen)
{
    sigset_t open;
    setup_signals(&open);
    char db[VG_PATH_MAX + 32];
    snprintf(db, sizeof db, "%s/index.sqlite", o->cfg->storage.dir);
    vg_index_t *idx;
    int rc = vg_index_open(db, &idx, err, errlen);
    if (rc < 0)
        return rc;
    worker_t *wk = malloc(sizeof *wk); /* the manifest is 8 KiB and more */
    if (!wk) {
        vg_index_close(idx);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    worker_init(wk, o, idx);
    if ((rc = claim_row(wk, err, errlen)) < 0) {
        vg_index_close(idx);
        free(wk);
        return rc;
    }
    publish(wk);
    try_load(wk);
    fail_orphans(wk);
    for (;;) {
        take_signals(&open);
        if (stop_requested)
            break;
        if (wk->parent && getppid() != wk->parent) {
            vg_log(VG_LOG_WARN, "%s: the node is gone; stopping", wk->name);
            break;
        }
        try_load(wk);
        vg_job_t job;
        if (wk->model &&
            vg_queue_lease(wk->idx, wk->cfg.name, wk->name,
                           (int64_t)wk->cfg.lease_seconds * 1000, vg_now_ms(), &job) == 0) {
            run_job(wk, &job);
            malloc_trim(0); /* the heap the job grew (worker_main.c) */
            publish(wk);
            continue;
        }
        idle(&open);
    }
    vg_worker_state_exited(wk->idx, wk->name, (int)getpid(), vg_now_ms());
    vg_model_destroy(wk->classifier);
    vg_model_destroy(wk->model);
    vg_index_close(wk->idx);
    free(wk);
    return 0;
}
