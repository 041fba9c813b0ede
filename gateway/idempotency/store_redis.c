/*
 * The Redis idempotency store: hiredis async on one worker loop, with per-op
 * deadlines, reconnect with backoff and EVALSHA scripts (store_redis.h).
 *
 * Invariants:
 *   - rs->ac is the live connection or NULL (down). A context being torn down by
 *     hiredis is never rs->ac: conn_lost() clears it first, so operations started
 *     meanwhile go the "down" path instead of into a dying context.
 *   - An op is in rs->timed (deadline order) only while hiredis holds it
 *     (op->in_redis), and it has not ended.
 *   - op->ended: the caller has had its one result (or there is no caller). An
 *     ended op still in_redis waits for its reply, which is then ignored (late);
 *     an op is freed exactly when it is ended and not in_redis.
 *
 *   - Sentinel mode (rs->sentinel set): rs->host/port is the master the
 *     sentinels last named (or announced with +switch-master); every connect
 *     after a failure asks them again first, and a connection counts as ready
 *     only once ROLE has answered "master" on it.
 *
 * Ownership: the store owns its ops (malloc'd: they can outlive the exchange
 * that started them), its hiredis context and its sentinel (sentinel.h);
 * hiredis's libuv adapter owns its poll handle and frees it in its own close
 * callback. The store struct is freed
 * by the base once the idle, retry and deadline handles have closed; by then
 * hiredis has run every callback it owed (redisAsyncFree runs them before it
 * returns, or right after the hiredis callback that called it).
 * Threads: everything runs on the store's loop thread.
 */
#include "idempotency/store_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "core/log.h"
#include "redis/hiredis_uv.h"
#include "idempotency/key.h"
#include "idempotency/record.h"
#include "idempotency/redis_state.h"
#include "redis/sentinel.h"
#include "idempotency/store_base.h"

enum { SCRIPT_BEGIN, SCRIPT_COMPLETE, SCRIPT_RELEASE, NSCRIPTS };

/* The record layout (record.h) fixes "MGI1" at 1..4, the state at 5 and the
 * owner at 6..37 (Lua's 1-based offsets). */
static const char *const script_text[NSCRIPTS] = {
    [SCRIPT_BEGIN] = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
                     "  return 1\n"
                     "end\n"
                     "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}\n",
    [SCRIPT_COMPLETE] = "local v = redis.call('GET', KEYS[1])\n"
                        "if v and string.sub(v, 1, 5) == 'MGI1I' and\n"
                        "   string.sub(v, 6, 37) == ARGV[1] then\n"
                        "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
                        "  return 1\n"
                        "end\n"
                        "return 0\n",
    [SCRIPT_RELEASE] = "local v = redis.call('GET', KEYS[1])\n"
                       "if v and string.sub(v, 1, 5) == 'MGI1I' and\n"
                       "   string.sub(v, 6, 37) == ARGV[1] then\n"
                       "  redis.call('DEL', KEYS[1])\n"
                       "  return 1\n"
                       "end\n"
                       "return 0\n",
};

/* User kinds first, with the values of enum mg_idem_op_kind; then the handshake. */
enum rop_kind { ROP_BEGIN, ROP_COMPLETE, ROP_RELEASE, ROP_AUTH, ROP_SELECT, ROP_ROLE, ROP_LOAD };

struct rop {
    struct mg_idem_op base;
    struct rstore *rs;
    enum rop_kind kind;
    TAILQ_ENTRY(rop) timed_link; /* in rs->timed */
    uint64_t deadline_ms;        /* loop time */
    bool timed, in_redis, ended;
    bool eval;  /* re-sent as EVAL after NOSCRIPT */
    bool quiet; /* started without a caller: its reply is not "late" */
    bool wait;  /* ROP_COMPLETE: stored; now WAITing for min_replicas_ack replicas */
    int script; /* ROP_LOAD: which one */
    char owner[MG_IDEM_OWNER_LEN];
    uint8_t lock[MG_IDEM_RECORD_HEAD]; /* ROP_BEGIN: the in-flight blob (holds fp) */
    uint64_t ttl_ms;
    struct mg_idem_record *rec; /* ROP_COMPLETE: kept for a NOSCRIPT re-send */
    size_t key_len;
    char key[];
};

TAILQ_HEAD(roplist, rop);

struct rstore {
    struct mg_idem_client base;
    char host[INET6_ADDRSTRLEN];
    int port;
    char *password; /* owned copy, or NULL */
    uint32_t db;
    uint64_t timeout_ms;
    char sha[NSCRIPTS][41]; /* hex SHA-1 of each script */

    redisAsyncContext *ac;        /* live connection or NULL */
    bool ready;                   /* handshake answered on ac */
    unsigned handshake_left;      /* handshake replies still expected on ac */
    bool in_outage;               /* from a lost or refused connection until a handshake
                                     succeeds: operations fail at once rather than wait
                                     on a connect attempt; one warning per outage */
    uint64_t backoff_ms;          /* next reconnect step */
    uint64_t rng;                 /* xorshift state for the backoff jitter */
    uint64_t last_reply_ms;       /* loop time of the last reply, or of going busy */
    uint64_t warned_ms;           /* loop time of the last error-reply warning */
    unsigned outstanding;         /* commands hiredis holds */
    uint64_t outage_ms;           /* loop time the current outage began (in_outage) */
    uint32_t min_acks;            /* redis.min_replicas_ack */
    struct mg_sentinel *sentinel; /* sentinel mode, else NULL */
    char *master_name;            /* sentinel mode: redis.sentinel.master (owned) */
    struct roplist timed;
    uv_timer_t retry;    /* reconnect backoff */
    uv_timer_t deadline; /* earliest op deadline */
    struct mg_idem_redis_stats stats;
};

static void do_connect(struct rstore *rs);
static void connect_now(struct rstore *rs);
static int send_op(struct rop *op);
static void on_deadline(uv_timer_t *t);

/* ---- ops ---- */

static struct rop *new_rop(struct rstore *rs, struct mg_idem_req *req, enum rop_kind kind,
                           const char *key, size_t key_len)
{
    struct rop *op = calloc(1, sizeof *op + key_len);

    if (op == NULL)
        mg_fatal("out of memory (idempotency op)");
    mg_idem__op_attach(&op->base, &rs->base, req,
                       kind <= ROP_RELEASE ? (enum mg_idem_op_kind)kind : MG_IDEM_OP_BEGIN);
    op->rs = rs;
    op->kind = kind;
    op->key_len = key_len;
    if (key_len > 0)
        memcpy(op->key, key, key_len);
    return op;
}

static void free_rop(struct rop *op)
{
    MG_ASSERT(!op->in_redis && !op->timed && !op->base.queued);
    mg_idem_record_unref(op->rec);
    mg_idem_record_unref(op->base.record);
    free(op);
}

static void arm_deadline(struct rstore *rs)
{
    struct rop *head = TAILQ_FIRST(&rs->timed);
    uint64_t now = uv_now(rs->base.loop);

    if (head == NULL) {
        uv_timer_stop(&rs->deadline);
        return;
    }
    uv_timer_start(&rs->deadline, on_deadline,
                   head->deadline_ms > now ? head->deadline_ms - now : 0, 0);
}

static void time_op(struct rop *op)
{
    struct rstore *rs = op->rs;
    bool first = TAILQ_EMPTY(&rs->timed);

    op->deadline_ms = uv_now(rs->base.loop) + rs->timeout_ms;
    TAILQ_INSERT_TAIL(&rs->timed, op, timed_link);
    op->timed = true;
    if (first)
        arm_deadline(rs);
}

static void untime(struct rop *op)
{
    if (!op->timed)
        return;
    TAILQ_REMOVE(&op->rs->timed, op, timed_link);
    op->timed = false;
    /* The timer stays armed: firing early for a removed head only re-arms. */
}

/* Ends op with res: delivers it to the caller if there is one (who may do
 * anything, close the store included). The caller of end_op must not touch op
 * afterwards unless it knows nothing else can free it. */
static void end_op(struct rop *op, enum mg_idem_result res)
{
    untime(op);
    op->ended = true;
    op->base.result = res;
    if (op->base.req != NULL && res == MG_IDEM_ERROR)
        op->rs->stats.errors++;
    if (op->kind <= ROP_RELEASE)
        mg_idem__deliver(&op->base);
}

/* ---- connection ---- */

static uint64_t stall_ms(const struct rstore *rs)
{
    uint64_t s = 4 * rs->timeout_ms;

    return s > MG_IDEM_REDIS_STALL_MIN_MS ? s : MG_IDEM_REDIS_STALL_MIN_MS;
}

static uint64_t next_random(struct rstore *rs)
{
    rs->rng ^= rs->rng << 13;
    rs->rng ^= rs->rng >> 7;
    rs->rng ^= rs->rng << 17;
    return rs->rng;
}

static void on_retry(uv_timer_t *t)
{
    do_connect(t->data);
}

static void schedule_reconnect(struct rstore *rs)
{
    uint64_t step = rs->backoff_ms;
    uint64_t delay = step / 2 + next_random(rs) % (step / 2 + 1);

    if (rs->base.closing)
        return;
    rs->backoff_ms =
        step * 2 < MG_IDEM_REDIS_BACKOFF_MAX_MS ? step * 2 : MG_IDEM_REDIS_BACKOFF_MAX_MS;
    uv_timer_start(&rs->retry, on_retry, delay, 0);
}

static void outage_begins(struct rstore *rs)
{
    if (!rs->in_outage)
        rs->outage_ms = uv_now(rs->base.loop);
    rs->in_outage = true;
}

/* ac is gone or going: forget it and plan the next attempt. Safe to call more
 * than once for the same context (connect failure, NULL replies, disconnect). */
static void conn_lost(struct rstore *rs, const redisAsyncContext *ac, const char *why)
{
    if (ac == NULL || rs->ac != ac)
        return;
    rs->ac = NULL;
    if (rs->ready)
        mg_redis_state_down();
    rs->ready = false;
    rs->stats.disconnects++;
    if (!rs->in_outage && !rs->base.closing)
        mg_warn("idempotency: redis %s:%d unavailable (%s); retrying with backoff", rs->host,
                rs->port, why);
    outage_begins(rs);
    schedule_reconnect(rs);
}

/* Our decision to give up on the connection: pending commands get their NULL
 * replies (now, or when the hiredis callback we are in returns). */
static void conn_drop(struct rstore *rs, const char *why)
{
    redisAsyncContext *ac = rs->ac;

    if (ac == NULL)
        return;
    conn_lost(rs, ac, why);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rstore *rs = ac->data;

    /* Never free the context here: hiredis keeps using it after we return. */
    if (status != REDIS_OK)
        conn_lost(rs, ac, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status; /* ac->err tells more */
    conn_lost(ac->data, ac, ac->errstr[0] ? ac->errstr : "disconnected");
}

static void send_handshake_op(struct rstore *rs, enum rop_kind kind, int script)
{
    struct rop *op = new_rop(rs, NULL, kind, NULL, 0);

    op->script = script;
    if (send_op(op) < 0) {
        op->ended = true;
        free_rop(op);
        return;
    }
    rs->handshake_left++;
}

/* Sentinel mode asks the sentinels first (on_master then connects): after a
 * failure the old address is the one most likely to be wrong. */
static void do_connect(struct rstore *rs)
{
    if (rs->base.closing || rs->ac != NULL)
        return;
    if (rs->sentinel != NULL)
        mg_sentinel_query(rs->sentinel);
    else
        connect_now(rs);
}

static void connect_now(struct rstore *rs)
{
    redisAsyncContext *ac;

    if (rs->base.closing || rs->ac != NULL)
        return;
    rs->stats.connects++;
    ac = redisAsyncConnect(rs->host, rs->port);
    if (ac == NULL)
        mg_fatal("out of memory (redisAsyncConnect)");
    if (ac->err || mg_hiredis_attach(ac, rs->base.loop) < 0) {
        if (!rs->in_outage)
            mg_warn("idempotency: redis %s:%d unavailable (%s); retrying with backoff", rs->host,
                    rs->port, ac->err ? ac->errstr : "cannot watch the socket");
        outage_begins(rs);
        redisAsyncFree(ac); /* no callbacks set yet: nothing runs */
        schedule_reconnect(rs);
        return;
    }
    ac->data = rs;
    /* Connect callback last: setting it arms the write watcher through the adapter. */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    rs->ac = ac;
    rs->ready = false;
    rs->handshake_left = 0;
    rs->last_reply_ms = uv_now(rs->base.loop);
    if (rs->password != NULL)
        send_handshake_op(rs, ROP_AUTH, 0);
    if (rs->db != 0)
        send_handshake_op(rs, ROP_SELECT, 0);
    if (rs->sentinel != NULL)
        send_handshake_op(rs, ROP_ROLE, 0); /* a sentinel's word is checked, not trusted */
    for (int i = 0; i < NSCRIPTS; i++)
        send_handshake_op(rs, ROP_LOAD, i);
}

/* ---- sending ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Sends op on the live connection. Returns 0 (op is in_redis, and timed unless
 * it has ended) or -1
 * (down, or hiredis refused: a context being freed or disconnecting). */
static int send_op(struct rop *op)
{
    struct rstore *rs = op->rs;
    const char *argv[7];
    size_t len[7];
    int argc = 0;
    char ttl[24], db[16];
    size_t blob_len = MG_IDEM_RECORD_HEAD;
    int script = op->kind == ROP_BEGIN      ? SCRIPT_BEGIN
                 : op->kind == ROP_COMPLETE ? SCRIPT_COMPLETE
                                            : SCRIPT_RELEASE;

#define ARG(p, n) (argv[argc] = (p), len[argc++] = (n))
    if (rs->ac == NULL)
        return -1;
    switch (op->kind) {
    case ROP_AUTH:
        ARG("AUTH", 4), ARG(rs->password, strlen(rs->password));
        break;
    case ROP_SELECT:
        snprintf(db, sizeof db, "%" PRIu32, rs->db);
        ARG("SELECT", 6), ARG(db, strlen(db));
        break;
    case ROP_ROLE:
        ARG("ROLE", 4);
        break;
    case ROP_LOAD:
        ARG("SCRIPT", 6), ARG("LOAD", 4);
        ARG(script_text[op->script], strlen(script_text[op->script]));
        break;
    case ROP_BEGIN:
    case ROP_COMPLETE:
    case ROP_RELEASE:
        if (op->wait) {
            /* The rest of the op's deadline, less a fifth so that the reply
             * (not our timer) ends the op: Redis answers WAIT with the count
             * reached when its own timeout passes. 0 would wait forever. */
            uint64_t now = uv_now(rs->base.loop);
            uint64_t left = op->deadline_ms > now ? op->deadline_ms - now : 0;

            snprintf(db, sizeof db, "%" PRIu32, rs->min_acks);
            snprintf(ttl, sizeof ttl, "%" PRIu64, left * 4 / 5 > 0 ? left * 4 / 5 : 1);
            ARG("WAIT", 4), ARG(db, strlen(db)), ARG(ttl, strlen(ttl));
            break;
        }
        if (op->eval)
            ARG("EVAL", 4), ARG(script_text[script], strlen(script_text[script]));
        else
            ARG("EVALSHA", 7), ARG(rs->sha[script], 40);
        ARG("1", 1), ARG(op->key, op->key_len);
        snprintf(ttl, sizeof ttl, "%" PRIu64, op->ttl_ms);
        if (op->kind == ROP_BEGIN) {
            ARG((const char *)op->lock, MG_IDEM_RECORD_HEAD), ARG(ttl, strlen(ttl));
        } else {
            ARG(op->owner, MG_IDEM_OWNER_LEN);
            if (op->kind == ROP_COMPLETE) {
                const uint8_t *blob = mg_idem_record_blob(op->rec, &blob_len);

                ARG((const char *)blob, blob_len), ARG(ttl, strlen(ttl));
            }
        }
        break;
    }
#undef ARG
    /* hiredis formats (copies) the arguments now, so the stack buffers are fine. */
    if (redisAsyncCommandArgv(rs->ac, on_reply, op, argc, argv, len) != REDIS_OK)
        return -1;
    op->in_redis = true;
    if (rs->outstanding++ == 0)
        rs->last_reply_ms = uv_now(rs->base.loop); /* silence counts from busy, not idle */
    rs->stats.commands++;
    /* A NOSCRIPT re-send keeps the first deadline; an op nobody waits for needs
     * none (the stall check still covers its connection). */
    if (!op->timed && !op->ended)
        time_op(op);
    return 0;
}

/* Starts an op nobody waits for (the release after a late or cancelled
 * STARTED). If it cannot be sent, the lock simply expires after lock_ttl. */
static void release_quietly(struct rstore *rs, const char *key, size_t key_len, const char *owner)
{
    struct rop *op = new_rop(rs, NULL, ROP_RELEASE, key, key_len);

    memcpy(op->owner, owner, MG_IDEM_OWNER_LEN);
    op->ended = op->quiet = true;
    if (send_op(op) < 0)
        free_rop(op);
}

/* ---- replies ---- */

static bool is_status(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STATUS && strcmp(r->str, s) == 0;
}

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static const uint8_t *op_fp(const struct rop *op)
{
    return op->lock + 37; /* record.h: the fingerprint offset */
}

static enum mg_idem_result begin_result(struct rop *op, const redisReply *r)
{
    const redisReply *val, *pttl;
    struct mg_idem_record *rec;
    enum mg_idem_result res;

    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        return MG_IDEM_STARTED;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER)
        return MG_IDEM_ERROR;
    val = r->element[0];
    pttl = r->element[1];
    rec = mg_idem_record_decode(val->str, (size_t)val->len);
    if (rec == NULL) {
        mg_warn("idempotency: redis key %.*s holds no valid record", (int)op->key_len, op->key);
        return MG_IDEM_ERROR;
    }
    res = mg_idem__classify(mg_idem_record_state(rec), mg_idem_record_fingerprint(rec), op_fp(op));
    if (res == MG_IDEM_DONE || res == MG_IDEM_TOO_BIG) {
        op->base.record = rec;
        return res;
    }
    if (res == MG_IDEM_IN_FLIGHT)
        op->base.retry_after_ms = pttl->integer > 0 ? (uint64_t)pttl->integer : 1;
    mg_idem_record_unref(rec);
    return res;
}

static enum mg_idem_result cas_result(const redisReply *r)
{
    if (r->type != REDIS_REPLY_INTEGER)
        return MG_IDEM_ERROR;
    return r->integer == 1 ? MG_IDEM_OK : MG_IDEM_LOST;
}

/* At most one line a second: a Redis refusing every command (OOM, a read-only
 * replica) would otherwise log once per request. */
static void log_error_reply(const struct rop *op, const redisReply *r)
{
    struct rstore *rs = op->rs;
    uint64_t now = uv_now(rs->base.loop);

    if (rs->warned_ms != 0 && now - rs->warned_ms < 1000)
        return;
    rs->warned_ms = now;
    if (r->type == REDIS_REPLY_ERROR)
        mg_warn("idempotency: redis answered %s", r->str);
    else
        mg_warn("idempotency: unexpected redis reply type %d (op %d)", r->type, op->kind);
}

static bool is_master_role(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
}

static void handshake_done(struct rstore *rs)
{
    char addr[INET6_ADDRSTRLEN + 8];
    uint64_t now = uv_now(rs->base.loop);

    rs->ready = true;
    rs->backoff_ms = MG_IDEM_REDIS_BACKOFF_MIN_MS;
    if (rs->in_outage)
        mg_info("idempotency: redis %s:%d available again after %" PRIu64 " ms", rs->host, rs->port,
                now - rs->outage_ms);
    snprintf(addr, sizeof addr, strchr(rs->host, ':') ? "[%s]:%d" : "%s:%d", rs->host, rs->port);
    if (rs->stats.ready_at != 0 && strcmp(addr, rs->stats.master) != 0)
        rs->stats.failovers++;
    snprintf(rs->stats.master, sizeof rs->stats.master, "%s", addr);
    rs->stats.ready_at = now;
    mg_redis_state_up(addr, rs->in_outage ? now - rs->outage_ms : 0);
    rs->in_outage = false;
}

/* One handshake reply; the connection is ready when all have answered. */
static void handshake_reply(struct rop *op, const redisReply *r)
{
    struct rstore *rs = op->rs;

    untime(op);
    op->ended = true;
    if (op->kind == ROP_ROLE) {
        if (!is_master_role(r)) {
            /* A sentinel that has not seen the failover yet, or a demoted
             * master: ask again after the backoff, never write to it. */
            MG_LOG(rs->in_outage ? MG_LOG_DEBUG : MG_LOG_WARN,
                   "idempotency: redis %s:%d is not a master (ROLE); asking the sentinels again",
                   rs->host, rs->port);
            rs->stats.role_refused++;
            conn_drop(rs, "not a master");
            return;
        }
    } else if (op->kind == ROP_LOAD) {
        if (r->type != REDIS_REPLY_STRING || strcmp(r->str, rs->sha[op->script]) != 0)
            mg_warn("idempotency: redis SCRIPT LOAD failed; falling back to EVAL");
    } else if (!is_status(r, "OK")) {
        /* Once per outage: a wrong password would otherwise log at every retry. */
        MG_LOG(rs->in_outage ? MG_LOG_DEBUG : MG_LOG_ERROR, "idempotency: redis %s failed: %s",
               op->kind == ROP_AUTH ? "AUTH" : "SELECT",
               r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        conn_drop(rs, "handshake refused");
        return;
    }
    if (rs->handshake_left > 0 && --rs->handshake_left == 0 && rs->ac != NULL)
        handshake_done(rs);
}

/* A reply for an op that has already ended (timed out or cancelled). */
static void late_reply(struct rop *op, const redisReply *r)
{
    if (!op->quiet)
        op->rs->stats.late_replies++;
    if (op->kind == ROP_BEGIN && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        release_quietly(op->rs, op->key, op->key_len, op->owner);
}

/* The master we write to has become a replica (a failover we have not heard
 * of, or an old master that came back): -READONLY, also when a script's write
 * is refused. */
static bool is_readonly(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strstr(r->str, "READONLY") != NULL;
}

/* The reply to the WAIT after a stored record: the record is stored either
 * way, so the result stays OK; fewer replicas than asked only narrows less
 * (counted, and logged at most once a second). */
static void wait_reply(struct rop *op, const redisReply *r)
{
    struct rstore *rs = op->rs;

    if (r->type != REDIS_REPLY_INTEGER || r->integer < (long long)rs->min_acks) {
        rs->stats.wait_short++;
        if (r->type != REDIS_REPLY_INTEGER)
            log_error_reply(op, r);
        else if (rs->warned_ms == 0 || uv_now(rs->base.loop) - rs->warned_ms >= 1000) {
            rs->warned_ms = uv_now(rs->base.loop);
            mg_warn("idempotency: a record reached %lld of min_replicas_ack %" PRIu32
                    " replicas in time",
                    r->integer, rs->min_acks);
        }
    }
    end_op(op, MG_IDEM_OK);
}

static void user_reply(struct rop *op, const redisReply *r)
{
    struct rstore *rs = op->rs;
    enum mg_idem_result res;

    if (op->wait) {
        wait_reply(op, r);
        return;
    }
    if (is_noscript(r) && !op->eval) {
        op->eval = true;
        if (send_op(op) == 0)
            return;
    }
    res = op->kind == ROP_BEGIN ? begin_result(op, r) : cas_result(r);
    if (res == MG_IDEM_OK && op->kind == ROP_COMPLETE && rs->min_acks > 0) {
        op->wait = true;
        if (send_op(op) == 0)
            return;             /* its reply ends the op */
        rs->stats.wait_short++; /* the connection is going: stored, not confirmed */
    }
    if (res == MG_IDEM_ERROR)
        log_error_reply(op, r);
    if (is_readonly(r) && rs->sentinel != NULL) {
        /* This op fails (it may not be replayed elsewhere: the caller decides);
         * the others on this connection fail as it closes. */
        rs->stats.readonly++;
        conn_drop(rs, "the master became a replica");
    }
    end_op(op, res);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *op = privdata;
    struct rstore *rs = op->rs;
    const redisReply *r = reply;

    op->in_redis = false;
    rs->outstanding--;
    if (r == NULL) { /* the context is going away */
        conn_lost(rs, ac, ac->errstr[0] ? ac->errstr : "connection closed");
        if (!op->ended)
            end_op(op, MG_IDEM_ERROR);
        free_rop(op);
        return;
    }
    rs->last_reply_ms = uv_now(rs->base.loop);
    if (op->ended)
        late_reply(op, r);
    else if (op->kind >= ROP_AUTH)
        handshake_reply(op, r);
    else
        user_reply(op, r);
    if (!op->in_redis) /* a NOSCRIPT re-send keeps it */
        free_rop(op);
}

/* ---- deadlines ---- */

static void on_deadline(uv_timer_t *t)
{
    struct rstore *rs = t->data;
    uint64_t now = uv_now(rs->base.loop);
    bool drop = false;
    struct rop *op;

    while ((op = TAILQ_FIRST(&rs->timed)) != NULL && op->deadline_ms <= now) {
        if (op->wait) {
            /* Stored already; only the replicas' count is missing. Redis ends a
             * WAIT on its own clock, up to a cron tick (100 ms at hz 10) after
             * the timeout we gave, so our deadline can win: short, not failed. */
            rs->stats.wait_short++;
            op->quiet = true; /* its late reply is not news */
            end_op(op, MG_IDEM_OK);
        } else if (op->kind >= ROP_AUTH) {
            rs->stats.timeouts++;
            untime(op);
            op->ended = true;
            drop = true; /* a handshake that cannot answer in time: start over */
        } else {
            rs->stats.timeouts++;
            end_op(op, MG_IDEM_ERROR); /* op is still in_redis: its reply frees it */
        }
        if (rs->base.closing)
            return;
    }
    if (rs->ac != NULL && rs->outstanding > 0 && now - rs->last_reply_ms >= stall_ms(rs))
        drop = true;
    if (drop)
        conn_drop(rs, "no reply within the timeout");
    if (!rs->base.closing)
        arm_deadline(rs);
}

/* ---- the store vtable ---- */

static int rs_start(struct mg_idem_client *s, struct mg_idem_req *req, const struct mg_idem_args *a)
{
    struct rstore *rs = (struct rstore *)s;
    struct rop *op = new_rop(rs, req, (enum rop_kind)a->kind, a->key, a->key_len);

    memcpy(op->owner, a->owner, MG_IDEM_OWNER_LEN);
    op->ttl_ms = a->ttl_ms;
    if (a->kind == MG_IDEM_OP_BEGIN)
        mg_idem_record_inflight_blob(op->lock, a->fp, a->owner);
    if (a->kind == MG_IDEM_OP_COMPLETE)
        op->rec = mg_idem_record_ref(a->rec);
    if (req == NULL)
        op->ended = op->quiet = true; /* nobody to tell */
    /* In an outage, a connect attempt may be under way: fail now, not after it. */
    if ((rs->ready || !rs->in_outage) && send_op(op) == 0)
        return 0;
    if (req == NULL) {
        free_rop(op);
        return 0;
    }
    /* Down: the caller hears ERROR on the next iteration, never inside this call. */
    op->ended = true;
    op->base.result = MG_IDEM_ERROR;
    rs->stats.errors++;
    mg_idem__defer(&op->base);
    return 0;
}

static void rs_cancel(struct mg_idem_op *base)
{
    struct rop *op = (struct rop *)base;

    if (base->queued) {
        mg_idem__unqueue(base);
        free_rop(op);
        return;
    }
    untime(op);
    op->ended = true; /* its reply is now late: a STARTED gets released then */
    if (!op->in_redis)
        free_rop(op);
}

static void rs_op_free(struct mg_idem_op *base)
{
    free_rop((struct rop *)base);
}

static void rs_close(struct mg_idem_client *s)
{
    struct rstore *rs = (struct rstore *)s;
    redisAsyncContext *ac = rs->ac;
    struct rop *op;

    while ((op = TAILQ_FIRST(&rs->timed)) != NULL) {
        if (op->base.req != NULL) {
            op->base.req->op = NULL;
            op->base.req = NULL;
        }
        untime(op);
        op->ended = true;
    }
    rs->ac = NULL;
    mg_redis_state_closed(rs->ready);
    rs->ready = false;
    if (ac != NULL)
        redisAsyncFree(ac); /* NULL replies free the ops hiredis holds */
    mg_sentinel_close(rs->sentinel);
    rs->sentinel = NULL;
    uv_timer_stop(&rs->retry);
    uv_timer_stop(&rs->deadline);
    mg_idem__close_handle((uv_handle_t *)&rs->retry);
    mg_idem__close_handle((uv_handle_t *)&rs->deadline);
}

static void rs_destroy(struct mg_idem_client *s)
{
    struct rstore *rs = (struct rstore *)s;

    free(rs->password);
    free(rs->master_name);
    free(rs);
}

static const struct mg_idem_client_vt redis_vt = {
    .start = rs_start,
    .cancel = rs_cancel,
    .op_free = rs_op_free,
    .close = rs_close,
    .destroy = rs_destroy,
};

/* ---- sentinel discovery (sentinel.h) ---- */

static void set_host(struct rstore *rs, const char *host, int port)
{
    snprintf(rs->host, sizeof rs->host, "%s", host);
    rs->port = port;
}

static void on_sentinel_master(void *ud, const char *host, int port)
{
    struct rstore *rs = ud;

    if (rs->base.closing || rs->ac != NULL)
        return; /* +switch-master got there first */
    set_host(rs, host, port);
    connect_now(rs);
}

static void on_sentinel_unknown(void *ud)
{
    struct rstore *rs = ud;

    if (rs->base.closing || rs->ac != NULL)
        return;
    if (!rs->in_outage)
        mg_warn("idempotency: no sentinel named the master '%s'; retrying with backoff",
                rs->master_name);
    outage_begins(rs);
    schedule_reconnect(rs);
}

/* A sentinel announced a failover: leave the old master now (its pending
 * operations end with ERROR, never re-sent: they may have run there) and
 * connect to the new one without waiting for the backoff. */
static void on_sentinel_switch(void *ud, const char *host, int port)
{
    struct rstore *rs = ud;

    if (rs->base.closing || (rs->ac != NULL && rs->port == port && strcmp(rs->host, host) == 0))
        return;
    conn_drop(rs, "failover announced by the sentinels");
    if (rs->base.closing) /* a caller closed the store from an ERROR callback */
        return;
    uv_timer_stop(&rs->retry);
    rs->backoff_ms = MG_IDEM_REDIS_BACKOFF_MIN_MS;
    set_host(rs, host, port);
    connect_now(rs);
}

static const struct mg_sentinel_ops sentinel_ops = {
    .on_master = on_sentinel_master,
    .on_unknown = on_sentinel_unknown,
    .on_switch = on_sentinel_switch,
};

/* ---- opening ---- */

static void script_sha(const char *text, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    /* SHA-1 only names the script, as Redis does; it protects nothing. */
    MG_ASSERT(EVP_Digest(text, strlen(text), d, &n, EVP_sha1(), NULL) == 1 && n == 20);
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[40] = '\0';
}

static void set_address(struct rstore *rs, const struct mg_address *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->addr;

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, rs->host, sizeof rs->host);
        rs->port = ntohs(in6->sin6_port);
    } else {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        MG_ASSERT(sa->sa_family == AF_INET);
        inet_ntop(AF_INET, &in->sin_addr, rs->host, sizeof rs->host);
        rs->port = ntohs(in->sin_port);
    }
}

struct mg_idem_client *mg_idem_redis_open(uv_loop_t *loop, const struct mg_redis_conf *conf)
{
    struct rstore *rs = calloc(1, sizeof *rs);

    if (rs == NULL)
        mg_fatal("out of memory (idempotency store)");
    if (!conf->sentinel.enabled)
        set_address(rs, &conf->address);
    else if ((rs->master_name = strdup(conf->sentinel.master)) == NULL)
        mg_fatal("out of memory (idempotency store)");
    if (conf->password != NULL && (rs->password = strdup(conf->password)) == NULL)
        mg_fatal("out of memory (idempotency store)");
    rs->db = conf->db;
    rs->timeout_ms = conf->timeout_ms ? conf->timeout_ms : 1;
    rs->min_acks = conf->min_replicas_ack;
    for (int i = 0; i < NSCRIPTS; i++)
        script_sha(script_text[i], rs->sha[i]);
    rs->backoff_ms = MG_IDEM_REDIS_BACKOFF_MIN_MS;
    rs->rng = (uint64_t)(uintptr_t)rs ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ull;
    TAILQ_INIT(&rs->timed);
    mg_idem__client_init(&rs->base, &redis_vt, loop);
    MG_ASSERT(uv_timer_init(loop, &rs->retry) == 0);
    mg_idem__handle_opened(&rs->base, (uv_handle_t *)&rs->retry);
    MG_ASSERT(uv_timer_init(loop, &rs->deadline) == 0);
    mg_idem__handle_opened(&rs->base, (uv_handle_t *)&rs->deadline);
    if (conf->sentinel.enabled)
        rs->sentinel = mg_sentinel_open(loop, &conf->sentinel, rs->timeout_ms, &sentinel_ops, rs);
    mg_redis_state_opened(rs->sentinel != NULL, rs->master_name);
    do_connect(rs);
    return &rs->base;
}

bool mg_idem_redis_ready(const struct mg_idem_client *s)
{
    return ((const struct rstore *)s)->ready;
}

void mg_idem_redis_stats(const struct mg_idem_client *s, struct mg_idem_redis_stats *out)
{
    const struct rstore *rs = (const struct rstore *)s;

    *out = rs->stats;
    out->ready = rs->ready;
}
