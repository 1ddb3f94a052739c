/* fsync on a helper thread; see syncer.h. */
#include "storage/syncer.h"

#include "storage/store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct vg_syncer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char path[4096];
    int pending;                /* a request is queued or running */
    int writeback;              /* ... and it is only a write-back hint */
    int busy;                   /* an fsync is not yet waited for */
    int result;
    int quit;
};

/* Starts the kernel's write-back of PATH's dirty pages without waiting
 * for it; the fsync that follows then has little left to do. */
static int start_writeback(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    close(fd);
    return 0;
}

static void *run(void *arg)
{
    vg_syncer_t *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->pending && !s->quit)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->pending && s->quit)
            break;
        int hint = s->writeback;
        pthread_mutex_unlock(&s->lock);
        int rc = hint ? start_writeback(s->path) : vg_fsync_path(s->path);
        pthread_mutex_lock(&s->lock);
        if (!hint)
            s->result = rc;
        s->pending = 0;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int vg_syncer_create(vg_syncer_t **out)
{
    vg_syncer_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rc = pthread_create(&s->thread, NULL, run, s);
    if (rc != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        return -rc;
    }
    *out = s;
    return 0;
}

void vg_syncer_destroy(vg_syncer_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->quit = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

void vg_syncer_writeback(vg_syncer_t *s, const char *path)
{
    pthread_mutex_lock(&s->lock);
    if (!s->pending) { /* a hint already under way will do */
        snprintf(s->path, sizeof s->path, "%s", path);
        s->pending = 1;
        s->writeback = 1;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

void vg_syncer_start(vg_syncer_t *s, const char *path)
{
    pthread_mutex_lock(&s->lock);
    while (s->pending) /* a write-back hint still running */
        pthread_cond_wait(&s->cond, &s->lock);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->pending = 1;
    s->writeback = 0;
    s->busy = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int vg_syncer_wait(vg_syncer_t *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->pending)
        pthread_cond_wait(&s->cond, &s->lock);
    int rc = s->busy ? s->result : 0;
    s->busy = 0;
    pthread_mutex_unlock(&s->lock);
    return rc;
}
