/* The JSON API, /healthz and /metrics: the handler behind vg_http. It
 * reads the index through its own connection on the loop thread; the
 * models in /healthz come from the workers table (storage/workers.h). Its
 * one write is an outbox retry by hand (storage/outbox.h). */
#ifndef VG_API_H
#define VG_API_H

#include "server/http.h"
#include "storage/index.h"

typedef struct vg_api {
    vg_index_t *idx;          /* the loop thread's connection */
    int accepting;            /* 1 once the DICOM port accepts */
    const char *ae_title;     /* our AE title, shown in /healthz */
    void (*wake)(void *arg);  /* called after an outbox retry, or NULL */
    void *wake_arg;
    void *priv;               /* prepared statements (api.c) */
} vg_api_t;

/* Prepares the API's statements on api->idx, which must be set. Returns
 * 0, or VG_EDB (or -ENOMEM) with nothing held. vg_api_close releases them (and is a
 * no-op on an api never initialised). */
int vg_api_init(vg_api_t *api);
void vg_api_close(vg_api_t *api);

/* vg_http_handler_fn for every route of the node; CTX is a vg_api_t
 * made ready by vg_api_init. */
void vg_api_handle(void *ctx, const vg_http_request_t *req,
                   vg_http_reply_t *reply);

#endif
