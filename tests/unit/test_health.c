/*
 * Unit tests of gateway/resilience/health.c over real loopback sockets and a
 * real libuv loop. The scripted upstream is a tiny HTTP server on the same loop:
 * for each probe it answers a canned response, stalls, or refuses (listener
 * closed). The script advances from the probe callback, which runs after the
 * previous probe was counted and before the next one starts, so probe k always
 * meets script[k] and the flag can be asserted after every single probe.
 * A listener with listen(fd, 0) whose one queue slot is taken makes a connect
 * hang, to exercise connect timeouts and stopping during a connect. Each test
 * ends by running the loop dry and asserting uv_loop_close() == 0 (no handle
 * left); valgrind and ASan runs check that nothing leaks.
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
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "resilience/health.h"
#include "resilience/registry.h"

#define OK200       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
#define E500        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#define MAX_RECORDS 32
#define GUARD_MS    10000 /* a test that needs longer is broken, not slow */

/* Script entries that are not responses (compared by address). */
static const char STALL[] = "<stall>";
static const char REFUSE[] = "<refuse>";

struct server;

struct server_conn {
    uv_tcp_t tcp;
    struct server *s;
    struct server_conn *next, *prev;
    uv_write_t write;
    char rbuf[512];
    char req[1024];
    size_t len;
    bool answered;
};

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening, listener_closing;
    int port;
    const char *reply; /* raw response, or STALL */
    unsigned accepted;
    char last_request[1024]; /* the last complete request head received */
    struct server_conn *conns;
};

struct record {
    bool ok;
    uint32_t unhealthy; /* the flag right after this probe was counted */
    char reason[128];
    uint64_t at;        /* uv_now when it was counted */
    const char *target; /* address text */
};

struct fixture {
    uv_loop_t loop;
    struct server srv;
    int blocked_fd, filler_fd; /* a listener whose accept queue is full, or -1 */
    int blocked_port;
    uv_timer_t guard;
    bool guard_fired, guard_is_deadline;
    struct mg_config *cfg;
    struct mg_health *h;
    bool stopped; /* mg_health_stop was called */
    bool stop_in_callback;
    struct mg_target_stats *stats; /* the watched target */
    const char *const *script;     /* script[k] serves probe k */
    size_t nscript;
    struct record rec[MAX_RECORDS];
    size_t nrec, stop_at;
    uint64_t started_at;
};

/* ---------------------------------------------------------------- server */

static void on_conn_close(uv_handle_t *handle)
{
    struct server_conn *c = handle->data;

    if (c->prev)
        c->prev->next = c->next;
    else
        c->s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void close_conn(struct server_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct server_conn *c = handle->data;

    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_conn_written(uv_write_t *req, int status)
{
    (void)status;
    close_conn(req->data);
}

static void answer(struct server_conn *c)
{
    struct server *s = c->s;

    c->answered = true;
    memcpy(s->last_request, c->req, c->len);
    s->last_request[c->len] = '\0';
    if (s->reply == STALL)
        return;
    if (s->reply[0] == '\0') {
        close_conn(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)s->reply, (unsigned)strlen(s->reply));
    c->write.data = c;
    assert_int_equal(uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_conn_written), 0);
}

static void on_conn_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct server_conn *c = stream->data;

    if (n < 0) {
        close_conn(c);
        return;
    }
    size_t room = sizeof c->req - 1 - c->len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(c->req + c->len, buf->base, take);
    c->len += take;
    if (!c->answered && memmem(c->req, c->len, "\r\n\r\n", 4) != NULL)
        answer(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *s = listener->data;
    struct server_conn *c = calloc(1, sizeof *c);

    assert_int_equal(status, 0);
    assert_non_null(c);
    c->s = s;
    assert_int_equal(uv_tcp_init(s->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read), 0);
    s->accepted++;
}

static void loopback(struct sockaddr_in *sin, int port)
{
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* Listens on 127.0.0.1:port (0 picks one and stores it). */
static void server_listen(struct server *s, int port)
{
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof ss;

    assert_false(s->listening);
    assert_false(s->listener_closing);
    loopback(&sin, port);
    assert_int_equal(uv_tcp_init(s->loop, &s->listener), 0);
    s->listener.data = s;
    assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 128, on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len), 0);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->listening = true;
}

static void on_listener_close(uv_handle_t *handle)
{
    struct server *s = handle->data;

    s->listener_closing = false;
}

static void server_refuse(struct server *s)
{
    if (!s->listening)
        return;
    s->listening = false;
    s->listener_closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
}

/* Sets what the next probe meets. */
static void server_apply(struct server *s, const char *entry)
{
    if (entry == REFUSE) {
        server_refuse(s);
        return;
    }
    if (!s->listening)
        server_listen(s, s->port);
    s->reply = entry;
}

/* A port whose connects hang: listen(fd, 0) holds one connection in the accept
 * queue; once `filler` takes that slot, Linux drops further SYNs. */
static void block_port(struct fixture *f)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;

    f->blocked_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->blocked_fd >= 0);
    loopback(&sin, 0);
    assert_int_equal(bind(f->blocked_fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(f->blocked_fd, 0), 0);
    assert_int_equal(getsockname(f->blocked_fd, (struct sockaddr *)&sin, &len), 0);
    f->blocked_port = ntohs(sin.sin_port);
    f->filler_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->filler_fd >= 0);
    assert_int_equal(connect(f->filler_fd, (struct sockaddr *)&sin, sizeof sin), 0);
}

/* --------------------------------------------------------------- fixture */

static void on_probe(void *ud, const struct mg_upstream_conf *up,
                     const struct mg_target_conf *target, bool ok, const char *reason)
{
    struct fixture *f = ud;

    (void)up;
    assert_true(f->nrec < MAX_RECORDS);
    struct record *r = &f->rec[f->nrec++];
    r->ok = ok;
    r->unhealthy = atomic_load(&f->stats->unhealthy);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    r->at = uv_now(&f->loop);
    r->target = target->address.text;
    if (f->script != NULL && f->nrec < f->nscript)
        server_apply(&f->srv, f->script[f->nrec]);
    if (f->nrec == f->stop_at)
        uv_stop(&f->loop);
    if (f->stop_in_callback && !f->stopped) {
        f->stopped = true;
        mg_health_stop(f->h);
    }
}

static void on_guard(uv_timer_t *timer)
{
    struct fixture *f = timer->data;

    f->guard_fired = true;
    uv_stop(&f->loop);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->guard), 0);
    f->guard.data = f;
    f->srv.loop = &f->loop;
    f->srv.reply = OK200;
    server_listen(&f->srv, 0);
    f->blocked_fd = f->filler_fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->h != NULL && !f->stopped)
        mg_health_stop(f->h);
    server_refuse(&f->srv);
    for (struct server_conn *c = f->srv.conns; c != NULL; c = c->next)
        close_conn(c);
    /* Drain with an unref'd guard: the loop ends as soon as every other handle
     * is closed, and a handle left open fails the test instead of hanging it. */
    f->guard_fired = false;
    uv_unref((uv_handle_t *)&f->guard);
    uv_timer_start(&f->guard, on_guard, GUARD_MS, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (f->guard_fired) {
        uv_print_all_handles(&f->loop, stderr);
        fail_msg("handles still open %d ms after stop", GUARD_MS);
    }
    uv_close((uv_handle_t *)&f->guard, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    if (f->blocked_fd >= 0)
        close(f->blocked_fd);
    if (f->filler_fd >= 0)
        close(f->filler_fd);
    if (f->cfg != NULL)
        mg_config_unref(f->cfg);
    free(f);
    return 0;
}

/* Loads a config with one upstream `name` whose targets are 127.0.0.1:ports
 * (0-terminated) and, when `health` is not NULL, health_check: {<health>}. */
static struct mg_config *load(const char *name, const int *ports, const char *health)
{
    char yaml[2048], targets[512] = "", err[512] = "";
    size_t n = 0;

    for (size_t i = 0; ports[i] != 0; i++)
        n += (size_t)snprintf(targets + n, sizeof targets - n, "%s{address: \"127.0.0.1:%d\"}",
                              i ? ", " : "", ports[i]);
    snprintf(yaml, sizeof yaml,
             "listen: [\"127.0.0.1:8080\"]\n"
             "upstreams:\n"
             "  %s:\n"
             "    targets: [%s]\n"
             "%s%s%s"
             "routes:\n"
             "  - name: r\n"
             "    upstream: %s\n",
             name, targets, health ? "    health_check: {" : "", health ? health : "",
             health ? "}\n" : "", name);
    struct mg_config *cfg =
        mg_config_load_string(yaml, strlen(yaml), "health.yaml", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s\n%s", err, yaml);
    return cfg;
}

static struct mg_target_stats *stats_of(const char *upstream, int port)
{
    char addr[64];

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    return mg_registry_target(upstream, addr);
}

/* Starts checking upstream `name` with one target on the test server. */
static void start_one(struct fixture *f, const char *name, const char *health)
{
    int ports[] = {f->srv.port, 0};

    f->cfg = load(name, ports, health);
    f->stats = stats_of(name, f->srv.port);
    uv_update_time(&f->loop);
    f->started_at = uv_now(&f->loop);
    f->h = mg_health_start(&f->loop, f->cfg);
    assert_non_null(f->h);
    mg_health_on_probe(f->h, on_probe, f);
}

/* Runs the loop until `n` probes have been counted in all. */
static void run_until(struct fixture *f, size_t n)
{
    f->stop_at = n;
    uv_timer_start(&f->guard, on_guard, GUARD_MS, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->guard);
    if (f->guard_fired)
        fail_msg("only %zu of %zu probes within %d ms", f->nrec, n, GUARD_MS);
    assert_int_equal(f->nrec, n);
}

/* Runs the loop for `ms`, whatever happens. */
static void run_for(struct fixture *f, uint64_t ms)
{
    uv_timer_start(&f->guard, on_guard, ms, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->guard_fired);
    f->guard_fired = false;
}

static void run_script(struct fixture *f, const char *const *script, size_t n)
{
    f->script = script;
    f->nscript = n;
    server_apply(&f->srv, script[f->nrec]);
    run_until(f, f->nrec + n);
}

static void expect_flags(struct fixture *f, const uint32_t *want, size_t n)
{
    assert_int_equal(f->nrec, n);
    for (size_t i = 0; i < n; i++) {
        if (f->rec[i].unhealthy != want[i])
            fail_msg("after probe %zu (%s): unhealthy=%u, want %u", i, f->rec[i].reason,
                     f->rec[i].unhealthy, want[i]);
    }
}

/* ----------------------------------------------------------------- tests */

static void test_no_health_check_returns_null(void **state)
{
    struct fixture *f = *state;
    int ports[] = {f->srv.port, 0};

    /* A target left down by an earlier config that had checks comes back. */
    struct mg_target_stats *st = stats_of("plain", f->srv.port);
    atomic_store(&st->unhealthy, 1);
    f->cfg = load("plain", ports, NULL);
    assert_null(mg_health_start(&f->loop, f->cfg));
    assert_int_equal(atomic_load(&st->unhealthy), 0);
    mg_health_stop(NULL);
    assert_int_equal(f->srv.accepted, 0);
}

static void test_request_line_host_and_first_probe(void **state)
{
    struct fixture *f = *state;
    char want[256];

    /* interval 2s: the first probe is staggered by at most 200ms, not a whole interval */
    start_one(f, "req", "path: /ready, interval: 2s, timeout: 1s");
    run_until(f, 1);
    snprintf(want, sizeof want,
             "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: moongate-health\r\n"
             "Connection: close\r\n\r\n",
             f->srv.port);
    assert_string_equal(f->srv.last_request, want);
    assert_int_equal(f->srv.accepted, 1);
    assert_true(f->rec[0].ok);
    assert_string_equal(f->rec[0].reason, "status 200");
    assert_int_equal(f->rec[0].unhealthy, 0);
    assert_true(f->rec[0].at - f->started_at < 1000);
}

static void test_flips_after_exact_thresholds(void **state)
{
    struct fixture *f = *state;
    static const char *const script[] = {OK200, OK200, E500, E500, E500, E500, OK200, OK200, OK200};
    static const uint32_t want[] = {0, 0, 0, 0, 1, 1, 1, 0, 0};

    start_one(f, "flip", "interval: 50ms, timeout: 1s, unhealthy_after: 3, healthy_after: 2");
    run_script(f, script, 9);
    expect_flags(f, want, 9);
    assert_string_equal(f->rec[4].reason, "status 500");
    assert_false(f->rec[5].ok);
    assert_true(f->rec[6].ok);
    assert_int_equal(f->srv.accepted, 9);
    /* one probe per interval, not back to back */
    for (size_t i = 1; i < 9; i++)
        assert_true(f->rec[i].at - f->rec[i - 1].at >= 25);
}

static void test_only_consecutive_results_count(void **state)
{
    struct fixture *f = *state;
    static const char *const script[] = {E500, E500,  OK200, E500,  E500,
                                         E500, OK200, E500,  OK200, OK200};
    static const uint32_t want[] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 0};

    start_one(f, "consec", "interval: 30ms, timeout: 1s, unhealthy_after: 3, healthy_after: 2");
    run_script(f, script, 10);
    expect_flags(f, want, 10);
}

static void test_refused_connect_is_failure(void **state)
{
    struct fixture *f = *state;
    static const char *const script[] = {OK200, REFUSE, REFUSE, REFUSE, OK200};
    static const uint32_t want[] = {0, 0, 1, 1, 0};

    start_one(f, "refused", "interval: 50ms, timeout: 1s, unhealthy_after: 2, healthy_after: 1");
    run_script(f, script, 5);
    expect_flags(f, want, 5);
    assert_false(f->rec[1].ok);
    assert_string_equal(f->rec[1].reason, "connect: connection refused");
    assert_int_equal(f->srv.accepted, 2);
}

static void test_timeout_is_failure(void **state)
{
    struct fixture *f = *state;
    static const char *const script[] = {STALL, STALL, OK200};
    static const uint32_t want[] = {0, 1, 0};

    /* timeout > interval: the next probe starts as soon as the stalled one ends */
    start_one(f, "stall", "interval: 50ms, timeout: 150ms, unhealthy_after: 2, healthy_after: 1");
    run_script(f, script, 3);
    expect_flags(f, want, 3);
    assert_string_equal(f->rec[0].reason, "timed out waiting for the response after 150ms");
    assert_true(f->rec[0].at - f->started_at >= 150);
    assert_true(f->rec[1].at - f->rec[0].at >= 150);
    assert_int_equal(f->srv.accepted, 3);
}

static void test_connect_timeout_is_failure(void **state)
{
    struct fixture *f = *state;
    int ports[] = {0, 0};

    block_port(f);
    ports[0] = f->blocked_port;
    f->cfg = load("hang", ports, "interval: 50ms, timeout: 100ms, unhealthy_after: 2");
    f->stats = stats_of("hang", f->blocked_port);
    f->h = mg_health_start(&f->loop, f->cfg);
    assert_non_null(f->h);
    mg_health_on_probe(f->h, on_probe, f);
    run_until(f, 2);
    assert_string_equal(f->rec[0].reason, "timed out connecting after 100ms");
    assert_int_equal(f->rec[0].unhealthy, 0);
    assert_int_equal(f->rec[1].unhealthy, 1);
}

static void test_statuses_and_malformed_heads(void **state)
{
    struct fixture *f = *state;
    static char huge[10000]; /* a valid 200 whose head is over the 8 KiB cap */
    static const char *const script[] = {
        "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\nbody until close",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", /* then closed: head incomplete */
        "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "", /* closed without a byte */
        huge,
    };
    static const bool ok[] = {true, true, true, false, false, false, false, false, false, false};
    static const char *const reason[] = {
        "status 302",
        "status 204",
        "status 200",
        "status 404",
        "status 101",
        "connection closed before the response head",
        "malformed response: ",
        "malformed response: ",
        "connection closed before the response head",
        "response head too large",
    };
    size_t n = (size_t)snprintf(huge, sizeof huge, "HTTP/1.1 200 OK\r\nX-Pad: ");

    memset(huge + n, 'a', 9000);
    memcpy(huge + n + 9000, "\r\n\r\n", 5);
    start_one(f, "statuses", "interval: 20ms, timeout: 1s, unhealthy_after: 100");
    run_script(f, script, 10);
    for (size_t i = 0; i < 10; i++) {
        if (f->rec[i].ok != ok[i] || strncmp(f->rec[i].reason, reason[i], strlen(reason[i])) != 0)
            fail_msg("probe %zu: ok=%d reason '%s', want ok=%d '%s...'", i, f->rec[i].ok,
                     f->rec[i].reason, ok[i], reason[i]);
    }
}

static void test_reload_keeps_down_target_down(void **state)
{
    struct fixture *f = *state;
    static const char *const script[] = {E500, OK200, OK200};

    start_one(f, "reload", "interval: 30ms, timeout: 1s, unhealthy_after: 1, healthy_after: 2");
    run_script(f, script, 1);
    assert_int_equal(atomic_load(&f->stats->unhealthy), 1);
    /* A new checker (as after a reload) starts counting afresh, from "down". */
    mg_health_stop(f->h);
    f->h = mg_health_start(&f->loop, f->cfg);
    assert_non_null(f->h);
    mg_health_on_probe(f->h, on_probe, f);
    assert_int_equal(atomic_load(&f->stats->unhealthy), 1);
    f->script = script;
    f->nscript = 3;
    server_apply(&f->srv, OK200);
    run_until(f, 3);
    assert_int_equal(f->rec[1].unhealthy, 1);
    assert_int_equal(f->rec[2].unhealthy, 0);
}

static void test_stop_with_probes_in_flight(void **state)
{
    struct fixture *f = *state;
    int ports[] = {0, 0, 0};

    block_port(f);
    ports[0] = f->srv.port;     /* connected, request sent, response never comes */
    ports[1] = f->blocked_port; /* connect pending */
    f->cfg = load("inflight", ports, "interval: 20ms, timeout: 10s");
    f->stats = stats_of("inflight", f->srv.port);
    server_apply(&f->srv, STALL);
    f->h = mg_health_start(&f->loop, f->cfg);
    assert_non_null(f->h);
    mg_health_on_probe(f->h, on_probe, f);
    run_for(f, 150);
    assert_int_equal(f->srv.accepted, 1);
    assert_string_equal(f->srv.last_request + strlen(f->srv.last_request) - 4, "\r\n\r\n");
    assert_int_equal(f->nrec, 0);
    mg_health_stop(f->h);
    f->stopped = true;
    run_for(f, 50); /* cancelled callbacks run: none may count a result */
    assert_int_equal(f->nrec, 0);
    assert_int_equal(atomic_load(&f->stats->unhealthy), 0);
}

static void test_stop_before_first_probe(void **state)
{
    struct fixture *f = *state;

    start_one(f, "early", "interval: 1s, timeout: 1s");
    mg_health_stop(f->h);
    f->stopped = true;
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the close callbacks run; no probe may start */
    assert_int_equal(f->srv.accepted, 0);
}

static void test_stop_from_probe_callback(void **state)
{
    struct fixture *f = *state;

    f->stop_in_callback = true;
    start_one(f, "cbstop", "interval: 20ms, timeout: 1s");
    run_for(f, 200);
    assert_true(f->stopped);
    assert_int_equal(f->nrec, 1);
}

static int group_setup(void **state)
{
    (void)state;
    mg_registry_init(1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mg_registry_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_health_check_returns_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_line_host_and_first_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flips_after_exact_thresholds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_consecutive_results_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_connect_is_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_is_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout_is_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statuses_and_malformed_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_down_target_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_probes_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_before_first_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_probe_callback, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
