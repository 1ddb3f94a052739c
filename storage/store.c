/* Instance files on disk; see store.h. */
#include "storage/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "server/error.h"

int vg_uid_valid(const char *uid)
{
    size_t n = uid ? strlen(uid) : 0;
    if (n == 0 || n > 64)
        return 0;
    int comp_len = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = uid[i];
        if (c == '.' || c == '\0') {
            if (comp_len == 0)
                return 0; /* empty component: leading/trailing/double dot */
            comp_len = 0;
            continue;
        }
        if (c < '0' || c > '9')
            return 0;
        comp_len++;
    }
    return 1;
}

int vg_store_relpath(char *buf, size_t len, const char *study,
                     const char *series, const char *sop)
{
    if (!vg_uid_valid(study) || !vg_uid_valid(series) || !vg_uid_valid(sop))
        return VG_EUID;
    int n = snprintf(buf, len, "studies/%s/%s/%s.dcm", study, series, sop);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

int vg_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir that makes the new entry durable by fsyncing the parent. */
static int mkdir_durable(const char *path, const char *parent)
{
    if (mkdir(path, 0755) == 0)
        return vg_fsync_path(parent);
    return errno == EEXIST ? 0 : -errno;
}

int vg_store_link(const char *dir, const char *tmp, const char *relpath, char *parent,
                  size_t parentlen)
{
    char final[4096], series[4096], study[4096], studies[4096];
    if (snprintf(final, sizeof final, "%s/%s", dir, relpath) >= (int)sizeof final)
        return -ENAMETOOLONG;
    snprintf(series, sizeof series, "%s", final);
    *strrchr(series, '/') = '\0';              /* .../SERIES */
    snprintf(study, sizeof study, "%s", series);
    *strrchr(study, '/') = '\0';               /* .../STUDY */
    snprintf(studies, sizeof studies, "%s", study);
    *strrchr(studies, '/') = '\0';             /* DIR/studies */
    int rc;
    if (access(series, F_OK) != 0) {
        if ((rc = mkdir_durable(study, studies)) < 0 || (rc = mkdir_durable(series, study)) < 0)
            return rc;
    }
    if (rename(tmp, final) < 0)
        return -errno;
    snprintf(parent, parentlen, "%s", series);
    return 0;
}

int vg_store_place(const char *dir, const char *tmp, const char *relpath)
{
    char parent[4096];
    int rc = vg_fsync_path(tmp);
    if (rc == 0)
        rc = vg_store_link(dir, tmp, relpath, parent, sizeof parent);
    return rc < 0 ? rc : vg_fsync_path(parent);
}

int vg_store_prepare(const char *dir, int *removed_tmp)
{
    char path[4096];
    *removed_tmp = 0;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    snprintf(path, sizeof path, "%s/studies", dir);
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    snprintf(path, sizeof path, "%s/tmp", dir);
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char f[4096 + 256];
        snprintf(f, sizeof f, "%s/%s", path, e->d_name);
        if (unlink(f) == 0)
            (*removed_tmp)++;
    }
    closedir(d);
    return 0;
}

int vg_store_free_bytes(const char *dir, uint64_t *free_bytes)
{
    struct statvfs sv;
    if (statvfs(dir, &sv) < 0)
        return -errno;
    *free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
}
