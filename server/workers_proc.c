/* Worker processes on the libuv loop; see workers_proc.h. SIGUSR1 goes
 * only to a worker whose row in the workers table names its pid: the
 * worker writes it after installing its handlers, and SIGUSR1 before
 * that would kill it. */
#include "server/workers_proc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/error.h"
#include "server/log.h"
#include "storage/workers.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000
#define STEADY_MS 60000 /* a process that ran this long resets the backoff */

extern char **environ;

typedef struct child {
    vg_workers_t *set;
    uv_process_t proc;
    uv_timer_t restart;
    char model[VG_NAME_MAX];
    char device[16];
    char name[96];       /* model@device, as the worker calls itself */
    int pid;             /* 0 while no process runs */
    int proc_open;       /* proc is initialised and not yet closed */
    int ready;           /* its SIGUSR1 handler is in place */
    uint64_t started;    /* uv_now() at the spawn */
    uint64_t delay_ms;   /* before the restart now pending */
    uint64_t backoff_ms; /* the delay after the next exit */
} child_t;

struct vg_workers {
    uv_loop_t *loop;
    vg_index_t *idx;
    char exe[VG_PATH_MAX]; /* .../vigil-worker */
    char config[VG_PATH_MAX];
    char pid_env[32]; /* VIGIL_NODE_PID=... */
    char **env;       /* environ plus pid_env; strings not owned */
    uv_timer_t kill_timer;
    int stopping;
    int open_handles; /* handles not yet closed */
    child_t *c;
    int n;
};

static void spawn(child_t *c);

static void release(vg_workers_t *w)
{
    free(w->env);
    free(w->c);
    free(w);
}

static void handle_closed(vg_workers_t *w)
{
    if (--w->open_handles == 0)
        release(w);
}

static void on_kill_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_restart_closed(uv_handle_t *h)
{
    handle_closed(((child_t *)h->data)->set);
}

/* Once stopping and no process is left, closes the timers; the last
 * close frees W. */
static void finish_if_done(vg_workers_t *w)
{
    if (!w->stopping)
        return;
    for (int i = 0; i < w->n; i++)
        if (w->c[i].proc_open)
            return;
    uv_close((uv_handle_t *)&w->kill_timer, on_kill_timer_closed);
    for (int i = 0; i < w->n; i++)
        uv_close((uv_handle_t *)&w->c[i].restart, on_restart_closed);
}

static void on_restart_timer(uv_timer_t *t)
{
    child_t *c = t->data;
    spawn(c);
}

static void on_proc_closed(uv_handle_t *h)
{
    child_t *c = h->data;
    vg_workers_t *w = c->set;
    c->proc_open = 0;
    if (w->stopping) {
        finish_if_done(w);
        return;
    }
    uv_timer_start(&c->restart, on_restart_timer, c->delay_ms, 0);
}

/* Sets the delay of the restart to come from how long the process ran,
 * and doubles the one after it. */
static void set_delay(child_t *c)
{
    uint64_t ran = uv_now(c->set->loop) - c->started;
    if (ran >= STEADY_MS)
        c->backoff_ms = BACKOFF_FIRST_MS;
    c->delay_ms = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal)
{
    child_t *c = p->data;
    vg_workers_t *w = c->set;
    char how[96];
    if (term_signal)
        snprintf(how, sizeof how, "was killed by signal %d (%s)", term_signal,
                 strsignal(term_signal));
    else
        snprintf(how, sizeof how, "exited with status %lld", (long long)status);
    if (vg_worker_state_exited(w->idx, c->name, c->pid, vg_now_ms()) < 0)
        vg_log(VG_LOG_WARN, "worker %s: cannot record its exit in the index", c->name);
    if (w->stopping) {
        vg_log(VG_LOG_INFO, "worker %s (pid %d) %s", c->name, c->pid, how);
    } else {
        set_delay(c);
        vg_log(VG_LOG_ERROR, "worker %s (pid %d) %s; restarting in %llu s", c->name, c->pid,
               how, (unsigned long long)(c->delay_ms / 1000));
    }
    c->pid = 0;
    c->ready = 0;
    uv_close((uv_handle_t *)p, on_proc_closed);
}

static void spawn(child_t *c)
{
    vg_workers_t *w = c->set;
    char *args[] = {w->exe,   "-c",       w->config, "--model",
                    c->model, "--device", c->device, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = STDOUT_FILENO},
        {.flags = UV_INHERIT_FD, .data.fd = STDERR_FILENO},
    };
    uv_process_options_t o = {
        .exit_cb = on_child_exit,
        .file = w->exe,
        .args = args,
        .env = w->env,
        .stdio_count = 3,
        .stdio = stdio,
    };
    c->proc.data = c;
    c->started = uv_now(w->loop);
    c->proc_open = 1;
    int rc = uv_spawn(w->loop, &c->proc, &o);
    if (rc == 0) {
        c->pid = c->proc.pid;
        vg_log(VG_LOG_INFO, "worker %s started (pid %d)", c->name, c->pid);
        return;
    }
    set_delay(c);
    vg_log(VG_LOG_ERROR, "worker %s: cannot start %s: %s; retrying in %llu s", c->name,
           w->exe, uv_strerror(rc), (unsigned long long)(c->delay_ms / 1000));
    /* A handle that failed to spawn is still initialised: close it. */
    uv_close((uv_handle_t *)&c->proc, on_proc_closed);
}

/* The worker binary beside the running one. */
static int worker_path(char *out, size_t len, char *err, size_t errlen)
{
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) {
        snprintf(err, errlen, "/proc/self/exe: %s", strerror(errno));
        return -errno;
    }
    self[k] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(out, len, "%s/vigil-worker", slash ? self : ".") >= len) {
        snprintf(err, errlen, "path of vigil-worker too long");
        return VG_ETOOBIG;
    }
    if (access(out, X_OK) < 0)
        vg_log(VG_LOG_ERROR, "%s: %s; series are queued, not analysed", out,
               strerror(errno));
    return 0;
}

/* environ plus VIGIL_NODE_PID (replacing one inherited). */
static int make_env(vg_workers_t *w)
{
    size_t n = 0;
    while (environ[n])
        n++;
    w->env = calloc(n + 2, sizeof *w->env);
    if (!w->env)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "VIGIL_NODE_PID=", 15) != 0)
            w->env[k++] = environ[i];
    snprintf(w->pid_env, sizeof w->pid_env, "VIGIL_NODE_PID=%d", (int)getpid());
    w->env[k] = w->pid_env;
    return 0;
}

/* Rows for every configured worker, so that /healthz lists each from the
 * start; those of the last run are gone. */
static void reset_rows(vg_workers_t *w)
{
    int rc = vg_worker_state_clear(w->idx);
    for (int i = 0; rc == 0 && i < w->n; i++) {
        vg_worker_state_t ws = {0};
        snprintf(ws.name, sizeof ws.name, "%s", w->c[i].name);
        snprintf(ws.model, sizeof ws.model, "%s", w->c[i].model);
        snprintf(ws.device, sizeof ws.device, "%s", w->c[i].device);
        snprintf(ws.error, sizeof ws.error, "starting");
        ws.updated_ms = vg_now_ms();
        rc = vg_worker_state_put(w->idx, &ws);
    }
    if (rc < 0)
        vg_log(VG_LOG_WARN, "workers: cannot reset their rows in the index");
}

static int create(uv_loop_t *loop, const vg_config_t *cfg, vg_index_t *idx,
                  vg_workers_t **out, char *err, size_t errlen)
{
    int total = 0;
    for (int m = 0; m < cfg->n_models; m++)
        total += cfg->models[m].n_devices;
    vg_workers_t *w = calloc(1, sizeof *w);
    if (!w || !(w->c = calloc(total ? (size_t)total : 1, sizeof *w->c)) ||
        make_env(w) < 0) {
        if (w)
            release(w);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->loop = loop;
    w->idx = idx;
    snprintf(w->config, sizeof w->config, "%s", cfg->path);
    int rc = worker_path(w->exe, sizeof w->exe, err, errlen);
    if (rc < 0) {
        release(w);
        return rc;
    }
    for (int m = 0; m < cfg->n_models; m++)
        for (int d = 0; d < cfg->models[m].n_devices; d++) {
            child_t *c = &w->c[w->n++];
            c->set = w;
            snprintf(c->model, sizeof c->model, "%s", cfg->models[m].name);
            snprintf(c->device, sizeof c->device, "%s", cfg->models[m].devices[d]);
            snprintf(c->name, sizeof c->name, "%s@%s", c->model, c->device);
            c->backoff_ms = BACKOFF_FIRST_MS;
        }
    *out = w;
    return 0;
}

int vg_workers_start(uv_loop_t *loop, const vg_config_t *cfg, vg_index_t *idx,
                     vg_workers_t **out, char *err, size_t errlen)
{
    vg_workers_t *w;
    int rc = create(loop, cfg, idx, &w, err, errlen);
    if (rc < 0)
        return rc;
    reset_rows(w);
    uv_timer_init(loop, &w->kill_timer);
    w->kill_timer.data = w;
    w->open_handles = 1;
    for (int i = 0; i < w->n; i++) {
        uv_timer_init(loop, &w->c[i].restart);
        w->c[i].restart.data = &w->c[i];
        w->open_handles++;
    }
    for (int i = 0; i < w->n; i++)
        spawn(&w->c[i]);
    *out = w;
    return 0;
}

void vg_workers_wake(vg_workers_t *w)
{
    if (!w || w->stopping)
        return;
    for (int i = 0; i < w->n; i++) {
        child_t *c = &w->c[i];
        vg_worker_state_t ws;
        if (!c->pid)
            continue;
        if (!c->ready)
            c->ready = vg_worker_state_get(w->idx, c->name, &ws) == 0 && ws.pid == c->pid;
        if (c->ready)
            uv_process_kill(&c->proc, SIGUSR1);
    }
}

int vg_workers_running(const vg_workers_t *w)
{
    int k = 0;
    for (int i = 0; w && i < w->n; i++)
        k += w->c[i].pid != 0;
    return k;
}

static void on_kill_timer(uv_timer_t *t)
{
    vg_workers_t *w = t->data;
    for (int i = 0; i < w->n; i++)
        if (w->c[i].pid) {
            vg_log(VG_LOG_WARN, "worker %s (pid %d) still busy; killing it", w->c[i].name,
                   w->c[i].pid);
            uv_process_kill(&w->c[i].proc, SIGKILL);
        }
}

void vg_workers_stop(vg_workers_t *w, int timeout_s)
{
    if (!w || w->stopping)
        return;
    w->stopping = 1;
    int busy = 0;
    for (int i = 0; i < w->n; i++) {
        child_t *c = &w->c[i];
        uv_timer_stop(&c->restart);
        if (c->pid) {
            uv_process_kill(&c->proc, SIGTERM);
            busy++;
        }
    }
    if (busy)
        uv_timer_start(&w->kill_timer, on_kill_timer, (uint64_t)timeout_s * 1000, 0);
    finish_if_done(w);
}
