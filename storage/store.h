/* Instance files: UID validation, path building and durable placement.
 * A file is placed by fsync of the temp file, rename into its final path
 * and fsync of the directory, so after a crash it is either whole in
 * place or absent. This module knows nothing of SQLite or DICOM. */
#ifndef VG_STORE_H
#define VG_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when UID is usable as a file name: 1..64 chars, digits and dots, no
 * empty component (so never "", ".", ".." or a leading dot). Components
 * with a leading zero are accepted: some scanners send them, and refusing
 * them would refuse real studies. 0 otherwise. */
int vg_uid_valid(const char *uid);

/* Writes "studies/STUDY/SERIES/SOP.dcm" (relative to the data directory)
 * into buf. Returns 0, VG_EUID when a UID is invalid (buf untouched), or
 * -ENAMETOOLONG. */
int vg_store_relpath(char *buf, size_t len, const char *study,
                     const char *series, const char *sop);

/* Moves TMP (a complete file in DIR/tmp) to DIR/RELPATH durably: fsyncs
 * the file, creates missing parent directories (fsyncing each parent),
 * renames over any existing file, fsyncs the final directory. Returns 0 or
 * -errno; on failure TMP is left where it was. */
int vg_store_place(const char *dir, const char *tmp, const char *relpath);

/* The parts of vg_store_place, for a caller that overlaps the two fsyncs
 * with other work: after TMP has been fsynced, creates the missing parent
 * directories (durably) and renames TMP to DIR/RELPATH; the caller must
 * then fsync the directory written to PARENT before relying on the file.
 * Returns 0 or -errno (TMP left where it was). */
int vg_store_link(const char *dir, const char *tmp, const char *relpath, char *parent,
                  size_t parentlen);

/* Creates DIR, DIR/studies and DIR/tmp when missing and empties DIR/tmp
 * (files there were never acknowledged). Returns 0 or -errno. */
int vg_store_prepare(const char *dir, int *removed_tmp);

/* Free bytes for an unprivileged writer on the filesystem of DIR. */
int vg_store_free_bytes(const char *dir, uint64_t *free_bytes);

/* fsync of a file or a directory by path; 0 or -errno. */
int vg_fsync_path(const char *path);

#ifdef __cplusplus
}
#endif

#endif
