/* HTTP/1.1 transport on libuv, requests parsed by http-parser; see
 * http.h. It is not a web framework: no routing, no headers handed up, no
 * streamed bodies. Each request is buffered whole (bounded by
 * VG_HTTP_MAX_REQUEST), handed to the handler synchronously and its reply
 * queued with uv_write, so pipelined replies leave in request order.
 *
 * A connection is two handles (tcp, idle timer); it is freed when both
 * close callbacks have run. The vg_http_t is freed when its listener and
 * every connection are closed. */
#include "server/http.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/error.h"
#include "server/log.h"

#define IDLE_MS_DEFAULT 30000
/* After the last reply, unread input is drained this long before the
 * close, so that closing with unread data (which sends RST) cannot
 * destroy that reply in flight. */
#define LINGER_MS 2000
/* Input is not read while more reply bytes than this wait to be sent: a
 * client that pipelines without reading cannot grow our memory. */
#define WRITE_QUEUE_MAX (4u * 1024 * 1024)
/* A body buffer bigger than this is released between requests. */
#define KEEP_BUF_MAX (64u * 1024)

typedef struct conn conn_t;

struct vg_http {
    uv_tcp_t listener;
    vg_http_handler_fn fn;
    void *ctx;
    unsigned idle_ms;
    conn_t *conns;       /* open connections, doubly linked */
    int nconns;          /* connections not yet freed */
    int listener_closed; /* its close callback has run */
    int stopping;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout, then linger timeout */
    uv_shutdown_t shutdown;
    vg_http_t *http;
    conn_t *prev, *next;
    http_parser parser;
    char *url;
    size_t url_len, url_cap;
    char *body;
    size_t body_len, body_cap;
    size_t req_bytes; /* headers and body of this request so far */
    int fail_status;  /* set by a callback that refuses the request */
    int open_handles; /* freed when it drops to 0 */
    int writes_pending;
    int closing;     /* uv_close called */
    int last_reply;  /* no further request is read */
    int read_paused; /* by WRITE_QUEUE_MAX */
    int peer_eof;
    char rbuf[16384];
};

typedef struct {
    uv_write_t req;
    char *body;
    char head[];
} reply_write_t;

static const http_parser_settings settings;
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* --- lifetime ----------------------------------------------------------- */

static void http_free_if_done(vg_http_t *http)
{
    if (http->listener_closed && http->nconns == 0)
        free(http);
}

static void on_listener_close(uv_handle_t *h)
{
    vg_http_t *http = h->data;
    http->listener_closed = 1;
    http_free_if_done(http);
}

static void on_conn_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    vg_http_t *http = c->http;
    free(c->url);
    free(c->body);
    free(c);
    http->nconns--;
    http_free_if_done(http);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->http->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, on_conn_close);
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    /* Nothing to do: reading goes on until EOF or the linger timeout. */
    (void)req;
    (void)status;
}

/* The last reply is out: half-close, then drain until the peer closes. */
static void conn_linger(conn_t *c)
{
    if (c->peer_eof || uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
}

/* --- replies ------------------------------------------------------------ */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 400 ? "OK" : "Error";
    }
}

static void on_write(uv_write_t *req, int status)
{
    reply_write_t *w = (reply_write_t *)req;
    conn_t *c = req->data;
    free(w->body);
    free(w);
    c->writes_pending--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, c->http->idle_ms, 0);
    if (c->writes_pending > 0)
        return;
    if (c->last_reply) {
        conn_linger(c);
    } else if (c->read_paused) {
        c->read_paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static const char *connection_header(const conn_t *c)
{
    if (c->last_reply)
        return "Connection: close\r\n";
    /* HTTP/1.0 keeps the connection only when both sides say so. */
    if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        return "Connection: keep-alive\r\n";
    return "";
}

/* Queues REPLY (taking its body) on C; on failure closes C. */
static void send_reply(conn_t *c, vg_http_reply_t *r)
{
    if (r->status < 100 || r->status > 599) {
        vg_log(VG_LOG_ERROR, "http: handler returned status %d", r->status);
        r->status = 500;
        r->body_len = 0;
    }
    if (!r->body)
        r->body_len = 0;
    const char *ctype = r->content_type ? r->content_type : "text/plain";
    const char *extra = r->headers ? r->headers : "";
    static const char fmt[] = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                              "Content-Length: %zu\r\n%s%s\r\n";
    int n = snprintf(NULL, 0, fmt, r->status, reason_phrase(r->status), ctype, r->body_len,
                     connection_header(c), extra);
    reply_write_t *w = n < 0 ? NULL : malloc(sizeof *w + (size_t)n + 1);
    if (!w) {
        free(r->body);
        conn_close(c);
        return;
    }
    snprintf(w->head, (size_t)n + 1, fmt, r->status, reason_phrase(r->status), ctype,
             r->body_len, connection_header(c), extra);
    uv_buf_t bufs[2] = {uv_buf_init(w->head, (unsigned)n)};
    unsigned nbufs = 1;
    w->body = r->body;
    if (r->body_len > 0 && c->parser.method != HTTP_HEAD)
        bufs[nbufs++] = uv_buf_init(r->body, (unsigned)r->body_len);
    w->req.data = c;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write) < 0) {
        free(w->body);
        free(w);
        conn_close(c);
        return;
    }
    c->writes_pending++;
}

/* Answers a request refused by the transport itself and ends C. */
static void send_error(conn_t *c, int status)
{
    const char *text = status == 413   ? "{\"error\":\"request too large\"}"
                       : status == 500 ? "{\"error\":\"out of memory\"}"
                                       : "{\"error\":\"bad request\"}";
    vg_http_reply_t r = {.status = status, .content_type = "application/json"};
    r.body = strdup(text);
    r.body_len = r.body ? strlen(text) : 0;
    c->last_reply = 1;
    send_reply(c, &r);
}

/* --- requests ----------------------------------------------------------- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes (and '+' as a space when PLUS) of S[0..n) into OUT
 * (which may be S) of OUTCAP bytes, NUL-terminated. Returns the length,
 * VG_ETOOBIG, or -EINVAL for a bad escape or an encoded NUL (which no C
 * string can carry). */
static long pct_decode(const char *s, size_t n, char *out, size_t outcap, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -EINVAL;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h | l) == 0)
                return -EINVAL;
            ch = h * 16 + l;
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (o + 1 >= outcap)
            return VG_ETOOBIG;
        out[o++] = (char)ch;
    }
    if (outcap == 0)
        return VG_ETOOBIG;
    out[o] = '\0';
    return (long)o;
}

int vg_http_query_param(const char *query, const char *name, char *out, size_t outlen)
{
    const char *p = query;
    while (p && *p) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char key[128];
        if (pct_decode(p, klen, key, sizeof key, 1) >= 0 && strcmp(key, name) == 0) {
            const char *v = eq ? eq + 1 : p + len;
            long rc = pct_decode(v, (size_t)(p + len - v), out, outlen, 1);
            return rc < 0 ? (int)rc : 0;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return VG_ENOTFOUND;
}

/* Counts N more request bytes; refuses the request past the limit. */
static int count_bytes(conn_t *c, size_t n)
{
    c->req_bytes += n;
    if (c->req_bytes > VG_HTTP_MAX_REQUEST) {
        c->fail_status = 413;
        return -1;
    }
    return 0;
}

static int append(conn_t *c, char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    if (count_bytes(c, n) < 0)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t want = *cap ? *cap * 2 : 256;
        while (want < *len + n + 1)
            want *= 2;
        char *p = realloc(*buf, want);
        if (!p) {
            c->fail_status = 500;
            return -1;
        }
        *buf = p;
        *cap = want;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* Splits c->url in place into the decoded path and the raw query. */
static int split_url(conn_t *c, const char **path, const char **query)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!c->url ||
        http_parser_parse_url(c->url, c->url_len, c->parser.method == HTTP_CONNECT, &u))
        return -1;
    *query = "";
    if (u.field_set & (1 << UF_QUERY)) {
        char *q = c->url + u.field_data[UF_QUERY].off;
        q[u.field_data[UF_QUERY].len] = '\0';
        *query = q;
    }
    *path = "/";
    if (u.field_set & (1 << UF_PATH)) {
        char *s = c->url + u.field_data[UF_PATH].off;
        size_t n = u.field_data[UF_PATH].len;
        if (pct_decode(s, n, s, n + 1, 0) < 0)
            return -1;
        *path = s;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->url_len = c->body_len = c->req_bytes = 0;
    c->fail_status = 0;
    return c->closing ? -1 : 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    return append(c, &c->url, &c->url_len, &c->url_cap, at, n);
}

static int on_header_data(http_parser *p, const char *at, size_t n)
{
    (void)at;
    return count_bytes(p->data, n);
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    /* Refuse a declared oversize body now rather than read it first. */
    if (p->content_length != ULLONG_MAX &&
        p->content_length > VG_HTTP_MAX_REQUEST - c->req_bytes) {
        c->fail_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    return append(c, &c->body, &c->body_len, &c->body_cap, at, n);
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    vg_http_request_t req = {.method = http_method_str(p->method),
                             .body = c->body_len ? c->body : "",
                             .body_len = c->body_len};
    if (!http_should_keep_alive(p) || p->upgrade || c->http->stopping)
        c->last_reply = 1;
    if (split_url(c, &req.path, &req.query) < 0) {
        send_error(c, 400);
    } else {
        vg_http_reply_t reply = {0};
        c->http->fn(c->http->ctx, &req, &reply);
        if (c->closing) /* the handler stopped the server */
            free(reply.body);
        else
            send_reply(c, &reply);
    }
    if (c->body_cap > KEEP_BUF_MAX) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    if (c->last_reply || c->closing)
        http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_data,
    .on_header_value = on_header_data,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- reading ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_eof(conn_t *c)
{
    /* A client may half-close after its request: finish the replies. */
    if (c->writes_pending == 0) {
        conn_close(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->peer_eof = 1;
    c->last_reply = 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (n == UV_EOF) {
        on_eof(c);
        return;
    }
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0 || c->last_reply) /* discarded while lingering */
        return;
    uv_timer_start(&c->timer, on_timeout, c->http->idle_ms, 0);
    size_t used = http_parser_execute(&c->parser, &settings, buf->base, (size_t)n);
    if (c->closing || c->last_reply)
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK || used != (size_t)n) {
        int status = c->fail_status ? c->fail_status : 400;
        if (e == HPE_HEADER_OVERFLOW)
            status = 413;
        send_error(c, status);
    } else if (uv_stream_get_write_queue_size(s) > WRITE_QUEUE_MAX) {
        uv_read_stop(s);
        c->read_paused = 1;
    }
}

/* --- listener ----------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    vg_http_t *http = server->data;
    if (status < 0) {
        vg_log(VG_LOG_WARN, "http: accept: %s", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c || uv_tcp_init(server->loop, &c->tcp) < 0) {
        /* libuv accepts nothing more until uv_accept is called. */
        vg_log(VG_LOG_ERROR, "http: out of memory for a connection");
        free(c);
        return;
    }
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->http = http;
    c->open_handles = 2;
    http->nconns++;
    c->next = http->conns;
    if (c->next)
        c->next->prev = c;
    http->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    /* A reply is one write; Nagle would only hold its tail back. */
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_timeout, http->idle_ms, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close(c);
}

static int parse_bind(const char *bind, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (port < 0 || port > 65535)
        return -EINVAL;
    if (uv_ip4_addr(bind, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(bind, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

int vg_http_start(uv_loop_t *loop, const char *bind, int port, vg_http_handler_fn fn,
                  void *ctx, vg_http_t **out, char *err, size_t errlen)
{
    *out = NULL;
    struct sockaddr_storage ss;
    if (parse_bind(bind, port, &ss) < 0) {
        snprintf(err, errlen, "http: %s port %d: not an IP address and port", bind, port);
        return -EINVAL;
    }
    vg_http_t *http = calloc(1, sizeof *http);
    if (!http)
        return -ENOMEM;
    http->fn = fn;
    http->ctx = ctx;
    http->idle_ms = IDLE_MS_DEFAULT;
    int rc = uv_tcp_init(loop, &http->listener);
    if (rc < 0) {
        free(http);
        snprintf(err, errlen, "http: %s", uv_strerror(rc));
        return rc;
    }
    http->listener.data = http;
    /* Our own limit covers headers and body; the parser's 80 KiB header
     * limit would answer a smaller request differently. */
    http_parser_set_max_header_size(VG_HTTP_MAX_REQUEST);
    rc = uv_tcp_bind(&http->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&http->listener, 128, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "http: listen on %s port %d: %s", bind, port,
                 uv_strerror(rc));
        http->stopping = 1;
        uv_close((uv_handle_t *)&http->listener, on_listener_close);
        return rc;
    }
    *out = http;
    return 0;
}

void vg_http_stop(vg_http_t *http)
{
    if (!http || http->stopping)
        return;
    http->stopping = 1;
    while (http->conns)
        conn_close(http->conns);
    uv_close((uv_handle_t *)&http->listener, on_listener_close);
}

int vg_http_port(const vg_http_t *http)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rc = uv_tcp_getsockname(&http->listener, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return rc;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void vg_http_set_idle_timeout(vg_http_t *http, unsigned ms)
{
    http->idle_ms = ms;
}
