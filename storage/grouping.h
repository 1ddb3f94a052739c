/* Series and study completion: a series is complete once no instance has
 * arrived for series_quiet_seconds, a study once all its series are
 * complete and none has arrived for study_quiet_seconds. A completed
 * series is matched against the routes: each route that takes it gets a
 * job; otherwise the series is marked skipped with the reason. A route
 * grouped by study, accession or patient (vg_route_cfg_t.group) gets no
 * job per series: the series is marked queued, and when its study
 * completes, each such route that takes one of the study's series gets
 * one job whose series_uid and study_uid are the study's UID. State
 * lives in the index, so completion survives a restart. The caller (the
 * loop's timer) decides when to tick. */
#ifndef VG_GROUPING_H
#define VG_GROUPING_H

#include <stdint.h>

#include "config/config.h"
#include "storage/index.h"

typedef struct vg_grouping_result {
    int series_completed;
    int studies_completed;
    int jobs_queued;
    int series_skipped;
} vg_grouping_result_t;

/* Completes whatever is due at NOW_MS. *next_due_ms is when the next
 * series or study falls due (-1 when nothing is receiving). Returns 0 or
 * VG_EDB; a series whose transaction failed stays receiving. */
int vg_grouping_tick(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                     int64_t *next_due_ms, vg_grouping_result_t *res);

/* Why ROUTE does not take a series with these properties: writes the
 * reason and returns 0, or returns 1 (taken) with why untouched. */
int vg_route_takes(const vg_route_cfg_t *route, const char *modality, int instances,
                   double slice_thickness, char *why, size_t whylen);

/* 1 if one job of ROUTE analyses a group of series (group = study,
 * accession or patient), 0 if each series is a job on its own. */
int vg_route_is_grouped(const vg_route_cfg_t *route);

/* The instances a job of ROUTE analyses, as absolute paths under
 * DATA_DIR: for a route grouped by series, the job's series; grouped by
 * study, accession or patient, every instance of the route's modalities
 * in the job's group (the job's series_uid and study_uid then both name
 * the study whose completion queued it). A series counts when ROUTE
 * takes it (vg_route_takes: modality, min_slices, slice thickness), as at
 * its completion. Accession: every study with the job's study's accession
 * number (the study alone when it has none). Patient: every study of the
 * job's study's patient ID (the study alone when it has none) whose
 * StudyDate (and StudyTime, when both have one) lies within
 * group_window_hours of the job's study's; when either lacks a date, the
 * times they were first received are compared instead. Paths are ordered
 * by study date, series number, instance number. *paths is one allocation
 * (the caller frees it). Returns 0, VG_ENOTFOUND when no instance is left
 * (or the study is not indexed), VG_EDB, or -ENOMEM. */
struct vg_job;
int vg_group_files(vg_index_t *idx, const char *data_dir, const vg_route_cfg_t *route,
                   const struct vg_job *job, char ***paths, int *n);

#endif
