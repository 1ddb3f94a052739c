/* A small HTTP/1.1 server on the libuv loop, parsing requests with
 * http-parser. It knows transport only: each complete request is handed
 * to one handler, whose reply it writes. Requests are served one at a time
 * per connection, keep-alive honoured; a HEAD reply carries the headers of
 * the handler's reply without its body. */
#ifndef VG_HTTP_H
#define VG_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct vg_http vg_http_t;

typedef struct vg_http_request {
    const char *method;       /* "GET", "POST", ... */
    const char *path;         /* decoded path, without the query */
    const char *query;        /* raw query string, "" when none */
    const char *body;         /* request body (NUL-terminated), may be "" */
    size_t body_len;
} vg_http_request_t;

typedef struct vg_http_reply {
    int status;               /* 200, 404, ... */
    const char *content_type; /* static string */
    char *body;               /* malloc'd; the server frees it */
    size_t body_len;
    const char *headers;      /* static "Name: value\r\n" lines, or NULL */
} vg_http_reply_t;

/* A request larger than this (headers and body) is answered 413. */
#define VG_HTTP_MAX_REQUEST (1024 * 1024)

typedef void (*vg_http_handler_fn)(void *ctx, const vg_http_request_t *req,
                                   vg_http_reply_t *reply);

/* Listens on BIND:PORT on LOOP; BIND is an IPv4 or IPv6 literal. On
 * success *out is owned by the caller (vg_http_stop) and 0 is returned;
 * on failure a negative code, err says why, and the half-made listener is
 * freed by its close callback when the loop next runs. The handler is
 * called on the loop thread; the reply struct is zeroed before the call. */
int vg_http_start(uv_loop_t *loop, const char *bind, int port,
                  vg_http_handler_fn fn, void *ctx, vg_http_t **out,
                  char *err, size_t errlen);

/* Closes the listener and every connection; memory is freed in the close
 * callbacks, so the loop must run once more. NULL is a no-op. */
void vg_http_stop(vg_http_t *http);

/* The bound port (the one the kernel chose when 0 was asked), or <0. */
int vg_http_port(const vg_http_t *http);

/* Closes a connection idle for MS milliseconds (default 30000); applies
 * to timers started afterwards. */
void vg_http_set_idle_timeout(vg_http_t *http, unsigned ms);

/* Copies the percent-decoded value of NAME in QUERY ("a=1&b=2"; '+' is a
 * space) into out. Returns 0, VG_ENOTFOUND when absent, VG_ETOOBIG when
 * it does not fit, -EINVAL when badly encoded. */
int vg_http_query_param(const char *query, const char *name, char *out,
                        size_t outlen);

#endif
