/* One series analysed outside the node: the DICOM files of a directory
 * through the same volume reader and analysis the workers run, with the
 * result as JSON (findings with their masks, timings, peak memory). For a
 * breast risk manifest the directory is one breast group: every MG and US
 * file in it (and two levels below), with clinical values from an
 * optional JSON file as the API takes them; the JSON then has one
 * assessment per breast. For checking a model on data a hospital has,
 * for the quality script and for the benchmark. */
#ifndef VG_ANALYSE_H
#define VG_ANALYSE_H

#include <stdio.h>

/* Analyses the files in DIR with the model of MANIFEST on DEVICE using
 * THREADS CPU threads and writes one JSON object to OUT. Returns 0 when
 * a result (done or not_analysable) was written, 1 on any other failure
 * (message on stderr). */
int vg_analyse_dir(const char *dir, const char *manifest, const char *device, int threads,
                   FILE *out);

/* The same with the clinical values of the JSON file CLINICAL (NULL:
 * none), which only a breast risk manifest takes (an error otherwise). */
int vg_analyse_dir_clinical(const char *dir, const char *manifest, const char *clinical,
                            const char *device, int threads, FILE *out);

#endif
