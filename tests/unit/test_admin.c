/*
 * Unit tests of gateway/obs/admin.c over real sockets: the admin thread is
 * started on 127.0.0.1 with port 0, and a blocking client checks /healthz,
 * /metrics, /status (with and without hooks), 404/405/400/431, HEAD,
 * keep-alive with pipelining, publishing a new snapshot, and a clean stop
 * (valgrind and ASan runs check that nothing leaks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "obs/accesslog.h"
#include "obs/admin.h"
#include "obs/metrics.h"
#include "obs/textbuf.h"

#define YAML                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  orders:\n"                                                                                  \
    "    targets: [{address: \"127.0.0.1:9001\"}, {address: \"127.0.0.1:9002\", weight: 2}]\n"     \
    "routes:\n"                                                                                    \
    "  - name: orders-api\n"                                                                       \
    "    upstream: orders\n"                                                                       \
    "    match: {hosts: [api.example.com], paths: [/orders], methods: [GET, POST]}\n"

struct fixture {
    struct mg_config *cfg;
    struct mg_metrics *m;
    struct mg_admin *a;
    int port;
};

static struct mg_config *load(const char *yaml)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "a.yaml", err, sizeof(err));

    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static void loopback(struct mg_address *addr, int port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr->addr;

    memset(addr, 0, sizeof(*addr));
    addr->text = "127.0.0.1:0";
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->addrlen = sizeof(*sin);
}

static void target_stats(void *ud, const struct mg_config *cfg, size_t u, size_t t,
                         struct mg_target_snapshot *out)
{
    if (t == 1) {
        out->circuit = MG_CIRCUIT_OPEN;
        out->in_flight = 3;
        out->ewma = 0.25;
        out->health = MG_HEALTH_UNHEALTHY;
        out->failures = 5;
    }
}

static int start(void **state, bool with_hooks)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct mg_address addr;
    struct mg_admin_source src = {0};
    struct sockaddr_storage ss;
    char err[256];

    f->cfg = load(YAML);
    f->m = mg_metrics_new(f->cfg, 2);
    loopback(&addr, 0);
    src.cfg = f->cfg;
    src.metrics = f->m;
    if (with_hooks)
        src.hooks.target_stats = target_stats;
    f->a = mg_admin_start(&addr, &src, err, sizeof(err));
    if (f->a == NULL)
        fail_msg("%s", err);
    assert_int_equal(mg_admin_local_address(f->a, &ss), 0);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_true(f->port > 0);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return start(state, false);
}

static int setup_hooks(void **state)
{
    return start(state, true);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    mg_admin_stop(f->a);
    mg_metrics_unref(f->m);
    mg_config_unref(f->cfg);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- client */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

struct response {
    int status;
    char head[2048];
    char *body;
    size_t body_len;
};

/* Reads bytes into b until `pred` holds or the peer closes; returns false on
 * close. 5 s timeout. */
static bool fill(int fd, struct mg_textbuf *b)
{
    char chunk[4096];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 5000) != 1)
        fail_msg("timeout waiting for the admin server");
    n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0)
        return false;
    mg_textbuf_append(b, chunk, (size_t)n);
    return true;
}

/* Reads one response (Content-Length framed) from fd, using and consuming
 * leftover bytes in `in`. With head_only, no body is expected. */
static void read_response(int fd, struct mg_textbuf *in, struct response *r, bool head_only)
{
    char *end;
    size_t hl, cl = 0;
    const char *p;

    while (in->p == NULL || (end = strstr(in->p, "\r\n\r\n")) == NULL)
        if (!fill(fd, in))
            fail_msg("connection closed before a response head");
    hl = (size_t)(end - in->p) + 4;
    assert_true(hl < sizeof(r->head));
    memcpy(r->head, in->p, hl);
    r->head[hl] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    p = strcasestr(r->head, "\r\nContent-Length: ");
    assert_non_null(p);
    cl = strtoul(p + 18, NULL, 10);
    if (head_only)
        cl = 0;
    while (in->len < hl + cl)
        if (!fill(fd, in))
            fail_msg("connection closed inside a body");
    r->body = malloc(cl + 1);
    memcpy(r->body, in->p + hl, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    memmove(in->p, in->p + hl + cl, in->len - hl - cl);
    in->len -= hl + cl;
    in->p[in->len] = '\0';
}

/* One request on a fresh connection. */
static void request(int port, const char *req, struct response *r)
{
    int fd = dial(port);
    struct mg_textbuf in = MG_TEXTBUF_INIT;

    send_all(fd, req, strlen(req));
    read_response(fd, &in, r, strncmp(req, "HEAD ", 5) == 0);
    mg_textbuf_free(&in);
    close(fd);
}

static void get(int port, const char *path, struct response *r)
{
    char req[512];

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: admin\r\n\r\n", path);
    request(port, req, r);
}

static bool closed_by_peer(int fd)
{
    struct mg_textbuf b = MG_TEXTBUF_INIT;
    bool closed = false;

    for (int i = 0; i < 100 && !closed; i++)
        closed = !fill(fd, &b);
    mg_textbuf_free(&b);
    return closed;
}

/* ---------------------------------------------------------------- tests */

static void test_healthz(void **state)
{
    struct fixture *f = *state;
    struct response r;

    get(f->port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    assert_non_null(strstr(r.head, "Content-Type: text/plain"));
    assert_non_null(strstr(r.head, "Connection: keep-alive"));
    free(r.body);
    get(f->port, "/healthz?probe=1", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    struct response r;

    mg_metrics_request_done(f->m, 0, 0, 200, 3000000);
    mg_metrics_request_done(f->m, 1, 0, 200, 4000000);
    mg_metrics_request_done(f->m, 1, -1, 404, 100000);
    mg_metrics_error(f->m, 1, -1, MG_ERR_NO_ROUTE);
    get(f->port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "# TYPE moongate_requests_total counter\n"));
    assert_non_null(
        strstr(r.body, "\nmoongate_requests_total{route=\"orders-api\",code=\"200\"} 2\n"));
    assert_non_null(strstr(r.body, "\nmoongate_requests_total{route=\"\",code=\"404\"} 1\n"));
    assert_non_null(strstr(r.body, "\nmoongate_errors_total{route=\"\",error=\"no_route\"} 1\n"));
    assert_non_null(
        strstr(r.body, "\nmoongate_request_duration_seconds_sum{route=\"orders-api\"} 0.007\n"));
    assert_non_null(strstr(r.body, "\nmoongate_config_version "));
    assert_null(strstr(r.body, "moongate_circuit_state")); /* no hook */
    assert_null(strstr(r.body, "moongate_access_log_"));   /* no access log given */
    assert_int_equal(r.body[r.body_len - 1], '\n');
    free(r.body);
}

static void test_status_defaults(void **state)
{
    struct fixture *f = *state;
    struct response r;
    char want[256];

    get(f->port, "/status", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    snprintf(want, sizeof(want),
             "\"config\":{\"version\":%llu,\"path\":\"a.yaml\",\"loaded_at\":\"",
             (unsigned long long)f->cfg->version);
    assert_non_null(strstr(r.body, want));
    snprintf(want, sizeof(want), "\"loaded_at_unix\":%lld}", (long long)f->cfg->loaded_at);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "\"routes\":[{\"name\":\"orders-api\",\"match\":{\"hosts\":["
                                   "\"api.example.com\"],\"paths\":[\"/orders\"],\"methods\":["
                                   "\"GET\",\"POST\"]},\"upstream\":\"orders\""));
    assert_non_null(strstr(r.body, "{\"address\":\"127.0.0.1:9002\",\"weight\":2,\"circuit\":"
                                   "\"closed\",\"in_flight\":0,\"ewma\":0,\"health\":"
                                   "\"unknown\",\"failures\":0}"));
    free(r.body);
}

static void test_status_and_metrics_with_hooks(void **state)
{
    struct fixture *f = *state;
    struct response r;

    get(f->port, "/status", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "{\"address\":\"127.0.0.1:9001\",\"weight\":1,\"circuit\":"
                                   "\"closed\""));
    assert_non_null(strstr(r.body, "{\"address\":\"127.0.0.1:9002\",\"weight\":2,\"circuit\":"
                                   "\"open\",\"in_flight\":3,\"ewma\":0.25,\"health\":"
                                   "\"unhealthy\",\"failures\":5}"));
    free(r.body);
    get(f->port, "/metrics", &r);
    assert_non_null(strstr(r.body, "\nmoongate_circuit_state{upstream=\"orders\",target=\"127.0.0."
                                   "1:9002\"} 2\n"));
    assert_non_null(strstr(r.body, "\nmoongate_circuit_state{upstream=\"orders\",target=\"127.0.0."
                                   "1:9001\"} 0\n"));
    free(r.body);
}

static void test_unknown_path_and_method(void **state)
{
    struct fixture *f = *state;
    struct response r;

    get(f->port, "/nope", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"error\":\"not_found\",\"status\":404}\n");
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    free(r.body);
    get(f->port, "/metricsX", &r);
    assert_int_equal(r.status, 404);
    free(r.body);

    request(f->port, "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "\r\nAllow: GET, HEAD\r\n"));
    assert_string_equal(r.body, "{\"error\":\"method_not_allowed\",\"status\":405}\n");
    free(r.body);
    request(f->port, "DELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    free(r.body);
}

static void test_head(void **state)
{
    struct fixture *f = *state;
    struct response r;

    request(f->port, "HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Length: 3\r\n"));
    assert_int_equal(r.body_len, 0);
    free(r.body);
}

static void test_keep_alive_and_pipelining(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f->port);
    struct mg_textbuf in = MG_TEXTBUF_INIT;
    struct response r;
    const char *three = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                        "GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
                        "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";

    send_all(fd, three, strlen(three));
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    free(r.body);
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body[0], '{');
    free(r.body);
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "# HELP ", 7);
    free(r.body);

    /* the same connection again, byte by byte */
    const char *req = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    for (const char *p = req; *p; p++) {
        send_all(fd, p, 1);
        usleep(200);
    }
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 200);
    free(r.body);

    /* Connection: close is honoured */
    req = "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    send_all(fd, req, strlen(req));
    read_response(fd, &in, &r, false);
    assert_non_null(strstr(r.head, "Connection: close"));
    free(r.body);
    assert_true(closed_by_peer(fd));
    mg_textbuf_free(&in);
    close(fd);
}

static void test_http10(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f->port);
    struct mg_textbuf in = MG_TEXTBUF_INIT;
    struct response r;
    const char *req = "GET /healthz HTTP/1.0\r\n\r\n";

    send_all(fd, req, strlen(req));
    shutdown(fd, SHUT_WR); /* as `nc -N` does: the answer must still come */
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Connection: close"));
    free(r.body);
    assert_true(closed_by_peer(fd));
    mg_textbuf_free(&in);
    close(fd);
}

static void test_bad_requests_close(void **state)
{
    struct fixture *f = *state;
    struct response r;
    int fd;
    struct mg_textbuf in = MG_TEXTBUF_INIT;
    char *big;

    /* strict parser: Content-Length with Transfer-Encoding */
    const char *clte = "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    fd = dial(f->port);
    send_all(fd, clte, strlen(clte));
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.head, "Connection: close"));
    free(r.body);
    assert_true(closed_by_peer(fd));
    close(fd);
    mg_textbuf_reset(&in);

    request(f->port, "GARBAGE\r\n\r\n", &r);
    assert_int_equal(r.status, 400);
    free(r.body);

    /* a head over 8 KiB */
    big = malloc(20000);
    strcpy(big, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(big + strlen(big), 'a', 15000);
    strcpy(big + 30 + 15000, "\r\n\r\n");
    fd = dial(f->port);
    send_all(fd, big, strlen(big));
    read_response(fd, &in, &r, false);
    assert_int_equal(r.status, 431);
    free(r.body);
    close(fd);
    free(big);
    mg_textbuf_free(&in);

    /* the server is still fine */
    get(f->port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_publish_new_snapshot(void **state)
{
    struct fixture *f = *state;
    struct mg_config *c2 = load(YAML "  - {name: extra, upstream: orders, match: {paths: [/x]}}\n");
    struct mg_metrics *m2 = mg_metrics_next(f->m, c2);
    struct response r;
    char want[64];

    mg_metrics_request_done(f->m, 0, 0, 200, 1000);
    mg_admin_publish(f->a, c2, m2);
    mg_metrics_request_done(m2, 0, 0, 200, 1000);
    mg_metrics_config_reload(m2, true);
    mg_metrics_unref(m2); /* the admin holds its own references */
    mg_config_unref(c2);

    get(f->port, "/status", &r);
    snprintf(want, sizeof(want), "\"version\":%llu,", (unsigned long long)c2->version);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "\"name\":\"extra\""));
    free(r.body);
    get(f->port, "/metrics", &r);
    assert_non_null(
        strstr(r.body, "\nmoongate_requests_total{route=\"orders-api\",code=\"200\"} 2\n"));
    assert_non_null(
        strstr(r.body, "\nmoongate_request_duration_seconds_count{route=\"extra\"} 0\n"));
    assert_non_null(strstr(r.body, "\nmoongate_config_reloads_total{result=\"success\"} 1\n"));
    free(r.body);
    mg_admin_publish(f->a, f->cfg, NULL); /* metrics off: /metrics still answers */
    get(f->port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "moongate_requests_total"));
    assert_non_null(strstr(r.body, "moongate_config_version"));
    free(r.body);
}

static void test_stop_with_open_connections(void **state)
{
    struct fixture *f = *state;
    int idle = dial(f->port), partial = dial(f->port);

    send_all(partial, "GET /heal", 9);
    usleep(20000);
    mg_admin_stop(f->a); /* must close both and return */
    f->a = NULL;
    assert_true(closed_by_peer(idle));
    assert_true(closed_by_peer(partial));
    close(idle);
    close(partial);
}

static void test_bind_error(void **state)
{
    struct fixture *f = *state;
    struct mg_address addr;
    struct mg_admin_source src = {.cfg = f->cfg};
    char err[256] = "";

    loopback(&addr, f->port); /* taken by the fixture's admin */
    addr.text = "127.0.0.1:busy";
    assert_null(mg_admin_start(&addr, &src, err, sizeof(err)));
    assert_string_equal(err, "admin.listen 127.0.0.1:busy: address already in use");
}

static void test_access_log_series(void **state)
{
    struct mg_config *cfg = load(YAML);
    struct mg_address addr;
    char err[256];
    struct mg_accesslog *log = mg_accesslog_open("off", 1, err, sizeof(err));
    struct mg_admin_source src = {.cfg = cfg, .accesslog = log};
    struct mg_admin *a;
    struct sockaddr_storage ss;
    struct response r;

    loopback(&addr, 0);
    a = mg_admin_start(&addr, &src, err, sizeof(err));
    assert_non_null(a);
    mg_config_unref(cfg);
    mg_admin_local_address(a, &ss);
    get(ntohs(((struct sockaddr_in *)&ss)->sin_port), "/metrics", &r);
    assert_non_null(strstr(r.body, "\nmoongate_access_log_lines_total 0\n"));
    assert_non_null(strstr(r.body, "\nmoongate_access_log_dropped_total 0\n"));
    free(r.body);
    mg_admin_stop(a);
    mg_accesslog_close(log);
}

static int teardown_stopped(void **state)
{
    return teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_and_metrics_with_hooks, setup_hooks, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_path_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_new_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_open_connections, setup, teardown_stopped),
        cmocka_unit_test_setup_teardown(test_bind_error, setup, teardown),
        cmocka_unit_test(test_access_log_series),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
