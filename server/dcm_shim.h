/* The DICOM side of the node, over DCMTK: a storage SCP pool (C-ECHO,
 * C-STORE, one thread per association) and a header reader. Pure C; the
 * C++ stays in dcm_shim.cpp and no exception crosses this boundary. The
 * shim decides nothing about AE titles or storage: it asks the callbacks. */
#ifndef VG_DCM_SHIM_H
#define VG_DCM_SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>

#include "storage/instance.h"

typedef struct vg_scp vg_scp_t;

typedef enum {
    VG_ASSOC_ACCEPT = 0,
    VG_ASSOC_REJECT_CALLED_AE,    /* permanent, called AE not recognized */
    VG_ASSOC_REJECT_CALLING_AE,   /* permanent, calling AE not recognized */
    VG_ASSOC_REJECT_CONGESTION,   /* transient, temporary congestion */
} vg_assoc_decision_t;

/* Why the listener itself turned a connection away. */
typedef enum {
    VG_REFUSED_NO_CONTEXT,        /* no acceptable presentation context */
    VG_REFUSED_TOO_MANY,          /* max_associations reached */
    VG_REFUSED_PROTOCOL,          /* no, late or malformed A-ASSOCIATE-RQ */
} vg_refusal_t;

/* Called from association threads; every function must be thread-safe. */
typedef struct vg_scp_callbacks {
    void *ctx;
    /* Decides on an association request (peer = IP address of the peer). */
    vg_assoc_decision_t (*check)(void *ctx, const char *calling_ae,
                                 const char *called_ae, const char *peer);
    /* An association was acknowledged: returns the per-association
     * session passed to the calls below (may be NULL on failure, which
     * makes every C-STORE answer A700). */
    void *(*begin)(void *ctx, const char *calling_ae, const char *peer);
    /* The association ended (released, aborted or broken). */
    void (*end)(void *ctx, void *session);
    /* Before a C-STORE's dataset is received: 0 to receive it into a temp
     * file, or a DICOM failure status (e.g. 0xA700) to discard it. */
    unsigned (*admit)(void *ctx, void *session, char *comment,
                      size_t commentlen);
    /* More of a dataset has been written to TMP_PATH (called often). */
    void (*progress)(void *ctx, void *session, const char *tmp_path);
    /* The dataset has fully arrived in TMP_PATH; its header is about to be
     * read (the callee may start flushing the file meanwhile). */
    void (*received)(void *ctx, void *session, const char *tmp_path);
    /* The dataset is in TMP_PATH. META is NULL when it could not be
     * parsed (PARSE_ERROR says why). Returns the DICOM status to answer
     * and may fill COMMENT (sent as Error Comment). The callee owns
     * TMP_PATH from here: it moves or deletes it. */
    unsigned (*store)(void *ctx, void *session, const char *tmp_path,
                      const vg_instance_meta_t *meta, const char *parse_error,
                      const char *affected_sop_uid, char *comment,
                      size_t commentlen);
    /* A C-STORE dataset could not be received (network); nothing kept. */
    void (*receive_failed)(void *ctx, void *session, const char *why);
    /* A C-ECHO was answered. */
    void (*echo)(void *ctx);
    /* The listener turned a connection away itself; DETAIL says how. */
    void (*refused)(void *ctx, vg_refusal_t why, const char *calling_ae,
                    const char *called_ae, const char *peer, const char *detail);
} vg_scp_callbacks_t;

typedef struct vg_scp_options {
    const char *ae_title;
    const char *bind;             /* IPv4 address to listen on */
    int port;
    int max_associations;
    int acse_timeout;             /* seconds */
    int dimse_timeout;            /* seconds */
    const char *tmp_dir;          /* where datasets are received */
    int verbose;                  /* DCMTK's own log at info level */
} vg_scp_options_t;

/* Binds the listening socket, then starts the pool on its own thread;
 * the port accepts connections when this returns 0.
 * STOPPED(arg) is called from the pool thread when it has finished (after
 * vg_scp_stop, or on a fatal error). Returns 0, or a negative code with
 * err filled (e.g. port in use). Only one pool may run per process. */
int vg_scp_start(const vg_scp_options_t *opt, const vg_scp_callbacks_t *cb,
                 void (*stopped)(void *arg), void *arg, vg_scp_t **out,
                 char *err, size_t errlen);

/* Stops accepting; running associations go on until they end. */
void vg_scp_stop(vg_scp_t *scp);

/* Waits up to TIMEOUT_MS for the pool thread; 0 when it ended (and scp is
 * freed), VG_EBUSY when associations are still running. */
int vg_scp_join(vg_scp_t *scp, int timeout_ms);

/* Reads the attributes of the DICOM file at PATH without loading pixel
 * data. 0 on success; VG_EPARSE with err filled when it is not DICOM. */
int vg_dcm_read_meta(const char *path, vg_instance_meta_t *meta, char *err,
                     size_t errlen);

/* DCMTK's upper layer fills its global state tables the first time any
 * thread sets up a network, without a lock. Called (once is enough, more
 * is harmless) before the listener or a sender starts a thread. */
void vg_dcm_network_init(void);

#ifdef __cplusplus
}
#endif

#endif
