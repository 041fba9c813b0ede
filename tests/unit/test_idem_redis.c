/* tests for gateway/idempotency/store_redis.c against a real redis-server that
 * each test starts on a free loopback port (and kills at teardown): the store
 * behaviours of test_idem_memory.c over a real libuv loop, the stored value's
 * layout that the Lua scripts rely on, the EVAL fallback after SCRIPT FLUSH,
 * AUTH/SELECT, two clients sharing one Redis, and the failure cases: server
 * killed mid-test (ERROR callbacks, no hang), server restarted (the client
 * reconnects by itself), a command timing out while the server is stopped
 * (ERROR exactly once, the late reply ignored and its lock released), and a
 * connection silent for too long being replaced.
 *
 * Skipped, with a message, only when redis-server is not installed. Waits are
 * bounded: each loop run has a guard timer, and an alarm kills a stuck test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <hiredis/hiredis.h>

#include "idempotency/key.h"
#include "idempotency/record.h"
#include "idempotency/store_redis.h"

extern char **environ;

#define OWNER_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define OWNER_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static const uint8_t FP1[MG_IDEM_FP_LEN] = {1, 2, 3};
static const uint8_t FP2[MG_IDEM_FP_LEN] = {9, 9, 9};

static unsigned scale = 1;   /* slower under valgrind */
static char redis_path[256]; /* "" when redis-server is not installed */
static volatile pid_t live_server;

/* ---- redis-server ---- */

struct server {
    pid_t pid;
    int port;
};

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static redisContext *sync_connect(int port, const char *password)
{
    struct timeval tv = {0, 200000};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;

    if (ctx == NULL || ctx->err) {
        redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, (struct timeval){2, 0});
    if (password != NULL) {
        r = redisCommand(ctx, "AUTH %s", password);
        freeReplyObject(r);
    }
    return ctx;
}

static bool server_answers(int port, const char *password)
{
    redisContext *ctx = sync_connect(port, password);
    redisReply *r;
    bool ok;

    if (ctx == NULL)
        return false;
    r = redisCommand(ctx, "PING");
    ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    redisFree(ctx);
    return ok;
}

/* Starts redis-server on port (a free one if 0), waits until it answers PING. */
static void server_start(struct server *s, int port, const char *password)
{
    char portstr[16];
    const char *argv[24] = {redis_path, "--port",     portstr,        "--bind",      "127.0.0.1",
                            "--save",   "",           "--appendonly", "no",          "--dir",
                            "/tmp",     "--loglevel", "warning",      "--daemonize", "no"};
    int argc = 15;
    posix_spawn_file_actions_t fa;

    s->port = port ? port : free_port();
    snprintf(portstr, sizeof portstr, "%d", s->port);
    if (password != NULL) {
        argv[argc++] = "--requirepass";
        argv[argc++] = password;
    }
    argv[argc] = NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawn(&s->pid, redis_path, &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    live_server = s->pid;
    for (int i = 0; i < 500; i++) { /* 5 s */
        if (server_answers(s->port, password))
            return;
        sleep_ms(10);
    }
    fail_msg("redis-server on port %d did not come up", s->port);
}

static void server_kill(struct server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL); /* SIGKILL also ends a SIGSTOPped server */
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    live_server = 0;
}

/* ---- loop helpers ---- */

struct fixture {
    uv_loop_t loop;
    struct server srv;
    struct mg_redis_conf conf;
    struct mg_idem_client *c;
};

struct call {
    struct mg_idem_req req;
    int calls;
    enum mg_idem_result result;
    uint64_t retry_after_ms;
    struct mg_idem_record *record;
};

static void on_guard(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until cond(arg) holds or ms pass; returns cond(arg). */
static bool run_until(struct fixture *f, bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_timer_t guard;
    bool expired = false;

    uv_timer_init(&f->loop, &guard);
    guard.data = &expired;
    /* Repeating: a guard that fires in the timers phase at the start of an
     * iteration (ms 0, or already overdue) would otherwise leave libuv polling
     * with no timeout. */
    uv_timer_start(&guard, on_guard, ms, 1);
    while (!(cond != NULL && cond(arg)) && !expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* runs the close */
    return cond != NULL && cond(arg);
}

static void run_for(struct fixture *f, uint64_t ms)
{
    run_until(f, NULL, NULL, ms);
}

static bool is_ready(void *arg)
{
    return mg_idem_redis_ready(arg);
}

static bool called(void *arg)
{
    return ((struct call *)arg)->calls > 0;
}

static void wait_ready(struct fixture *f, struct mg_idem_client *c)
{
    if (!run_until(f, is_ready, c, 5000 * scale))
        fail_msg("redis client not ready");
}

static void make_conf(struct mg_redis_conf *conf, int port, uint64_t timeout_ms)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&conf->address.addr;

    memset(conf, 0, sizeof *conf);
    conf->enabled = true;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    conf->address.addrlen = sizeof *in;
    conf->timeout_ms = timeout_ms * scale;
}

static int setup(void **state)
{
    struct fixture *f;

    if (redis_path[0] == '\0')
        skip();
    f = calloc(1, sizeof *f);
    alarm(120 * scale);
    server_start(&f->srv, 0, NULL);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    make_conf(&f->conf, f->srv.port, 300);
    f->c = mg_idem_redis_open(&f->loop, &f->conf);
    wait_ready(f, f->c);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    mg_idem_client_close(f->c);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    server_kill(&f->srv);
    free(f);
    alarm(0);
    return 0;
}

/* ---- operations ---- */

static void on_done(struct mg_idem_req *req)
{
    struct call *c = req->data;

    c->calls++;
    c->result = req->result;
    c->retry_after_ms = req->retry_after_ms;
    mg_idem_record_unref(c->record);
    c->record = req->record;
}

static void call_init(struct call *c)
{
    mg_idem_record_unref(c->record);
    memset(c, 0, sizeof *c);
    c->req.data = c;
}

static enum mg_idem_result wait_call(struct fixture *f, struct call *c)
{
    assert_int_equal(c->calls, 0); /* rule 2: never before the call returns */
    if (!run_until(f, called, c, 5000 * scale))
        fail_msg("no callback");
    run_for(f, 0);
    assert_int_equal(c->calls, 1);
    return c->result;
}

static enum mg_idem_result begin_on(struct fixture *f, struct mg_idem_client *cl, struct call *c,
                                    const char *key, const uint8_t *fp, uint64_t lock_ttl,
                                    const char *owner)
{
    call_init(c);
    assert_int_equal(mg_idem_begin(cl, &c->req, key, strlen(key), fp, lock_ttl, owner, on_done), 0);
    return wait_call(f, c);
}

static enum mg_idem_result begin(struct fixture *f, struct call *c, const char *key,
                                 const uint8_t *fp, uint64_t lock_ttl, const char *owner)
{
    return begin_on(f, f->c, c, key, fp, lock_ttl, owner);
}

static enum mg_idem_result complete_on(struct fixture *f, struct mg_idem_client *cl,
                                       const char *key, const char *owner,
                                       struct mg_idem_record *rec, uint64_t ttl)
{
    struct call c = {0};
    enum mg_idem_result r;

    call_init(&c);
    assert_int_equal(mg_idem_complete(cl, &c.req, key, strlen(key), owner, rec, ttl, on_done), 0);
    r = wait_call(f, &c);
    call_init(&c);
    return r;
}

static enum mg_idem_result release(struct fixture *f, const char *key, const char *owner)
{
    struct call c = {0};

    call_init(&c);
    assert_int_equal(mg_idem_release(f->c, &c.req, key, strlen(key), owner, on_done), 0);
    return wait_call(f, &c);
}

static struct mg_idem_record *sample_record(uint16_t status, const uint8_t *fp)
{
    struct mg_idem_record *r = mg_idem_record_new(status, fp, 4096);

    assert_int_equal(mg_idem_record_add_header(r, "Content-Type", 12, "application/json", 16), 0);
    assert_int_equal(mg_idem_record_append_body(r, "{\"id\":42}", 9), 0);
    return r;
}

static void complete_sample(struct fixture *f, const char *key, const char *owner, uint64_t ttl)
{
    struct mg_idem_record *rec = sample_record(201, FP1);

    assert_int_equal(complete_on(f, f->c, key, owner, rec, ttl), MG_IDEM_OK);
    mg_idem_record_unref(rec);
}

static void assert_sample(const struct mg_idem_record *r)
{
    const char *n, *v;
    size_t nl, vl, cursor = 0, blen;
    const uint8_t *body;

    assert_non_null(r);
    assert_int_equal(mg_idem_record_state(r), MG_IDEM_REC_DONE);
    assert_int_equal(mg_idem_record_status(r), 201);
    assert_true(mg_idem_record_next_header(r, &cursor, &n, &nl, &v, &vl));
    assert_memory_equal(n, "Content-Type", 12);
    assert_memory_equal(v, "application/json", 16);
    body = mg_idem_record_body(r, &blen);
    assert_int_equal(blen, 9);
    assert_memory_equal(body, "{\"id\":42}", 9);
}

static struct mg_idem_redis_stats stats_of(struct mg_idem_client *c)
{
    struct mg_idem_redis_stats st;

    mg_idem_redis_stats(c, &st);
    return st;
}

/* ---- behaviours ---- */

static void begin_complete_replay(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "mg:idem:t:k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    complete_sample(f, "mg:idem:t:k1", OWNER_A, 60000);
    assert_int_equal(begin(f, &c, "mg:idem:t:k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_sample(c.record);
    assert_int_equal(begin(f, &c, "mg:idem:t:k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH);
    assert_null(c.record);
    assert_int_equal(release(f, "mg:idem:t:k1", OWNER_A), MG_IDEM_LOST); /* done: kept */
    assert_int_equal(begin(f, &c, "mg:idem:t:k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    call_init(&c);
}

static void in_flight_mismatch_and_release(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    assert_true(c.retry_after_ms > 50000 && c.retry_after_ms <= 60000);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH);
    assert_int_equal(release(f, "k1", OWNER_B), MG_IDEM_LOST);
    assert_int_equal(release(f, "k1", OWNER_A), MG_IDEM_OK);
    assert_int_equal(release(f, "k1", OWNER_A), MG_IDEM_LOST);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_STARTED);
    call_init(&c);
}

static void value_layout_matches_the_scripts(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    redisContext *ctx = sync_connect(f->srv.port, NULL);
    redisReply *r;

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    r = redisCommand(ctx, "GET k1");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, MG_IDEM_RECORD_HEAD);
    assert_memory_equal(r->str, "MGI1I" OWNER_A, 37);
    freeReplyObject(r);
    r = redisCommand(ctx, "PTTL k1");
    assert_true(r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);
    complete_sample(f, "k1", OWNER_A, 30000);
    r = redisCommand(ctx, "GET k1");
    assert_memory_equal(r->str, "MGI1D", 5);
    freeReplyObject(r);
    r = redisCommand(ctx, "PTTL k1");
    assert_true(r->integer > 20000 && r->integer <= 30000);
    freeReplyObject(r);
    redisFree(ctx);
    call_init(&c);
}

static void complete_is_lost_after_lock_expiry(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_record *rec = sample_record(201, FP1);

    assert_int_equal(begin(f, &c, "k1", FP1, 50, OWNER_A), MG_IDEM_STARTED);
    run_for(f, 120);
    assert_int_equal(complete_on(f, f->c, "k1", OWNER_A, rec, 60000), MG_IDEM_LOST);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    assert_int_equal(complete_on(f, f->c, "k1", OWNER_A, rec, 60000), MG_IDEM_LOST);
    assert_int_equal(complete_on(f, f->c, "k1", OWNER_B, rec, 60000), MG_IDEM_OK);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_DONE);
    mg_idem_record_unref(rec);
    call_init(&c);
}

static void records_expire_after_ttl(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    complete_sample(f, "k1", OWNER_A, 100);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    run_for(f, 200);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    call_init(&c);
}

static void too_big_is_reported_not_replayed(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_record *rec = mg_idem_record_new(202, FP1, 100);
    char big[200] = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_record_append_body(rec, big, sizeof big), -E2BIG);
    assert_int_equal(complete_on(f, f->c, "k1", OWNER_A, rec, 60000), MG_IDEM_OK);
    mg_idem_record_unref(rec);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_TOO_BIG);
    assert_int_equal(mg_idem_record_status(c.record), 202);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH);
    call_init(&c);
}

static void script_flush_falls_back_to_eval(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    redisContext *ctx = sync_connect(f->srv.port, NULL);
    uint64_t sent;

    freeReplyObject(redisCommand(ctx, "SCRIPT FLUSH"));
    redisFree(ctx);
    sent = stats_of(f->c).commands;
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(stats_of(f->c).commands, sent + 2); /* EVALSHA, NOSCRIPT, EVAL */
    sent = stats_of(f->c).commands;
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    assert_int_equal(stats_of(f->c).commands, sent + 1); /* EVAL cached the script */
    call_init(&c);
}

static void cancel_never_calls_back_and_releases_the_lock(void **state)
{
    struct fixture *f = *state;
    struct call c = {0}, d = {0};

    call_init(&c);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    mg_idem_cancel(&c.req);
    assert_false(mg_idem_pending(&c.req));
    struct mg_idem_redis_stats st0 = stats_of(f->c);
    assert_int_equal(st0.late_replies, 0);
    /* the STARTED reply arrives late; the store releases the lock it got */
    for (int i = 0; i < 100 && stats_of(f->c).late_replies == 0; i++)
        run_for(f, 10);
    assert_int_equal(stats_of(f->c).late_replies, 1);
    assert_int_equal(c.calls, 0);
    /* the release was sent before this begin, on the same connection */
    assert_int_equal(begin(f, &d, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    call_init(&d);
}

static void fire_and_forget(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_record *rec = sample_record(201, FP1);

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_release(f->c, NULL, "k1", 2, OWNER_A, NULL), 0);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_complete(f->c, NULL, "k1", 2, OWNER_B, rec, 60000, NULL), 0);
    mg_idem_record_unref(rec);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_DONE);
    assert_sample(c.record);
    assert_int_equal(stats_of(f->c).late_replies, 0);
    call_init(&c);
}

static void two_clients_share_the_dedup(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_client *other = mg_idem_redis_open(&f->loop, &f->conf);
    struct call c = {0};
    struct mg_idem_record *rec = sample_record(201, FP1);

    wait_ready(f, other);
    assert_int_equal(begin_on(f, f->c, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(begin_on(f, other, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    assert_int_equal(complete_on(f, f->c, "k1", OWNER_A, rec, 60000), MG_IDEM_OK);
    assert_int_equal(begin_on(f, other, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_sample(c.record);
    mg_idem_record_unref(rec);
    mg_idem_client_close(other);
    call_init(&c);
}

static void close_with_pending_ops_calls_nothing(void **state)
{
    struct fixture *f = *state;
    struct call a = {0}, b = {0};

    call_init(&a);
    call_init(&b);
    assert_int_equal(mg_idem_begin(f->c, &a.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    assert_int_equal(mg_idem_begin(f->c, &b.req, "k2", 2, FP1, 60000, OWNER_A, on_done), 0);
    mg_idem_client_close(f->c);
    assert_false(mg_idem_pending(&a.req));
    assert_false(mg_idem_pending(&b.req));
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls + b.calls, 0);
    f->c = mg_idem_redis_open(&f->loop, &f->conf); /* for teardown */
}

static void server_killed_gives_errors_without_hanging(void **state)
{
    struct fixture *f = *state;
    struct call a = {0}, b = {0};
    uint64_t t0;

    call_init(&a);
    assert_int_equal(mg_idem_begin(f->c, &a.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    server_kill(&f->srv); /* before the loop even writes the command */
    t0 = uv_hrtime();
    assert_int_equal(wait_call(f, &a), MG_IDEM_ERROR);
    assert_true((uv_hrtime() - t0) / 1000000 <= f->conf.timeout_ms + 1000 * scale);
    assert_false(mg_idem_redis_ready(f->c));
    /* while down: ERROR on the next iteration, no waiting for a timeout */
    call_init(&b);
    assert_int_equal(mg_idem_begin(f->c, &b.req, "k2", 2, FP1, 60000, OWNER_A, on_done), 0);
    assert_int_equal(b.calls, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.result, MG_IDEM_ERROR);
    assert_true(stats_of(f->c).disconnects >= 1);
    assert_true(stats_of(f->c).errors >= 2);
    run_for(f, 300); /* reconnect attempts against nothing: no crash, no hang */
    call_init(&a);
    call_init(&b);
}

static void server_restart_is_recovered(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    int port = f->srv.port;

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    server_kill(&f->srv);
    run_for(f, 200);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_ERROR);
    server_start(&f->srv, port, NULL); /* an empty Redis on the same port */
    wait_ready(f, f->c);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    complete_sample(f, "k1", OWNER_B, 60000);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_DONE);
    assert_true(stats_of(f->c).connects >= 2);
    call_init(&c);
}

static void down_at_open_then_recovers(void **state)
{
    struct fixture *f = *state;
    struct mg_redis_conf conf;
    struct server later = {0};
    int port = free_port();
    struct mg_idem_client *c2;
    struct call c = {0};

    make_conf(&conf, port, 300);
    c2 = mg_idem_redis_open(&f->loop, &conf);
    assert_int_equal(begin_on(f, c2, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_ERROR);
    server_start(&later, port, NULL);
    wait_ready(f, c2);
    assert_int_equal(begin_on(f, c2, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    mg_idem_client_close(c2);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    server_kill(&later);
    live_server = f->srv.pid;
    call_init(&c);
}

/* How long store_redis.c lets a busy connection stay silent. */
static uint64_t stall_limit(const struct fixture *f)
{
    uint64_t s = 4 * f->conf.timeout_ms;

    return s > MG_IDEM_REDIS_STALL_MIN_MS ? s : MG_IDEM_REDIS_STALL_MIN_MS;
}

static bool late_seen(void *arg)
{
    return stats_of(arg).late_replies > 0;
}

static void timeout_gives_one_error_and_ignores_the_late_reply(void **state)
{
    struct fixture *f = *state;
    struct call c = {0}, d = {0};
    uint64_t t0, waited;

    /* idle for longer than the stall limit first: silence while idle is no stall */
    run_for(f, stall_limit(f) + 100);
    kill(f->srv.pid, SIGSTOP);
    call_init(&c);
    t0 = uv_hrtime();
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    assert_int_equal(wait_call(f, &c), MG_IDEM_ERROR);
    waited = (uv_hrtime() - t0) / 1000000;
    assert_true(waited + 5 >= f->conf.timeout_ms);
    assert_int_equal(stats_of(f->c).timeouts, 1);
    kill(f->srv.pid, SIGCONT);
    assert_true(run_until(f, late_seen, f->c, 5000 * scale));
    run_for(f, 50);
    assert_int_equal(c.calls, 1);                    /* exactly once */
    assert_int_equal(stats_of(f->c).disconnects, 0); /* a short stall keeps the connection */
    /* the late STARTED was released, so the key is free again */
    assert_int_equal(begin(f, &d, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    call_init(&c);
    call_init(&d);
}

static void silent_connection_is_replaced(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    uint64_t t0 = uv_hrtime();
    uint64_t stall = stall_limit(f);

    kill(f->srv.pid, SIGSTOP);
    /* keep operations flowing while the server is stopped, past the stall limit */
    while ((uv_hrtime() - t0) / 1000000 < stall + 2 * f->conf.timeout_ms &&
           stats_of(f->c).disconnects == 0) {
        assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_ERROR);
    }
    assert_true(stats_of(f->c).disconnects >= 1);
    kill(f->srv.pid, SIGCONT);
    wait_ready(f, f->c);
    assert_int_equal(begin(f, &c, "k2", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    call_init(&c);
}

static void auth_and_select(void **state)
{
    struct fixture *f = *state;
    struct server secure = {0};
    struct mg_redis_conf conf;
    struct mg_idem_client *good, *bad;
    struct call c = {0};
    redisContext *ctx;
    redisReply *r;

    server_start(&secure, 0, "s3cret");
    make_conf(&conf, secure.port, 300);
    conf.password = "s3cret";
    conf.db = 3;
    good = mg_idem_redis_open(&f->loop, &conf);
    wait_ready(f, good);
    assert_int_equal(begin_on(f, good, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    ctx = sync_connect(secure.port, "s3cret");
    r = redisCommand(ctx, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(ctx, "EXISTS k1");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    redisFree(ctx);

    conf.password = "wrong";
    bad = mg_idem_redis_open(&f->loop, &conf);
    run_for(f, 300);
    assert_false(mg_idem_redis_ready(bad));
    assert_int_equal(begin_on(f, bad, &c, "k2", FP1, 60000, OWNER_A), MG_IDEM_ERROR);
    mg_idem_client_close(good);
    mg_idem_client_close(bad);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    server_kill(&secure);
    live_server = f->srv.pid;
    call_init(&c);
}

/* ---- main ---- */

static void on_alarm(int sig)
{
    static const char msg[] = "test_idem_redis: a test took too long, or was killed\n";

    (void)sig;
    if (live_server > 0)
        kill(live_server, SIGKILL);
    (void)!write(2, msg, sizeof msg - 1);
    _exit(3);
}

static void find_redis_server(void)
{
    const char *path = getenv("PATH");
    char dirs[4096];

    snprintf(dirs, sizeof dirs, "%s:/usr/bin:/usr/local/bin", path ? path : "");
    for (char *d = strtok(dirs, ":"); d != NULL; d = strtok(NULL, ":")) {
        snprintf(redis_path, sizeof redis_path, "%s/redis-server", d);
        if (access(redis_path, X_OK) == 0)
            return;
    }
    redis_path[0] = '\0';
}

int main(void)
{
    const char *preload = getenv("LD_PRELOAD");
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(begin_complete_replay),
        T(in_flight_mismatch_and_release),
        T(value_layout_matches_the_scripts),
        T(complete_is_lost_after_lock_expiry),
        T(records_expire_after_ttl),
        T(too_big_is_reported_not_replayed),
        T(script_flush_falls_back_to_eval),
        T(cancel_never_calls_back_and_releases_the_lock),
        T(fire_and_forget),
        T(two_clients_share_the_dedup),
        T(close_with_pending_ops_calls_nothing),
        T(server_killed_gives_errors_without_hanging),
        T(server_restart_is_recovered),
        T(down_at_open_then_recovers),
        T(timeout_gives_one_error_and_ignores_the_late_reply),
        T(silent_connection_is_replaced),
        T(auth_and_select),
#undef T
    };

    signal(SIGPIPE, SIG_IGN); /* as main.c does; hiredis writes with write(2) */
    signal(SIGALRM, on_alarm);
    signal(SIGTERM, on_alarm); /* a killed test takes its redis-server along */
    signal(SIGINT, on_alarm);
    if (preload != NULL && strstr(preload, "vgpreload") != NULL)
        scale = 10;
    if (getenv("MOONGATE_TIMEOUT_SCALE") != NULL && atoi(getenv("MOONGATE_TIMEOUT_SCALE")) > 1)
        scale *= (unsigned)atoi(getenv("MOONGATE_TIMEOUT_SCALE"));
    if (getenv("MG_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("MG_TEST_FILTER"));
    find_redis_server();
    if (redis_path[0] == '\0')
        fprintf(stderr, "test_idem_redis: redis-server is not installed: skipping "
                        "(apt-get install redis-server, or scripts/deps.sh)\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
