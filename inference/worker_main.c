/* vigil-worker: one analysis worker process (inference/worker.h) for one
 * model on one device. The node starts one per (model, device) of its
 * configuration, restarts it when it exits, and stops it with SIGTERM;
 * this is the only binary that links the model runtime. It is not meant
 * to be started by hand beside a running node: two processes of the same
 * worker would take each other's jobs for orphans. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "config/config.h"
#include "inference/runtime.h"
#include "inference/analyse.h"
#include "inference/worker.h"
#include "server/error.h"
#include "server/log.h"

/* Descriptors the node had open without O_CLOEXEC (DICOM connections
 * accepted by DCMTK) must not stay open in a process that may outlive
 * them. */
static void close_inherited(void)
{
    if (close_range(3, ~0U, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        close((int)fd);
}

/* The process that started us: the node passes its pid, so that a node
 * that died before PR_SET_PDEATHSIG took effect is noticed too. */
static pid_t parent_pid(void)
{
    const char *s = getenv("VIGIL_NODE_PID");
    long v = s ? strtol(s, NULL, 10) : 0;
    return v > 1 ? (pid_t)v : getppid();
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-worker -c FILE --model NAME --device DEV\n"
               "       runs the analysis worker for [model NAME] on DEV (cpu, cuda:N)\n"
               "       vigil-worker --analyse DIR --manifest FILE [--device DEV] [--threads N]\n"
               "                    [--clinical FILE.json]\n"
               "       analyses the DICOM series in DIR once and prints the result as JSON;\n"
               "       for a breast risk model DIR holds one breast group (MG and US files)\n"
               "       and --clinical gives values as the API takes them\n");
}

static int device_configured(const vg_model_cfg_t *m, const char *device)
{
    for (int i = 0; i < m->n_devices; i++)
        if (strcmp(m->devices[i], device) == 0)
            return 1;
    return 0;
}

/* libtorch allocates every layer's activations afresh on each forward and
 * frees them after; a 3D segmentation's are tens of MB, above glibc's
 * largest automatic mmap threshold (32 MB), so each became a new mapping
 * whose pages the kernel faulted in and zeroed again, and the freed heap
 * was trimmed back to the system: 9 of 16 s were system time on a
 * 512x512x300 series. Kept on the heap, the model step takes 7 s instead
 * of 13 s, for about 200 MB more at the peak. The worker trims the heap
 * once after each job (worker.c), so an idle worker does not keep it. */
static void keep_tensors_on_heap(void)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int main(int argc, char **argv)
{
    pid_t parent = parent_pid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        return 0;
    close_inherited();
    signal(SIGPIPE, SIG_IGN);
    keep_tensors_on_heap();

    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"model", required_argument, NULL, 'm'},
        {"device", required_argument, NULL, 'd'},
        {"analyse", required_argument, NULL, 'a'},
        {"manifest", required_argument, NULL, 'M'},
        {"threads", required_argument, NULL, 't'},
        {"clinical", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *model = NULL, *device = NULL, *analyse = NULL, *manifest = NULL,
               *clinical = NULL;
    int opt, threads = 2;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'm': model = optarg; break;
        case 'd': device = optarg; break;
        case 'a': analyse = optarg; break;
        case 'M': manifest = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'C': clinical = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (analyse && manifest && optind == argc) {
        int rc = vg_analyse_dir_clinical(analyse, manifest, clinical, device ? device : "cpu",
                                         threads, stdout);
        fflush(stdout);
        _exit(rc);
    }
    if (!path || !model || !device || optind < argc) {
        usage(stderr);
        return 2;
    }
    static char err[16384];
    vg_config_t *cfg = NULL;
    if (vg_config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s%s", err, err[0] && err[strlen(err) - 1] == '\n' ? "" : "\n");
        return 1;
    }
    vg_log_set_level(cfg->node.log_level);
    const vg_model_cfg_t *m = vg_config_find_model(cfg, model);
    int rc = 1;
    if (!m)
        vg_log(VG_LOG_ERROR, "worker: %s has no [model %s] section", path, model);
    else if (!device_configured(m, device))
        vg_log(VG_LOG_ERROR, "worker: [model %s] does not list device %s", model, device);
    if (!m || !device_configured(m, device))
        goto out;
    vg_log(VG_LOG_INFO, "worker %s@%s: pid %d, %s", model, device, (int)getpid(),
           vg_runtime_name());
    vg_worker_opts_t o = {.cfg = cfg, .model = m, .device = device, .parent = parent};
    if (vg_worker_run(&o, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERROR, "worker %s@%s: %s", model, device, err);
        goto out;
    }
    vg_log(VG_LOG_INFO, "worker %s@%s stopped", model, device);
    rc = 0;
out:
    vg_config_destroy(cfg);
    /* Everything is in the index; the runtime's static destructors (CUDA's
     * among them) only cost time at exit, or worse. */
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
}
