/*
 * Unit tests of gateway/net/tcp.c, the plain TCP transport, over real
 * loopback sockets and a real libuv loop: the contract of libuv's stream that
 * the layers above were written for (transport.h). A write's callback runs
 * exactly once and never inside write(); close() ends queued writes and a
 * pending connect with UV_ECANCELED from the closing phase, then on_closed;
 * read_stop() inside on_read stops the deliveries at once even though the
 * poll interest is dropped lazily; errors and EOF stop reading; nothing spins
 * while nobody reads. Each test ends with uv_loop_close() == 0.
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

#include "net/tcp.h"

#define GUARD_MS 10000 /* a test that needs longer is broken, not slow */

struct end {
    struct mg_tcp tcp;
    char buf[65536];
    size_t got;     /* bytes read */
    int reads;      /* on_read calls with bytes */
    int read_err;   /* the last negative status, 0 if none */
    int errs;       /* on_read calls with a negative status */
    int closed;     /* on_closed calls */
    int stop_after; /* read_stop inside on_read after this many reads (0: never) */
    bool close_in_read;
    unsigned char *sink; /* where read bytes go (copied), if set */
    size_t sink_cap;
};

static uv_loop_t loop;
static int lfd = -1;
static struct sockaddr_in laddr;
static bool in_call; /* inside a transport call made by the test */

static int writes_done, last_status;
static int connects_done, connect_status;

static void on_alloc(struct mg_transport *t, uv_buf_t *b)
{
    struct end *e = t->owner;
    *b = uv_buf_init(e->buf, sizeof e->buf);
}

static void on_read(struct mg_transport *t, ssize_t n)
{
    struct end *e = t->owner;
    if (n < 0) {
        e->read_err = (int)n;
        e->errs++;
    } else {
        if (e->sink && e->got + (size_t)n <= e->sink_cap)
            memcpy(e->sink + e->got, e->buf, (size_t)n);
        e->got += (size_t)n;
        e->reads++;
        if (e->stop_after && e->reads == e->stop_after)
            mg_transport_read_stop(t);
    }
    if (e->close_in_read)
        mg_transport_close(t);
}

static void on_closed(struct mg_transport *t)
{
    struct end *e = t->owner;
    e->closed++;
}

static void on_write(uv_write_t *req, int status)
{
    (void)req;
    assert_false(in_call); /* never inside write() or close() */
    writes_done++;
    last_status = status;
}

static void on_connect(uv_connect_t *req, int status)
{
    (void)req;
    assert_false(in_call);
    connects_done++;
    connect_status = status;
}

static void end_init(struct end *e)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(mg_tcp_init(&loop, &e->tcp, e), 0);
    e->tcp.t.on_alloc = on_alloc;
    e->tcp.t.on_read = on_read;
    e->tcp.t.on_closed = on_closed;
}

static void guard_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *count reaches want or ms pass; true if it did. */
static bool run_until(const int *count, int want, uint64_t ms)
{
    uv_timer_t guard;
    bool expired = false;
    uv_timer_init(&loop, &guard);
    guard.data = &expired;
    /* Repeating: a guard that fires in the timer phase of a uv_run() must
     * not leave the poll of that same run without a timeout. */
    uv_update_time(&loop);
    uv_timer_start(&guard, guard_cb, ms, ms);
    while (*count < want && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *count >= want;
}

static void run_for(uint64_t ms)
{
    int never = 0;
    run_until(&never, 1, ms);
}

/* A connected pair: *c connected through mg_tcp_connect, *s accepted. */
static void pair(struct end *c, struct end *s)
{
    static uv_connect_t req;
    end_init(c);
    end_init(s);
    connects_done = 0;
    in_call = true;
    assert_int_equal(mg_tcp_connect(&c->tcp, &req, (struct sockaddr *)&laddr, on_connect), 0);
    in_call = false;
    assert_int_equal(connects_done, 0);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(mg_tcp_accept(fd, &s->tcp), 0);
    assert_true(run_until(&connects_done, 1, GUARD_MS));
    assert_int_equal(connect_status, 0);
}

static void close_end(struct end *e)
{
    in_call = true;
    mg_transport_close(&e->tcp.t);
    in_call = false;
}

static void finish(struct end *a, struct end *b)
{
    close_end(a);
    close_end(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a->closed, 1);
    assert_int_equal(b->closed, 1);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    memset(&laddr, 0, sizeof laddr);
    laddr.sin_family = AF_INET;
    laddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof laddr;
    assert_int_equal(bind(lfd, (struct sockaddr *)&laddr, sizeof laddr), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&laddr, &len), 0);
    assert_int_equal(listen(lfd, 16), 0);
    writes_done = last_status = connects_done = connect_status = 0;
    in_call = false;
    return 0;
}

static void close_left(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int teardown(void **state)
{
    (void)state;
    close(lfd);
    /* A failed test may leave handles: close them rather than hang. */
    uv_run(&loop, UV_RUN_NOWAIT);
    int open = uv_loop_close(&loop);
    if (open) {
        uv_walk(&loop, close_left, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    assert_int_equal(open, 0);
    return 0;
}

static int send_all(struct end *e, const void *p, size_t n)
{
    static uv_write_t req;
    uv_buf_t b = uv_buf_init((char *)p, n);
    in_call = true;
    int rc = e->tcp.t.ops->write(&e->tcp.t, &req, &b, 1, on_write);
    in_call = false;
    return rc;
}

/* ------------------------------------------------------------------ tests */

static void test_write_callback_once_never_inside_write(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_int_equal(send_all(&c, "hello", 5), 0);
    assert_int_equal(writes_done, 0);
    assert_true(run_until(&writes_done, 1, GUARD_MS));
    assert_int_equal(last_status, 0);
    assert_int_equal(c.tcp.t.ops->queued(&c.tcp.t), 0);
    run_for(20);
    assert_int_equal(writes_done, 1);
    assert_int_equal(s.got, 5);
    finish(&c, &s);
}

/* A write the peer does not read stays queued: queued() counts it, try_write
 * takes nothing behind it, close() cancels it from the closing phase. */
static void test_close_cancels_queued_write(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    size_t n = 64u << 20;
    char *big = calloc(1, n);
    assert_non_null(big);
    assert_int_equal(send_all(&c, big, n), 0);
    run_for(30);
    size_t q = c.tcp.t.ops->queued(&c.tcp.t);
    assert_true(q > 0 && q < n);
    uv_buf_t b = uv_buf_init("x", 1);
    assert_int_equal(c.tcp.t.ops->try_write(&c.tcp.t, &b, 1), 0);
    assert_int_equal(writes_done, 0);
    close_end(&c);
    assert_int_equal(writes_done, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(writes_done, 1);
    assert_int_equal(last_status, UV_ECANCELED);
    assert_int_equal(c.closed, 1);
    close_end(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    free(big);
}

/* Many buffers, zero-length ones among them, sent across partial sends: the
 * peer gets every byte in order and the callback runs once. */
static void test_partial_writes_many_buffers(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    enum { NB = 24 };
    size_t total = 0, lens[NB];
    for (int i = 0; i < NB; i++) {
        lens[i] = i % 5 == 0 ? 0 : (size_t)(i + 1) * 97 * 1024;
        total += lens[i];
    }
    unsigned char *src = malloc(total), *dst = malloc(total);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < total; i++)
        src[i] = (unsigned char)(i * 31 + i / 4099);
    uv_buf_t bufs[NB];
    size_t off = 0;
    for (int i = 0; i < NB; i++) {
        bufs[i] = uv_buf_init((char *)src + off, lens[i]);
        off += lens[i];
    }
    static uv_write_t req;
    in_call = true;
    assert_int_equal(c.tcp.t.ops->write(&c.tcp.t, &req, bufs, NB, on_write), 0);
    in_call = false;
    memset(bufs, 0, sizeof bufs); /* the transport keeps its own copy */
    s.sink = dst;
    s.sink_cap = total;
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&writes_done, 1, GUARD_MS));
    assert_int_equal(last_status, 0);
    assert_int_equal(c.tcp.t.ops->queued(&c.tcp.t), 0);
    while (s.got < total && run_until(&s.reads, s.reads + 1, 2000))
        ;
    assert_int_equal(s.got, total);
    assert_memory_equal(src, dst, total);
    assert_int_equal(writes_done, 1);
    finish(&c, &s);
    free(src);
    free(dst);
}

/* read_stop() inside on_read: no byte is delivered after it, although the
 * socket keeps readable bytes; read_start() resumes with them. */
static void test_read_stop_inside_on_read(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    size_t n = 1u << 20;
    char *data = calloc(1, n);
    assert_int_equal(send_all(&c, data, n), 0);
    s.stop_after = 1;
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&s.reads, 1, GUARD_MS));
    run_for(50);
    assert_int_equal(s.reads, 1);
    s.stop_after = 0;
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    while (s.got < n && run_until(&s.reads, s.reads + 1, 2000))
        ;
    assert_int_equal(s.got, n);
    assert_int_equal(s.errs, 0);
    finish(&c, &s);
    free(data);
}

/* EOF stops reading; a read_start() after it meets the EOF again, once. */
static void test_eof_then_read_start(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    close_end(&c);
    assert_true(run_until(&s.errs, 1, GUARD_MS));
    assert_int_equal(s.read_err, UV_EOF);
    run_for(20);
    assert_int_equal(s.errs, 1);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&s.errs, 2, GUARD_MS));
    assert_int_equal(s.read_err, UV_EOF);
    run_for(20);
    assert_int_equal(s.errs, 2);
    close_end(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.closed, 1);
}

/* The peer resets while the reader is stopped (its interest still set, the
 * poll reports POLLERR and libuv stops the handle): the reset is delivered
 * once reading starts again, and a queued write fails instead of hanging. */
static void test_reset_while_stopped(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    mg_transport_read_stop(&s.tcp.t);
    struct linger lg = {1, 0};
    assert_int_equal(setsockopt(mg_tcp_fd(&c.tcp), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close_end(&c);
    run_for(50);
    assert_int_equal(s.errs, 0);
    assert_int_equal(s.reads, 0);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&s.errs, 1, GUARD_MS));
    assert_int_equal(s.read_err, UV_ECONNRESET);
    assert_int_equal(send_all(&s, "x", 1), 0);
    assert_true(run_until(&writes_done, 1, GUARD_MS));
    assert_true(last_status < 0);
    close_end(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.closed, 1);
}

static void test_close_inside_on_read(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    s.close_in_read = true;
    assert_int_equal(send_all(&c, "abc", 3), 0);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&s.closed, 1, GUARD_MS));
    assert_int_equal(s.reads, 1);
    close_end(&c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.closed, 1);
}

static struct end *close_in_write_cb;

static void on_write_close(uv_write_t *req, int status)
{
    on_write(req, status);
    if (close_in_write_cb)
        mg_transport_close(&close_in_write_cb->tcp.t);
}

/* close() inside a write callback: the writes behind it end cancelled. */
static void test_close_inside_write_callback(void **state)
{
    (void)state;
    struct end c, s;
    pair(&c, &s);
    static uv_write_t r1, r2;
    uv_buf_t b = uv_buf_init("abc", 3);
    close_in_write_cb = &c;
    in_call = true;
    assert_int_equal(c.tcp.t.ops->write(&c.tcp.t, &r1, &b, 1, on_write_close), 0);
    assert_int_equal(c.tcp.t.ops->write(&c.tcp.t, &r2, &b, 1, on_write), 0);
    in_call = false;
    assert_true(run_until(&c.closed, 1, GUARD_MS));
    close_in_write_cb = NULL;
    assert_int_equal(writes_done, 2);
    assert_true(last_status == UV_ECANCELED || last_status == 0);
    close_end(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* Writes made while connecting go out once connected, after the connect
 * callback; a refused connect reports through the callback, never at once. */
static void test_write_while_connecting_and_refused(void **state)
{
    (void)state;
    struct end c, s;
    static uv_connect_t req;
    end_init(&c);
    end_init(&s);
    in_call = true;
    assert_int_equal(mg_tcp_connect(&c.tcp, &req, (struct sockaddr *)&laddr, on_connect), 0);
    in_call = false;
    assert_int_equal(send_all(&c, "early", 5), 0);
    assert_int_equal(c.tcp.t.ops->queued(&c.tcp.t), 5);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_int_equal(mg_tcp_accept(fd, &s.tcp), 0);
    assert_int_equal(mg_transport_read_start(&s.tcp.t), 0);
    assert_true(run_until(&writes_done, 1, GUARD_MS));
    assert_int_equal(connects_done, 1);
    assert_int_equal(connect_status, 0);
    assert_int_equal(last_status, 0);
    assert_true(run_until(&s.reads, 1, GUARD_MS));
    assert_int_equal(s.got, 5);
    finish(&c, &s);

    /* refused: a port nobody listens on */
    struct end r;
    end_init(&r);
    struct sockaddr_in dead = laddr;
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    dead.sin_port = 0;
    assert_int_equal(bind(probe, (struct sockaddr *)&dead, sizeof dead), 0);
    socklen_t len = sizeof dead;
    getsockname(probe, (struct sockaddr *)&dead, &len);
    close(probe);
    connects_done = 0;
    writes_done = 0;
    in_call = true;
    assert_int_equal(mg_tcp_connect(&r.tcp, &req, (struct sockaddr *)&dead, on_connect), 0);
    in_call = false;
    assert_int_equal(send_all(&r, "x", 1), 0);
    assert_int_equal(connects_done, 0);
    assert_true(run_until(&connects_done, 1, GUARD_MS));
    assert_int_equal(connect_status, UV_ECONNREFUSED);
    close_end(&r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(writes_done, 1);
    assert_int_equal(last_status, UV_ECANCELED);
    assert_int_equal(r.closed, 1);
}

/* close() during a connect: the callback sees UV_ECANCELED, after close(). */
static void test_close_while_connecting(void **state)
{
    (void)state;
    struct end c;
    static uv_connect_t req;
    end_init(&c);
    in_call = true;
    assert_int_equal(mg_tcp_connect(&c.tcp, &req, (struct sockaddr *)&laddr, on_connect), 0);
    mg_transport_close(&c.tcp.t);
    in_call = false;
    assert_int_equal(connects_done, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(connects_done, 1);
    assert_int_equal(connect_status, UV_ECANCELED);
    assert_int_equal(c.closed, 1);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        close(fd);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_callback_once_never_inside_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_queued_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_writes_many_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_stop_inside_on_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof_then_read_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_while_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_inside_on_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_inside_write_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_while_connecting_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_connecting, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
