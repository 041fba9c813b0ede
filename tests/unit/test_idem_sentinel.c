/* tests for gateway/redis/sentinel.c, and for the parts of store_redis.c
 * that only a Sentinel deployment exercises (discovery, the ROLE check, a
 * master demoted under the store, min_replicas_ack's WAIT), against real
 * redis-server and redis-sentinel processes that each test starts on free
 * loopback ports and kills at teardown.
 *
 * Skipped, with a message, when redis-server or redis-sentinel is not
 * installed. Waits are bounded: each loop run has a guard timer, and an alarm
 * kills a stuck test (and its servers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
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
#include "redis/sentinel.h"
#include "idempotency/store_redis.h"

extern char **environ;

#define MASTER "mymaster"
#define OWNER  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define NPROCS 4

static const uint8_t FP[MG_IDEM_FP_LEN] = {4, 5, 6};

static unsigned scale = 1;
static char redis_path[256], sentinel_path[256];
static volatile pid_t live[NPROCS]; /* for the alarm handler */

/* ---- processes ---- */

struct proc {
    pid_t pid;
    int port;
};

struct fixture {
    uv_loop_t loop;
    char dir[64];
    struct proc master, replica, sentinel;
    struct mg_sentinel *s;
    struct mg_idem_client *c; /* the store under test, if any */
    struct mg_address addrs[3];
    const char *requirepass; /* the sentinel's, or NULL */
    struct mg_sentinel_conf sconf;
    /* what the ops saw */
    int masters, unknowns, switches;
    char host[64];
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

/* A port that refuses connections for as long as *fd stays open: bound, never
 * listening, so no other process (a parallel test's server) can take it the
 * way it could take a port free_port() found and let go. */
static int refusing_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;

    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* One command on a fresh blocking connection (test side only); NULL if down. */
static redisReply *sync_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {0, 300000};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = NULL;
    va_list ap;

    if (ctx != NULL && ctx->err == 0) {
        redisSetTimeout(ctx, (struct timeval){2, 0});
        va_start(ap, fmt);
        r = redisvCommand(ctx, fmt, ap);
        va_end(ap);
    }
    redisFree(ctx);
    return r;
}

static bool answers(int port)
{
    redisReply *r = sync_cmd(port, "PING");
    /* NOAUTH is an answer too: a sentinel with requirepass is up */
    bool ok = r != NULL && ((r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) ||
                            (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));

    freeReplyObject(r);
    return ok;
}

static void track(pid_t pid, bool on)
{
    for (int i = 0; i < NPROCS; i++) {
        if (on && live[i] == 0) {
            live[i] = pid;
            return;
        }
        if (!on && live[i] == pid) {
            live[i] = 0;
            return;
        }
    }
}

static void spawn(struct proc *p, const char **argv)
{
    posix_spawn_file_actions_t fa;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawn(&p->pid, argv[0], &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    track(p->pid, true);
    for (int i = 0; i < 500; i++) { /* 5 s */
        if (answers(p->port))
            return;
        sleep_ms(10);
    }
    fail_msg("%s on port %d did not come up", argv[0], p->port);
}

static void redis_start(struct proc *p, int replica_of)
{
    char port[16], master[16];
    const char *argv[24] = {redis_path, "--port",     port,           "--bind",      "127.0.0.1",
                            "--save",   "",           "--appendonly", "no",          "--dir",
                            "/tmp",     "--loglevel", "warning",      "--daemonize", "no"};
    int argc = 15;

    p->port = free_port();
    snprintf(port, sizeof port, "%d", p->port);
    if (replica_of) {
        snprintf(master, sizeof master, "%d", replica_of);
        argv[argc++] = "--replicaof";
        argv[argc++] = "127.0.0.1";
        argv[argc++] = master;
    }
    argv[argc] = NULL;
    spawn(p, argv);
}

/* A sentinel monitoring the fixture's master alone (quorum 1). down_after is
 * long: only SENTINEL FAILOVER moves the master in these tests. Start the
 * replica first, if any: a sentinel learns replicas from the master's INFO,
 * which it asks at once and then only every 10 s. */
static void sentinel_start(struct fixture *f)
{
    int master_port = f->master.port;

    char conf[128];
    const char *argv[] = {sentinel_path, conf, NULL};
    FILE *out;

    f->sentinel.port = free_port();
    snprintf(conf, sizeof conf, "%s/sentinel.conf", f->dir);
    out = fopen(conf, "w");
    assert_non_null(out);
    fprintf(out,
            "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\n"
            "sentinel resolve-hostnames no\nsentinel monitor " MASTER " 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds " MASTER " 30000\n"
            "sentinel failover-timeout " MASTER " 3000\n",
            f->sentinel.port, f->dir, master_port);
    if (f->requirepass != NULL)
        fprintf(out, "requirepass %s\n", f->requirepass);
    fclose(out);
    spawn(&f->sentinel, argv);
}

static void proc_kill(struct proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL); /* also ends a SIGSTOPped one */
    waitpid(p->pid, NULL, 0);
    track(p->pid, false);
    p->pid = 0;
}

static long sentinel_master_field(int port, const char *field)
{
    redisReply *r = sync_cmd(port, "SENTINEL MASTER " MASTER);
    long v = -1;

    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, field) == 0)
            v = atol(r->element[i + 1]->str);
    freeReplyObject(r);
    return v;
}

/* ---- loop ---- */

static void on_guard(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static bool run_until(struct fixture *f, bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_timer_t guard;
    bool expired = false;

    uv_timer_init(&f->loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, ms, 1); /* repeating: see test_idem_redis.c */
    while (!(cond != NULL && cond(arg)) && !expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return cond != NULL && cond(arg);
}

static void run_for(struct fixture *f, uint64_t ms)
{
    run_until(f, NULL, NULL, ms);
}

/* ---- the ops ---- */

static void on_master(void *ud, const char *host, int port)
{
    struct fixture *f = ud;

    f->masters++;
    snprintf(f->host, sizeof f->host, "%s", host);
    f->port = port;
}

static void on_unknown(void *ud)
{
    ((struct fixture *)ud)->unknowns++;
}

static void on_switch(void *ud, const char *host, int port)
{
    struct fixture *f = ud;

    f->switches++;
    snprintf(f->host, sizeof f->host, "%s", host);
    f->port = port;
}

static const struct mg_sentinel_ops ops = {on_master, on_unknown, on_switch};

static bool answered(void *arg)
{
    struct fixture *f = arg;

    return f->masters + f->unknowns > 0;
}

static bool switched(void *arg)
{
    return ((struct fixture *)arg)->switches > 0;
}

static bool subscribed(void *arg)
{
    struct mg_sentinel_stats st;

    mg_sentinel_stats(((struct fixture *)arg)->s, &st);
    return st.subscribed;
}

static bool not_subscribed(void *arg)
{
    return !subscribed(arg);
}

static void set_addr(struct mg_address *a, int port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&a->addr;

    memset(a, 0, sizeof *a);
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->addrlen = sizeof *in;
}

/* sconf over `n` ports (0: the fixture's sentinel). */
static void set_conf(struct fixture *f, const char *master, const int *ports, size_t n)
{
    for (size_t i = 0; i < n; i++)
        set_addr(&f->addrs[i], ports[i] ? ports[i] : f->sentinel.port);
    f->sconf = (struct mg_sentinel_conf){
        .enabled = true, .master = (char *)master, .addresses = f->addrs, .naddresses = n};
}

static void reset_seen(struct fixture *f)
{
    f->masters = f->unknowns = f->switches = 0;
    f->host[0] = '\0';
    f->port = 0;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f;

    if (redis_path[0] == '\0' || sentinel_path[0] == '\0')
        skip();
    f = calloc(1, sizeof *f);
    alarm(120 * scale);
    snprintf(f->dir, sizeof f->dir, "/tmp/mg-sentinel-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    redis_start(&f->master, 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[128];

    mg_sentinel_close(f->s);
    mg_idem_client_close(f->c);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    proc_kill(&f->sentinel);
    proc_kill(&f->replica);
    proc_kill(&f->master);
    snprintf(path, sizeof path, "%s/sentinel.conf", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    alarm(0);
    return 0;
}

/* ---- sentinel.c ---- */

static void query_asks_the_sentinels_in_turn(void **state)
{
    struct fixture *f = *state;
    int down;
    int ports[2] = {refusing_port(&down), 0}; /* the first one is down */
    struct mg_sentinel_stats st;

    sentinel_start(f);

    set_conf(f, MASTER, ports, 2);
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    mg_sentinel_query(f->s);
    mg_sentinel_query(f->s);                       /* joins the first */
    assert_int_equal(f->masters + f->unknowns, 0); /* never inside the call */
    assert_true(mg_sentinel_querying(f->s));
    assert_true(run_until(f, answered, f, 3000 * scale));
    run_for(f, 20);
    assert_int_equal(f->masters, 1);
    assert_int_equal(f->unknowns, 0);
    assert_string_equal(f->host, "127.0.0.1");
    assert_int_equal(f->port, f->master.port);
    assert_false(mg_sentinel_querying(f->s));
    mg_sentinel_stats(f->s, &st);
    assert_int_equal(st.queries, 1);
    assert_int_equal(st.answers, 1);
    /* the next query starts with the sentinel that answered: one asked */
    uint64_t asked = st.asked;
    reset_seen(f);
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 3000 * scale));
    mg_sentinel_stats(f->s, &st);
    assert_int_equal(f->masters, 1);
    assert_int_equal(st.asked, asked + 1);
    assert_int_equal(st.answers, 2);
    close(down);
}

static void unknown_master_name_ends_unknown(void **state)
{
    struct fixture *f = *state;
    int ports[1] = {0};

    sentinel_start(f);

    set_conf(f, "no-such-master", ports, 1);
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 3000 * scale));
    assert_int_equal(f->masters, 0);
    assert_int_equal(f->unknowns, 1);
}

/* A stopped sentinel accepts connections (the kernel does) but never answers:
 * only the per-sentinel timeout moves the query on. */
static void dead_and_hung_sentinels_end_unknown_in_bounded_time(void **state)
{
    struct fixture *f = *state;
    int down;
    int ports[2] = {refusing_port(&down), 0};
    uint64_t t0;

    sentinel_start(f);

    set_conf(f, MASTER, ports, 2);
    kill(f->sentinel.pid, SIGSTOP);
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 200 * scale, &ops, f);
    t0 = uv_now(&f->loop);
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 5000 * scale));
    assert_int_equal(f->unknowns, 1);
    assert_true(uv_now(&f->loop) - t0 < 2 * 200 * scale + 500);
    kill(f->sentinel.pid, SIGCONT);
    close(down);
}

static void close_with_a_query_running_calls_nothing(void **state)
{
    struct fixture *f = *state;
    int ports[1] = {0};

    sentinel_start(f);

    set_conf(f, MASTER, ports, 1);
    kill(f->sentinel.pid, SIGSTOP); /* connections are accepted, nothing answers */
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    mg_sentinel_query(f->s);
    run_for(f, 50); /* the query and the subscription wait for answers */
    mg_sentinel_close(f->s);
    f->s = NULL;
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->masters + f->unknowns + f->switches, 0);
    kill(f->sentinel.pid, SIGCONT);
}

static void replica_start_and_sync(struct fixture *f)
{
    redis_start(&f->replica, f->master.port);
    sentinel_start(f);
    for (int i = 0; i < 1000 && sentinel_master_field(f->sentinel.port, "num-slaves") != 1; i++)
        sleep_ms(10); /* the sentinel learns replicas from the master's INFO */
    assert_int_equal(sentinel_master_field(f->sentinel.port, "num-slaves"), 1);
    for (int i = 0; i < 1000; i++) {
        redisReply *r = sync_cmd(f->replica.port, "INFO replication");
        bool up = r != NULL && r->type == REDIS_REPLY_STRING &&
                  strstr(r->str, "master_link_status:up") != NULL;

        freeReplyObject(r);
        if (up)
            return;
        sleep_ms(10);
    }
    fail_msg("replica did not sync");
}

static void failover(struct fixture *f)
{
    redisReply *r = NULL;

    /* Refused until the sentinel has seen the replica's offset: retry a while. */
    for (int i = 0; i < 300; i++) {
        freeReplyObject(r);
        r = sync_cmd(f->sentinel.port, "SENTINEL FAILOVER " MASTER);
        if (r != NULL && r->type == REDIS_REPLY_STATUS)
            break;
        sleep_ms(20);
    }
    assert_true(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

static void switch_master_is_delivered(void **state)
{
    struct fixture *f = *state;
    int ports[1] = {0};

    replica_start_and_sync(f);
    set_conf(f, MASTER, ports, 1);
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    assert_true(run_until(f, subscribed, f, 3000 * scale));
    failover(f);
    assert_true(run_until(f, switched, f, 15000 * scale));
    assert_int_equal(f->switches, 1);
    assert_string_equal(f->host, "127.0.0.1");
    assert_int_equal(f->port, f->replica.port);
    /* and the sentinels now answer the new master */
    reset_seen(f);
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 3000 * scale));
    assert_int_equal(f->port, f->replica.port);
}

/* The subscribed sentinel dies and comes back: the subscription is made again. */
static void subscription_is_renewed(void **state)
{
    struct fixture *f = *state;
    int ports[1] = {0};
    char conf[128];
    const char *argv[] = {sentinel_path, conf, NULL};

    sentinel_start(f);

    set_conf(f, MASTER, ports, 1);
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    assert_true(run_until(f, subscribed, f, 3000 * scale));
    proc_kill(&f->sentinel);
    assert_true(run_until(f, not_subscribed, f, 3000 * scale));
    snprintf(conf, sizeof conf, "%s/sentinel.conf", f->dir);
    spawn(&f->sentinel, argv); /* same port: it is in the conf file */
    assert_true(run_until(f, subscribed, f, 5000 * scale));
}

static void password_is_sent_to_the_sentinels(void **state)
{
    struct fixture *f = *state;
    int ports[1] = {0};

    f->requirepass = "s3cret";
    sentinel_start(f);
    set_conf(f, MASTER, ports, 1);
    f->sconf.password = "s3cret";
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    assert_true(run_until(f, subscribed, f, 3000 * scale)); /* AUTH, then SUBSCRIBE */
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 3000 * scale));
    assert_int_equal(f->masters, 1);
    assert_int_equal(f->port, f->master.port);
    mg_sentinel_close(f->s);
    /* a wrong one: the query ends unknown, the subscription never confirms */
    reset_seen(f);
    f->sconf.password = "wrong";
    f->s = mg_sentinel_open(&f->loop, &f->sconf, 300 * scale, &ops, f);
    mg_sentinel_query(f->s);
    assert_true(run_until(f, answered, f, 3000 * scale));
    assert_int_equal(f->unknowns, 1);
    run_for(f, 400);
    assert_false(subscribed(f));
}

/* ---- store_redis.c in sentinel mode ---- */

struct call {
    struct mg_idem_req req;
    int calls;
    enum mg_idem_result result;
};

static void on_done(struct mg_idem_req *req)
{
    struct call *c = req->data;

    c->calls++;
    c->result = req->result;
    mg_idem_record_unref(req->record);
}

static bool called(void *arg)
{
    return ((struct call *)arg)->calls > 0;
}

static bool is_ready(void *arg)
{
    return mg_idem_redis_ready(arg);
}

static enum mg_idem_result begin(struct fixture *f, struct mg_idem_client *c, const char *key)
{
    struct call call = {.req.data = &call};

    assert_int_equal(mg_idem_begin(c, &call.req, key, strlen(key), FP, 5000, OWNER, on_done), 0);
    assert_true(run_until(f, called, &call, 5000 * scale));
    return call.result;
}

static enum mg_idem_result complete(struct fixture *f, struct mg_idem_client *c, const char *key)
{
    struct call call = {.req.data = &call};
    struct mg_idem_record *rec = mg_idem_record_new(201, FP, 4096);

    assert_int_equal(mg_idem_record_append_body(rec, "ok", 2), 0);
    assert_int_equal(mg_idem_complete(c, &call.req, key, strlen(key), OWNER, rec, 60000, on_done),
                     0);
    mg_idem_record_unref(rec);
    assert_true(run_until(f, called, &call, 5000 * scale));
    return call.result;
}

static struct mg_idem_client *open_store(struct fixture *f, uint32_t min_acks, bool sentinel)
{
    struct mg_redis_conf conf = {
        .enabled = true, .timeout_ms = 300 * scale, .min_replicas_ack = min_acks};
    int ports[1] = {0};

    set_conf(f, MASTER, ports, 1);
    if (sentinel)
        conf.sentinel = f->sconf;
    else
        set_addr(&conf.address, f->master.port);
    return mg_idem_redis_open(&f->loop, &conf);
}

static void store_connects_to_the_master_the_sentinels_name(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_client *c;
    struct mg_idem_redis_stats st;
    char want[64];

    sentinel_start(f);
    c = f->c = open_store(f, 0, true);

    assert_true(run_until(f, is_ready, c, 5000 * scale));
    assert_int_equal(begin(f, c, "k1"), MG_IDEM_STARTED);
    assert_int_equal(complete(f, c, "k1"), MG_IDEM_OK);
    assert_int_equal(begin(f, c, "k1"), MG_IDEM_DONE);
    mg_idem_redis_stats(c, &st);
    snprintf(want, sizeof want, "127.0.0.1:%d", f->master.port);
    assert_string_equal(st.master, want);
    assert_int_equal(st.failovers, 0);
}

/* The master is demoted under the store: the write gets ERROR (READONLY), the
 * store asks the sentinels again, ROLE refuses the same server, operations keep
 * failing fast; once it is a master again the store comes back by itself. */
static void demoted_master_is_refused_until_it_is_a_master_again(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_client *c;
    struct mg_idem_redis_stats st;
    redisReply *r;
    uint64_t t0;

    sentinel_start(f);
    c = f->c = open_store(f, 0, true);

    assert_true(run_until(f, is_ready, c, 5000 * scale));
    r = sync_cmd(f->master.port, "REPLICAOF 127.0.0.1 %d", free_port());
    freeReplyObject(r);
    assert_int_equal(begin(f, c, "d1"), MG_IDEM_ERROR);
    run_for(f, 400);
    mg_idem_redis_stats(c, &st);
    assert_int_equal(st.readonly, 1);
    assert_true(st.role_refused >= 1);
    assert_false(mg_idem_redis_ready(c));
    t0 = uv_now(&f->loop);
    assert_int_equal(begin(f, c, "d2"), MG_IDEM_ERROR);
    assert_true(uv_now(&f->loop) - t0 < 300 * scale + 100); /* never a hang */
    r = sync_cmd(f->master.port, "REPLICAOF NO ONE");
    freeReplyObject(r);
    assert_true(run_until(f, is_ready, c, 5000 * scale));
    assert_int_equal(begin(f, c, "d2"), MG_IDEM_STARTED);
}

static void store_follows_a_failover(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_client *c;
    struct mg_idem_redis_stats st;
    char want[64];

    replica_start_and_sync(f);
    c = f->c = open_store(f, 1, true);
    assert_true(run_until(f, is_ready, c, 5000 * scale));
    assert_int_equal(begin(f, c, "f1"), MG_IDEM_STARTED);
    assert_int_equal(complete(f, c, "f1"), MG_IDEM_OK); /* WAITed for the replica */
    run_for(f, 600);                                    /* the store's subscription is confirmed */
    failover(f);
    snprintf(want, sizeof want, "127.0.0.1:%d", f->replica.port);
    for (int i = 0; i < 300 * (int)scale; i++) {
        mg_idem_redis_stats(c, &st);
        if (st.ready && strcmp(st.master, want) == 0)
            break;
        run_for(f, 50);
    }
    assert_string_equal(st.master, want);
    assert_int_equal(st.failovers, 1);
    assert_int_equal(st.wait_short, 0);
    assert_int_equal(begin(f, c, "f1"), MG_IDEM_DONE); /* the record had replicated */
}

static void wait_short_of_replicas_is_still_ok(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_client *c;
    struct mg_idem_redis_stats st;
    uint64_t t0;

    replica_start_and_sync(f);
    c = f->c = open_store(f, 2, false); /* two acks asked, one replica exists */
    assert_true(run_until(f, is_ready, c, 5000 * scale));
    assert_int_equal(begin(f, c, "w1"), MG_IDEM_STARTED);
    t0 = uv_now(&f->loop);
    assert_int_equal(complete(f, c, "w1"), MG_IDEM_OK);
    /* within the op's deadline, plus slack for a loaded machine (the WAIT
     * itself is bounded by the deadline; a wait for the missing ack would not be) */
    assert_true(uv_now(&f->loop) - t0 < 300 * scale + 250);
    mg_idem_redis_stats(c, &st);
    assert_int_equal(st.wait_short, 1);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(begin(f, c, "w1"), MG_IDEM_DONE);
}

/* ---- main ---- */

static void on_alarm(int sig)
{
    static const char msg[] = "test_idem_sentinel: timed out or interrupted\n";

    (void)sig;
    for (int i = 0; i < NPROCS; i++)
        if (live[i] > 0)
            kill(live[i], SIGKILL);
    (void)!write(2, msg, sizeof msg - 1);
    _exit(3);
}

static void find(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    char dirs[4096];

    snprintf(dirs, sizeof dirs, "%s:/usr/bin:/usr/local/bin", path ? path : "");
    for (char *d = strtok(dirs, ":"); d != NULL; d = strtok(NULL, ":")) {
        snprintf(out, len, "%s/%s", d, name);
        if (access(out, X_OK) == 0)
            return;
    }
    out[0] = '\0';
}

int main(void)
{
    const char *preload = getenv("LD_PRELOAD");
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(query_asks_the_sentinels_in_turn),
        T(unknown_master_name_ends_unknown),
        T(dead_and_hung_sentinels_end_unknown_in_bounded_time),
        T(close_with_a_query_running_calls_nothing),
        T(switch_master_is_delivered),
        T(subscription_is_renewed),
        T(password_is_sent_to_the_sentinels),
        T(store_connects_to_the_master_the_sentinels_name),
        T(demoted_master_is_refused_until_it_is_a_master_again),
        T(store_follows_a_failover),
        T(wait_short_of_replicas_is_still_ok),
#undef T
    };

    signal(SIGPIPE, SIG_IGN); /* as main.c does; hiredis writes with write(2) */
    signal(SIGALRM, on_alarm);
    signal(SIGTERM, on_alarm);
    signal(SIGINT, on_alarm);
    if (preload != NULL && strstr(preload, "vgpreload") != NULL)
        scale = 10;
    if (getenv("MOONGATE_TIMEOUT_SCALE") != NULL && atoi(getenv("MOONGATE_TIMEOUT_SCALE")) > 1)
        scale *= (unsigned)atoi(getenv("MOONGATE_TIMEOUT_SCALE"));
    if (getenv("MG_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("MG_TEST_FILTER"));
    find("redis-server", redis_path, sizeof redis_path);
    find("redis-sentinel", sentinel_path, sizeof sentinel_path);
    if (redis_path[0] == '\0' || sentinel_path[0] == '\0')
        fprintf(stderr, "test_idem_sentinel: redis-server or redis-sentinel is not installed: "
                        "skipping (scripts/deps.sh installs them)\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
