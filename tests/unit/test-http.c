/* Tests of the HTTP transport: a vg_http server on 127.0.0.1 with an echo
 * handler, its loop in a thread, driven by a blocking socket client whose
 * replies are parsed with http-parser. Every test ends by stopping the
 * server and checking that uv_loop_close finds no handle left open. */
#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "server/error.h"
#include "server/http.h"
#include "tests/unit/test.h"

#define BIG_REPLY (3 * 1024 * 1024)

/* --- server side -------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    vg_http_t *http;
    pthread_t thread;
    int port;
} server_t;

/* Echoes what it was given; "/big" answers BIG_REPLY bytes of 'x'. */
static void echo_handler(void *ctx, const vg_http_request_t *req, vg_http_reply_t *r)
{
    (void)ctx;
    r->status = 200;
    r->content_type = "text/plain";
    if (strcmp(req->path, "/big") == 0) {
        r->body = malloc(BIG_REPLY);
        memset(r->body, 'x', BIG_REPLY);
        r->body_len = BIG_REPLY;
        return;
    }
    if (strcmp(req->path, "/teapot") == 0)
        r->headers = "X-Test: yes\r\n";
    int n =
        asprintf(&r->body, "%s %s ?%s [%s]", req->method, req->path, req->query, req->body);
    r->body_len = n < 0 ? 0 : (size_t)n;
}

static void on_stop(uv_async_t *a)
{
    server_t *s = a->data;
    vg_http_stop(s->http);
    uv_close((uv_handle_t *)a, NULL); /* embedded in server_t, not freed */
}

static void *loop_main(void *arg)
{
    server_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int server_start(server_t *s, unsigned idle_ms)
{
    char err[256] = "";
    memset(s, 0, sizeof *s);
    if (uv_loop_init(&s->loop) < 0)
        return -1;
    if (vg_http_start(&s->loop, "127.0.0.1", 0, echo_handler, NULL, &s->http, err,
                      sizeof err) < 0) {
        fprintf(stderr, "start: %s\n", err);
        return -1;
    }
    if (idle_ms)
        vg_http_set_idle_timeout(s->http, idle_ms);
    s->port = vg_http_port(s->http);
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    return pthread_create(&s->thread, NULL, loop_main, s) == 0 ? 0 : -1;
}

/* Stops the server from its loop thread; returns uv_loop_close's code,
 * which is UV_EBUSY if any handle was left open. */
static int server_stop(server_t *s)
{
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    return uv_loop_close(&s->loop);
}

/* --- client side -------------------------------------------------------- */

typedef struct {
    int status;
    char *body;
    size_t body_len;
    char field[64];
    size_t field_len;
    char value[128];
    size_t value_len;
    int in_value;
    char connection[128]; /* Connection header, "" when absent */
    char x_test[128];     /* X-Test header */
    long content_length;  /* -1 when absent */
    int head;             /* reply to HEAD: no body follows */
    int complete;
} resp_t;

typedef struct {
    int fd;
    http_parser parser;
    char in[65536];
    size_t in_off, in_len;
} client_t;

static void header_done(resp_t *r)
{
    if (!r->in_value)
        return;
    r->field[r->field_len] = r->value[r->value_len] = '\0';
    if (strcasecmp(r->field, "Connection") == 0)
        snprintf(r->connection, sizeof r->connection, "%s", r->value);
    else if (strcasecmp(r->field, "X-Test") == 0)
        snprintf(r->x_test, sizeof r->x_test, "%s", r->value);
    else if (strcasecmp(r->field, "Content-Length") == 0)
        r->content_length = atol(r->value);
    r->field_len = r->value_len = 0;
    r->in_value = 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;
    header_done(r);
    n = n < sizeof r->field - 1 - r->field_len ? n : sizeof r->field - 1 - r->field_len;
    memcpy(r->field + r->field_len, at, n);
    r->field_len += n;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;
    r->in_value = 1;
    n = n < sizeof r->value - 1 - r->value_len ? n : sizeof r->value - 1 - r->value_len;
    memcpy(r->value + r->value_len, at, n);
    r->value_len += n;
    return 0;
}

static int on_headers(http_parser *p)
{
    resp_t *r = p->data;
    header_done(r);
    r->status = p->status_code;
    return r->head ? 1 : 0; /* 1: no body follows */
}

static int on_rbody(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;
    char *b = realloc(r->body, r->body_len + n + 1);
    if (!b)
        return -1;
    memcpy(b + r->body_len, at, n);
    r->body = b;
    r->body_len += n;
    b[r->body_len] = '\0';
    return 0;
}

static int on_rdone(http_parser *p)
{
    resp_t *r = p->data;
    r->complete = 1;
    http_parser_pause(p, 1); /* what follows is the next reply */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers,
    .on_body = on_rbody,
    .on_message_complete = on_rdone,
};

/* RCVBUF, when not 0, shrinks the client's receive buffer so that a big
 * reply cannot leave the server at once. */
static int client_open_buf(client_t *c, int port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    return connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
}

static int client_open(client_t *c, int port)
{
    return client_open_buf(c, port, 0);
}

static int client_send(client_t *c, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, data, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        data += k;
        n -= (size_t)k;
    }
    return 0;
}

static int client_sends(client_t *c, const char *s)
{
    return client_send(c, s, strlen(s));
}

/* Reads one whole reply into R (free r->body). Returns 0, or -1 on EOF,
 * timeout or a malformed reply. */
static int client_read(client_t *c, resp_t *r, int head)
{
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    r->head = head;
    c->parser.data = r;
    http_parser_pause(&c->parser, 0);
    for (;;) {
        if (c->in_off == c->in_len) {
            ssize_t n = recv(c->fd, c->in, sizeof c->in, 0);
            if (n <= 0)
                return -1;
            c->in_off = 0;
            c->in_len = (size_t)n;
        }
        size_t used = http_parser_execute(&c->parser, &resp_settings, c->in + c->in_off,
                                          c->in_len - c->in_off);
        c->in_off += used;
        if (r->complete)
            return 0;
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK)
            return -1;
    }
}

/* 1 when the server has closed (EOF or reset) with nothing more sent. */
static int client_sees_close(client_t *c)
{
    if (c->in_off != c->in_len)
        return 0;
    char b[256];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* --- tests -------------------------------------------------------------- */

TEST_IMPL(http_get_keepalive)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_GT(s.port, 0);
    ASSERT_EQ(client_open(&c, s.port), 0);

    ASSERT_EQ(client_sends(&c, "GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\n"
                               "Host: t\r\n\r\n"),
              0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "GET /a b/\xC3\xA9 ?x=1&y=%20 []");
    ASSERT_EQ(r.content_length, (long)strlen(r.body));
    ASSERT_STR_EQ(r.connection, "");
    free(r.body);

    /* Same connection, a body this time. */
    ASSERT_EQ(client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 5\r\n\r\nhello"),
              0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "POST /echo ? [hello]");
    free(r.body);

    /* Chunked bodies are reassembled; extra headers pass through. */
    ASSERT_EQ(client_sends(&c, "PUT /teapot HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
              0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.body, "PUT /teapot ? [abcde]");
    ASSERT_STR_EQ(r.x_test, "yes");
    free(r.body);

    /* HEAD: the headers of the GET reply, no body. */
    ASSERT_EQ(client_sends(&c, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 1), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.content_length, (long)strlen("HEAD /h ? []"));
    ASSERT(r.body == NULL);
    ASSERT_EQ(client_sends(&c, "GET /after HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.body, "GET /after ? []");
    free(r.body);

    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

TEST_IMPL(http_pipelined)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                               "GET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
                               "GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                               "GET /4 HTTP/1.1\r\nHost: t\r\n\r\n"),
              0);
    for (int i = 1; i <= 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "GET /%d ? []", i);
        ASSERT_EQ(client_read(&c, &r, 0), 0);
        ASSERT_STR_EQ(r.body, want);
        ASSERT_STR_EQ(r.connection, i == 3 ? "close" : "");
        free(r.body);
    }
    /* Nothing after the request that asked to close. */
    ASSERT(client_sees_close(&c));
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

TEST_IMPL(http_connection_close)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);

    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "GET /x HTTP/1.1\r\nHost: t\r\n"
                               "Connection: close\r\n\r\n"),
              0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.connection, "close");
    free(r.body);
    ASSERT(client_sees_close(&c));
    close(c.fd);

    /* HTTP/1.0 closes unless asked to keep alive. */
    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "GET /y HTTP/1.0\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.connection, "close");
    free(r.body);
    ASSERT(client_sees_close(&c));
    close(c.fd);

    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "GET /z HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.connection, "keep-alive");
    free(r.body);
    ASSERT_EQ(client_sends(&c, "GET /z2 HTTP/1.0\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.body, "GET /z2 ? []");
    free(r.body);
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

static int expect_refusal(int port, const char *req, int status)
{
    client_t c;
    resp_t r;
    ASSERT_EQ(client_open(&c, port), 0);
    ASSERT_EQ(client_sends(&c, req), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, status);
    ASSERT_STR_EQ(r.connection, "close");
    ASSERT_EQ(r.content_length, (long)r.body_len);
    free(r.body);
    ASSERT(client_sees_close(&c));
    close(c.fd);
    return 0;
}

TEST_IMPL(http_malformed)
{
    server_t s;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_EQ(expect_refusal(s.port, "GARBAGE\r\n\r\n", 400), 0);
    ASSERT_EQ(expect_refusal(s.port, "GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400), 0);
    ASSERT_EQ(expect_refusal(s.port, "GET /a%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400), 0);
    ASSERT_EQ(expect_refusal(s.port, "GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400), 0);
    ASSERT_EQ(expect_refusal(s.port, "GET /a%4 HTTP/1.1\r\nHost: t\r\n\r\n", 400), 0);
    ASSERT_EQ(expect_refusal(s.port, "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
              0);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

TEST_IMPL(http_oversize)
{
    server_t s;
    ASSERT_EQ(server_start(&s, 0), 0);
    /* Refused on the declared length, before any body is read. */
    ASSERT_EQ(expect_refusal(s.port,
                             "POST /up HTTP/1.1\r\nHost: t\r\n"
                             "Content-Length: 2000000\r\n\r\n",
                             413),
              0);

    /* A chunked body counted as it arrives; the client may go on sending
     * after the reply, which the server drains. */
    client_t c;
    resp_t r;
    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"),
              0);
    static char chunk[65536 + 16];
    int head = snprintf(chunk, sizeof chunk, "%x\r\n", 65536);
    memset(chunk + head, 'y', 65536);
    memcpy(chunk + head + 65536, "\r\n", 2);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(client_send(&c, chunk, (size_t)head + 65536 + 2), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, 413);
    free(r.body);
    ASSERT(client_sees_close(&c));
    close(c.fd);

    /* Headers count too. */
    size_t n = 1100 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, 64, "GET / HTTP/1.1\r\nX-Big: ");
    memset(big + k, 'h', n);
    memcpy(big + k + n, "\r\n\r\n", 5);
    ASSERT_EQ(expect_refusal(s.port, big, 413), 0);
    free(big);

    /* Just under the limit is served. */
    size_t body = VG_HTTP_MAX_REQUEST - 200;
    char *ok = malloc(body + 128);
    k = snprintf(ok, 128, "POST /fit HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", body);
    memset(ok + k, 'b', body);
    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_send(&c, ok, (size_t)k + body), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.body_len, strlen("POST /fit ? []") + body);
    free(r.body);
    free(ok);
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

TEST_IMPL(http_big_reply)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_EQ(client_open(&c, s.port), 0);
    /* Pipelined big replies queue more than the server lets wait, so it
     * stops reading until they drain, then reads again. */
    char reqs[8 * 32] = "";
    for (int i = 0; i < 8; i++)
        strcat(reqs, "GET /big HTTP/1.1\r\n\r\n");
    ASSERT_EQ(client_sends(&c, reqs), 0);
    usleep(100 * 1000);
    for (int i = 0; i < 8; i++) {
        ASSERT_EQ(client_read(&c, &r, 0), 0);
        ASSERT_EQ(r.body_len, BIG_REPLY);
        ASSERT_EQ(r.content_length, BIG_REPLY);
        for (size_t j = 0; j < r.body_len; j += 4096)
            ASSERT_EQ(r.body[j], 'x');
        free(r.body);
    }
    ASSERT_EQ(client_sends(&c, "GET /more HTTP/1.1\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_STR_EQ(r.body, "GET /more ? []");
    free(r.body);
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

/* A client that half-closes after its request still gets the whole
 * reply, however long it takes to leave. */
TEST_IMPL(http_half_close)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_EQ(client_open_buf(&c, s.port, 4096), 0);
    ASSERT_EQ(client_sends(&c, "GET /big HTTP/1.1\r\n\r\n"), 0);
    ASSERT_EQ(shutdown(c.fd, SHUT_WR), 0);
    usleep(100 * 1000);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    ASSERT_EQ(r.body_len, BIG_REPLY);
    free(r.body);
    ASSERT(client_sees_close(&c));
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

TEST_IMPL(http_idle_timeout)
{
    server_t s;
    client_t c;
    resp_t r;
    ASSERT_EQ(server_start(&s, 200), 0);
    ASSERT_EQ(client_open(&c, s.port), 0);
    /* The timer restarts when the reply is written, so the close comes
     * no sooner than 200 ms after the request was sent. */
    double t0 = now_s();
    ASSERT_EQ(client_sends(&c, "GET /x HTTP/1.1\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c, &r, 0), 0);
    free(r.body);
    ASSERT(client_sees_close(&c));
    double waited = now_s() - t0;
    /* libuv timers count from the loop's cached time, which may lag. */
    ASSERT(waited >= 0.15 && waited < 10.0);
    close(c.fd);

    /* A half-sent request is no reason to stay either. */
    ASSERT_EQ(client_open(&c, s.port), 0);
    ASSERT_EQ(client_sends(&c, "GET /x HTT"), 0);
    ASSERT(client_sees_close(&c));
    close(c.fd);
    ASSERT_EQ(server_stop(&s), 0);
    return 0;
}

TEST_IMPL(http_stop_with_open_connections)
{
    server_t s;
    client_t c1, c2;
    resp_t r;
    ASSERT_EQ(server_start(&s, 0), 0);
    ASSERT_EQ(client_open(&c1, s.port), 0);
    ASSERT_EQ(client_sends(&c1, "GET /x HTTP/1.1\r\n\r\n"), 0);
    ASSERT_EQ(client_read(&c1, &r, 0), 0);
    free(r.body);
    ASSERT_EQ(client_open(&c2, s.port), 0);
    ASSERT_EQ(client_sends(&c2, "GET /half"), 0);
    usleep(50 * 1000); /* let the loop accept c2 */
    ASSERT_EQ(server_stop(&s), 0);
    ASSERT(client_sees_close(&c1));
    ASSERT(client_sees_close(&c2));
    close(c1.fd);
    close(c2.fd);
    return 0;
}

TEST_IMPL(http_start_errors)
{
    uv_loop_t loop;
    vg_http_t *h = (vg_http_t *)1, *h2;
    char err[256] = "";
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ASSERT_EQ(vg_http_start(&loop, "localhost", 0, echo_handler, NULL, &h, err, sizeof err),
              -EINVAL);
    ASSERT(h == NULL);
    ASSERT_STR_CONTAINS(err, "localhost");
    ASSERT_EQ(
        vg_http_start(&loop, "127.0.0.1", 70000, echo_handler, NULL, &h, err, sizeof err),
        -EINVAL);

    /* A port in use; the failed listener is freed when the loop runs. */
    ASSERT_EQ(vg_http_start(&loop, "::1", 0, echo_handler, NULL, &h, err, sizeof err), 0);
    int port = vg_http_port(h);
    ASSERT_GT(port, 0);
    ASSERT_EQ(vg_http_start(&loop, "::1", port, echo_handler, NULL, &h2, err, sizeof err),
              UV_EADDRINUSE);
    ASSERT(h2 == NULL);
    vg_http_stop(h);
    vg_http_stop(NULL);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    return 0;
}

TEST_IMPL(http_query_param)
{
    char v[16];
    const char *q = "limit=10&state=a%20b+c&empty=&flag&x%41=1";
    ASSERT_EQ(vg_http_query_param(q, "limit", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "10");
    ASSERT_EQ(vg_http_query_param(q, "state", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "a b c");
    ASSERT_EQ(vg_http_query_param(q, "empty", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "");
    ASSERT_EQ(vg_http_query_param(q, "flag", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "");
    ASSERT_EQ(vg_http_query_param(q, "xA", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "1");
    ASSERT_EQ(vg_http_query_param(q, "lim", v, sizeof v), VG_ENOTFOUND);
    ASSERT_EQ(vg_http_query_param("", "limit", v, sizeof v), VG_ENOTFOUND);
    ASSERT_EQ(vg_http_query_param("a=%zz", "a", v, sizeof v), -EINVAL);
    ASSERT_EQ(vg_http_query_param("a=%2", "a", v, sizeof v), -EINVAL);
    ASSERT_EQ(vg_http_query_param("a=0123456789abcdef", "a", v, sizeof v), VG_ETOOBIG);
    return 0;
}
