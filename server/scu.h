/* The node as a storage SCU, over DCMTK: sends Part 10 files to one
 * remote AE in one association, optionally over TLS (dcmtls), and says
 * per file whether the remote acknowledged it. Pure C; the C++ stays in
 * scu_shim.cpp and no exception crosses this boundary. It decides
 * nothing about retries or the outbox: server/sender.c does. */
#ifndef VG_SCU_H
#define VG_SCU_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>

typedef struct vg_scu_peer {
    const char *calling_ae;       /* our AE title */
    const char *called_ae;        /* the destination's */
    const char *host;
    int port;
    int acse_timeout;             /* seconds: connect, associate, release */
    int dimse_timeout;            /* seconds: each C-STORE response */
    int tls;                      /* 1: TLS, the peer's certificate verified */
    const char *tls_ca_file;      /* PEM CA certificate(s); needed for TLS */
    const char *tls_certificate;  /* ours (PEM) for client auth, or NULL/"" */
    const char *tls_private_key;  /* its key (PEM), with tls_certificate */
} vg_scu_peer_t;

typedef enum {
    VG_SCU_NOT_SENT = 0,          /* not tried (stopping, or no association) */
    VG_SCU_ACKED,                 /* the peer took it: status 0000, B000,
                                     B006 or B007 (stored, with a warning) */
    VG_SCU_FAILED,                /* tried, not acknowledged: see error */
} vg_scu_outcome_t;

typedef struct vg_scu_item {
    const char *path;             /* in: the Part 10 file */
    const char *sop_uid;          /* in: what the file must hold, or NULL */
    vg_scu_outcome_t outcome;     /* out */
    int status;                   /* out: DIMSE status, -1 when none came */
    char error[256];              /* out: why, when FAILED ("" otherwise) */
} vg_scu_item_t;

/* Sets what DCMTK reads from the environment (TCP_NODELAY) and its log
 * level, once, before any thread sends. Idempotent. */
void vg_scu_init(int verbose);

/* Sends ITEMS[0..N) to PEER in one association and fills each item's
 * outcome. Before each file, STOP(arg) (may be NULL) is asked whether to
 * stop; files after a stop are NOT_SENT and the association is released.
 * Returns 0 when the association was made (whatever the files' outcomes),
 * or a negative code (VG_EDCM, -ECONNREFUSED, ...) when it could not be:
 * err then says why in words an administrator can act on
 * ("connection refused 10.0.0.5:104 (...)", "association rejected by
 * 10.0.0.5:104: called AE title "PACS" not recognised (...)", "TLS
 * handshake with 10.0.0.5:2762 failed: certificate verify failed"), and
 * every item is NOT_SENT but those FAILED on their own. A file that cannot be read, holds
 * another SOP instance than SOP_UID, or needs a transfer syntax the peer
 * refused is FAILED without being sent; a broken association fails the
 * file in flight and leaves those after it NOT_SENT. */
int vg_scu_send(const vg_scu_peer_t *peer, vg_scu_item_t *items, int n,
                int (*stop)(void *arg), void *arg, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
