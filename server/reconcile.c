/* Start-up reconciliation after an unclean stop: the files under
 * studies/ are the record, the index is how they are found. A file placed
 * but not yet committed when the node died was never acknowledged, but it
 * is whole (it was fsynced before its rename), so it is indexed rather
 * than thrown away. A row whose file is gone is dropped and logged. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/dcm_shim.h"
#include "server/log.h"
#include "server/receiver.h"
#include "storage/store.h"

/* nftw has no user pointer: one reconciliation runs at a time, at start. */
static struct {
    const char *dir;
    size_t dirlen;
    vg_index_t *idx;
    int indexed;
} walk;

static int visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t n = strlen(path);
    if (type != FTW_F || n < 4 || strcmp(path + n - 4, ".dcm") != 0)
        return 0;
    const char *rel = path + walk.dirlen + 1;
    vg_instance_meta_t m;
    char err[256], expect[VG_PATH_MAX];
    if (vg_dcm_read_meta(path, &m, err, sizeof err) < 0 ||
        vg_store_relpath(expect, sizeof expect, m.study_uid, m.series_uid,
                         m.sop_instance_uid) < 0 ||
        strcmp(expect, rel) != 0) {
        vg_log(VG_LOG_ERROR, "reconcile: %s is not a readable instance at its own"
               " path; left in place", rel);
        return 0;
    }
    int found = vg_index_find_instance(walk.idx, m.sop_instance_uid, NULL, 0);
    if (found == 0 &&
        vg_index_put_instance(walk.idx, &m, rel, (int64_t)sb->st_size, "",
                              (int64_t)sb->st_mtime * 1000) == 0) {
        walk.indexed++;
        vg_log(VG_LOG_WARN, "reconcile: indexed %s, stored before the last stop"
               " but not yet recorded", rel);
    }
    return 0;
}

typedef struct {
    const char *dir;
    char (*gone)[65];
    int n, cap;
} missing_t;

static int check_row(void *arg, const char *relpath, const char *sop_uid)
{
    missing_t *ms = arg;
    char abs[2 * VG_PATH_MAX];
    snprintf(abs, sizeof abs, "%s/%s", ms->dir, relpath);
    if (access(abs, F_OK) == 0 || ms->n == ms->cap)
        return 0;
    snprintf(ms->gone[ms->n++], 65, "%s", sop_uid);
    return 0;
}

int vg_receiver_reconcile(const char *dir, vg_index_t *idx, int *indexed, int *dropped)
{
    char studies[VG_PATH_MAX + 16];
    snprintf(studies, sizeof studies, "%s/studies", dir);
    walk.dir = dir;
    walk.dirlen = strlen(dir);
    walk.idx = idx;
    walk.indexed = 0;
    if (nftw(studies, visit, 32, FTW_PHYS) < 0)
        return -1;
    *indexed = walk.indexed;

    static char gone[1024][65];
    missing_t ms = {dir, gone, 0, 1024};
    *dropped = 0;
    do {
        ms.n = 0;
        if (vg_index_each_instance(idx, check_row, &ms) < 0)
            return -1;
        for (int i = 0; i < ms.n; i++) {
            vg_log(VG_LOG_ERROR, "reconcile: file of instance %s is missing; row dropped",
                   gone[i]);
            vg_index_delete_instance(idx, gone[i]);
            (*dropped)++;
        }
    } while (ms.n == ms.cap);
    return 0;
}
