/* The node's configuration: one INI file read with libinih and checked
 * against one table of keys (name, type, bounds, default, offset). This
 * module parses and validates; it opens no sockets and touches no data. */
#ifndef VG_CONFIG_H
#define VG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define VG_AE_TITLE_MAX 16  /* DICOM AE title: at most 16 characters */
#define VG_NAME_MAX 64      /* section names: [ae NAME], [route NAME] */
#define VG_PATH_MAX 4096
#define VG_ROUTE_DEST_MAX 8
#define VG_MODEL_DEVICES_MAX 8

enum { VG_ROLE_SOURCE = 1, VG_ROLE_DESTINATION = 2 };
enum { VG_DUP_KEEP = 0, VG_DUP_REPLACE = 1 };

typedef struct vg_ae_cfg {
    char name[VG_NAME_MAX];               /* section name */
    char ae_title[VG_AE_TITLE_MAX + 1];   /* required */
    char host[256];                       /* "" = any host */
    int port;                             /* 0 = none (sources) */
    int role;                             /* VG_ROLE_* (required) */
    int tls;                              /* bool: DICOM over TLS (destinations) */
    char tls_ca_file[VG_PATH_MAX];        /* CA certificate(s), PEM, that must
                                             have signed the peer's; "" = none */
    int line;                             /* line of the section header */
} vg_ae_cfg_t;

typedef struct vg_route_cfg {
    char name[VG_NAME_MAX];
    char model[VG_NAME_MAX];              /* model that analyses the series */
    char modality[64];                    /* "CT", or a list "MG,US" (commas
                                             and/or blanks); required */
    int min_slices;                       /* instances in the series */
    double max_slice_thickness;           /* mm; 0 = no limit */
    char group[16];                       /* what one job analyses: "series"
                                             (default), "study", "accession"
                                             or "patient" */
    int group_window_hours;               /* patient grouping: studies this
                                             many hours from the completed
                                             one */
    char destinations[VG_ROUTE_DEST_MAX][VG_NAME_MAX]; /* [ae] names */
    int n_destinations;
    int line;
} vg_route_cfg_t;

typedef struct vg_model_cfg {
    char name[VG_NAME_MAX];               /* section name, used by routes */
    char manifest[VG_PATH_MAX];           /* absolute path of manifest.json */
    char devices[VG_MODEL_DEVICES_MAX][16]; /* "cpu", "cuda:0", ... */
    int n_devices;                        /* one worker per device */
    int threads;                          /* CPU threads per worker */
    int max_attempts;                     /* before a job is failed */
    int lease_seconds;                    /* a job's lease on a worker */
    int line;
} vg_model_cfg_t;

typedef struct vg_config {
    char path[VG_PATH_MAX];               /* absolute path of the file */
    struct {
        char ae_title[VG_AE_TITLE_MAX + 1];
        char bind[16];                    /* IPv4 address of the listener */
        int port;
        int max_associations;
        int accept_unknown_sources;       /* bool */
        int acse_timeout;                 /* seconds */
        int dimse_timeout;                /* seconds */
        int shutdown_timeout;             /* seconds to let associations end */
        int log_level;                    /* VG_LOG_* */
        char tls_certificate[VG_PATH_MAX]; /* our certificate (PEM) for TLS
                                              client authentication; "" = none */
        char tls_private_key[VG_PATH_MAX]; /* its private key (PEM, unencrypted) */
    } node;
    struct {
        char dir[VG_PATH_MAX];            /* absolute after loading */
        uint64_t min_free_disk;           /* bytes */
        int series_quiet_seconds;
        int study_quiet_seconds;
        int on_duplicate;                 /* VG_DUP_* */
    } storage;
    struct {
        char bind[64];
        int port;
    } http;
    struct {
        int retry_initial_seconds;        /* first wait after a failed send */
        int retry_max_seconds;            /* the wait doubles up to this */
        int max_attempts;                 /* then "failed"; 0 = never give up */
    } outbox;
    vg_ae_cfg_t *aes;                     /* [ae NAME] sections */
    int n_aes;
    vg_route_cfg_t *routes;               /* [route NAME] sections */
    int n_routes;
    vg_model_cfg_t *models;               /* [model NAME] sections */
    int n_models;
} vg_config_t;

/* Reads and validates FILE. On success *out is a new config owned by the
 * caller (free with vg_config_destroy) and 0 is returned. On failure
 * returns VG_EINVAL_CFG (or -errno when the file cannot be read), *out is
 * NULL, and err holds every problem found, one per line, each as
 * "file:line: key: message". */
int vg_config_load(const char *path, vg_config_t **out, char *err,
                   size_t errlen);
void vg_config_destroy(vg_config_t *cfg);

/* The [ae] section whose AE title is TITLE and role is ROLE, or NULL. */
const vg_ae_cfg_t *vg_config_find_ae(const vg_config_t *cfg,
                                     const char *title, int role);

/* The [model] section named NAME, or NULL. */
const vg_model_cfg_t *vg_config_find_model(const vg_config_t *cfg, const char *name);

/* Writes the key table, one key per line:
 * "section key type default", where section is "node", "storage",
 * "http", "outbox", "ae", "route" or "model". Used by --print-keys and the tests that check
 * that the example configuration documents every key. */
void vg_config_print_keys(FILE *f);

/* Parses sizes such as "500M", "2G", "1048576"; 0 or VG_EINVAL_CFG. */
int vg_config_parse_size(const char *s, uint64_t *out);

#endif
