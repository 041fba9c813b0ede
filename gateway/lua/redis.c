/*
 * gw.redis (see redis.h). One connection per VM (so per worker per config
 * generation), opened at the first call, pipelined by hiredis.
 *
 * Sentinel mode (redis.sentinel): the master's address comes from the
 * sentinels (redis/sentinel.h, as the idempotency store finds it), and a
 * connection is used only once ROLE has answered "master" on it. Until then
 * calls are parked (formatted, in order) and sent when it has; they fail when
 * no sentinel names a master, and time out like any call. A connection error,
 * a -READONLY reply or a +switch-master announcement drops the connection, so
 * the next call asks the sentinels again.
 *
 * Invariants: c->ready implies c->ac; a parked call is on c->parked and hiredis
 * does not hold it (redis_pending false) until it is sent.
 *
 * Ownership: struct redis_io is malloc'd and freed once hiredis has called
 * its callback (it always does: with NULL when the connection goes), its
 * timer is closed, and its task let go of it. Replies are copied into our
 * own tree (hiredis frees its reply after the callback).
 */
#include "lua/redis.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "redis/hiredis_uv.h"
#include "redis/sentinel.h"
#include "lua/state-t.h"
#include "lua/task.h"
#include "lua/ws-t.h"

#define MAX_ARGS 1024

struct rnode {
    int type; /* REDIS_REPLY_* */
    long long integer;
    char *str;
    size_t len;
    struct rnode *el;
    size_t n;
};

struct redis_io {
    struct mg_lua_io io;
    uv_timer_t timer;
    bool timer_open, redis_pending, released, finished;
    bool have_reply;
    struct rnode reply;
    char err[128];
    /* parked (sentinel mode, no confirmed master yet): the formatted command */
    struct mg_lua_redis *conn; /* non-NULL while parked */
    struct redis_io *next, **pprev;
    char *cmd;
    size_t cmdlen;
};

struct mg_lua_redis {
    struct mg_lua *vm;
    redisAsyncContext *ac;
    bool ready;                   /* commands may go on ac (sentinel mode: ROLE said master) */
    uint64_t retry_at;            /* loop ms: no connect before */
    struct mg_sentinel *sentinel; /* sentinel mode, else NULL */
    char host[INET6_ADDRSTRLEN];  /* sentinel mode: the master last named */
    int port;
    struct redis_io *parked, **parked_tail; /* sentinel mode: waiting for a master */
    /* Commands are written from this check handle, at the end of the loop
     * turn that queued them (all of them at once), instead of on the next
     * turn's write readiness: hiredis's adapter would otherwise cost a poll
     * turn and two epoll_ctl more per command. Closed with c, which its close
     * callback frees. */
    uv_check_t flush;
};

/* ------------------------------------------------------------ replies */

static void rnode_free(struct rnode *r)
{
    for (size_t i = 0; i < r->n; i++)
        rnode_free(&r->el[i]);
    free(r->el);
    free(r->str);
}

static int rnode_copy(struct rnode *dst, const redisReply *src, int depth)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    dst->integer = src->integer;
    if (src->str) {
        dst->str = malloc(src->len + 1);
        if (!dst->str)
            return -1;
        memcpy(dst->str, src->str, src->len);
        dst->len = src->len;
    }
    if (src->type == REDIS_REPLY_ARRAY && src->elements && depth < 8) {
        dst->el = calloc(src->elements, sizeof *dst->el);
        if (!dst->el)
            return -1;
        dst->n = src->elements;
        for (size_t i = 0; i < src->elements; i++)
            if (rnode_copy(&dst->el[i], src->element[i], depth + 1) < 0)
                return -1;
    }
    return 0;
}

static void push_node(lua_State *L, const struct rnode *r)
{
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str ? r->str : "", r->len);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->n, 0);
        for (size_t i = 0; i < r->n; i++) {
            push_node(L, &r->el[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default: /* nil and nested errors */
        lua_pushboolean(L, 0);
        break;
    }
}

/* ------------------------------------------------------------ io */

static void io_maybe_free(struct redis_io *r)
{
    if (r->timer_open || r->redis_pending || !r->released)
        return;
    if (r->have_reply)
        rnode_free(&r->reply);
    free(r);
}

static void timer_closed(uv_handle_t *h)
{
    struct redis_io *r = h->data;
    r->timer_open = false;
    io_maybe_free(r);
}

static void unpark(struct redis_io *r)
{
    if (!r->conn)
        return;
    *r->pprev = r->next;
    if (r->next)
        r->next->pprev = r->pprev;
    else
        r->conn->parked_tail = r->pprev;
    r->conn = NULL;
    redisFreeCommand(r->cmd);
    r->cmd = NULL;
}

static void finish(struct redis_io *r, const char *err)
{
    if (r->finished)
        return;
    r->finished = true;
    unpark(r);
    if (err)
        snprintf(r->err, sizeof r->err, "%s", err);
    r->io.kind = MG_LUA_IO_REDIS;
    r->io.result = !err                          ? MG_LUA_IO_OK
                   : strcmp(err, "timeout") == 0 ? MG_LUA_IO_TIMEOUT
                                                 : MG_LUA_IO_ERROR;
    uv_close((uv_handle_t *)&r->timer, timer_closed);
    mg_lua_io_complete(&r->io);
}

/* The reason hiredis gave, if any (a reset, a protocol error, a bound of
 * redis/hiredis_uv.h), so a plugin's log says why. */
static void finish_lost(struct redis_io *r, const redisAsyncContext *ac)
{
    char why[sizeof r->err];
    snprintf(why, sizeof why, "redis: connection lost%s%s", ac->err ? ": " : "",
             ac->err ? ac->errstr : "");
    finish(r, why);
}

static void io_cancel(struct mg_lua_io *io)
{
    struct redis_io *r = (struct redis_io *)io;
    r->released = true;
    if (!r->finished) {
        r->finished = true;
        unpark(r);
        uv_close((uv_handle_t *)&r->timer, timer_closed);
    }
    io_maybe_free(r);
}

static void io_release(struct mg_lua_io *io)
{
    struct redis_io *r = (struct redis_io *)io;
    r->released = true;
    io_maybe_free(r);
}

static int io_push(lua_State *L, struct mg_lua_io *io)
{
    struct redis_io *r = (struct redis_io *)io;
    if (r->err[0] || !r->have_reply) {
        lua_pushnil(L);
        lua_pushstring(L, r->err[0] ? r->err : "no reply");
        return 2;
    }
    if (r->reply.type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, r->reply.str ? r->reply.str : "", r->reply.len);
        return 2;
    }
    if (r->reply.type == REDIS_REPLY_NIL) {
        lua_pushnil(L);
        return 1;
    }
    push_node(L, &r->reply);
    return 1;
}

static void conn_drop(struct mg_lua_redis *c, const char *why);

static void on_flush(uv_check_t *h)
{
    struct mg_lua_redis *c = h->data;
    uv_check_stop(h);
    if (c->ac && (c->ac->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(c->ac); /* a write error ends the connection: callbacks run */
}

/* A command was handed to hiredis: write it at the end of this loop turn. */
static void flush_soon(struct mg_lua_redis *c)
{
    if (!uv_is_active((uv_handle_t *)&c->flush))
        uv_check_start(&c->flush, on_flush);
}

static bool is_readonly(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && strstr(r->str, "READONLY") != NULL;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_io *r = privdata;
    struct mg_lua *vm = ac->data;
    r->redis_pending = false;
    if (!r->finished) {
        if (!reply)
            finish_lost(r, ac);
        else if (rnode_copy(&r->reply, reply, 0) < 0)
            (r->have_reply = true, finish(r, "out of memory"));
        else
            (r->have_reply = true, finish(r, NULL));
    }
    io_maybe_free(r);
    /* A master demoted under us (a failover we have not heard of yet). */
    struct mg_lua_redis *c = vm && vm->ws ? vm->ws->redis : NULL;
    if (reply && c && c->sentinel && c->ac == ac && is_readonly(reply))
        conn_drop(c, "the master became a replica");
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, "timeout");
}

/* ------------------------------------------------------------ connection */

/* Every parked call fails with `why` (no master to send it to). */
static void fail_parked(struct mg_lua_redis *c, const char *why)
{
    while (c->parked)
        finish(c->parked, why);
}

/* Sends the parked calls, in order, on the confirmed connection. */
static void flush_parked(struct mg_lua_redis *c)
{
    while (c->parked && c->ready) {
        struct redis_io *r = c->parked;
        const char *cmd = r->cmd;
        size_t len = r->cmdlen;
        r->cmd = NULL;
        unpark(r);
        if (redisAsyncFormattedCommand(c->ac, on_reply, r, cmd, len) == REDIS_OK)
            r->redis_pending = true, flush_soon(c);
        else
            finish(r, "redis unavailable");
        redisFreeCommand((char *)cmd);
    }
}

static void conn_lost(struct mg_lua_redis *c)
{
    c->ac = NULL; /* hiredis frees it */
    c->ready = false;
    c->retry_at = uv_now(c->vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
    fail_parked(c, "redis unavailable");
}

/* Our decision to leave the connection: its pending calls answer "connection
 * lost" (now, or right after the hiredis callback we are in). */
static void conn_drop(struct mg_lua_redis *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    mg_warn("gw.redis: leaving %s:%d: %s", c->host, c->port, why);
    c->ac = NULL;
    c->ready = false;
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct mg_lua *vm = ac->data;
    if (status != REDIS_OK && vm->ws->redis && vm->ws->redis->ac == ac) {
        mg_warn("gw.redis: cannot connect: %s", ac->errstr);
        conn_lost(vm->ws->redis);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct mg_lua *vm = ac->data;
    if (vm->ws->redis && vm->ws->redis->ac == ac)
        conn_lost(vm->ws->redis);
}

static bool is_master_role(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
}

/* Sentinel mode: the reply to ROLE, the last of the handshake. */
static void on_role(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    struct mg_lua *vm = ac->data;
    struct mg_lua_redis *c = vm->ws ? vm->ws->redis : NULL;
    if (!reply || !c || c->ac != ac)
        return; /* the connection went: on_disconnect says so */
    if (!is_master_role(reply)) {
        /* A sentinel that has not seen the failover yet: never write there. */
        conn_drop(c, "not a master (ROLE)");
        c->retry_at = uv_now(vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
        fail_parked(c, "redis unavailable: no master");
        return;
    }
    c->ready = true;
    flush_parked(c);
}

/* Connects to c->host:c->port: AUTH, SELECT, then (sentinel mode) ROLE. */
static redisAsyncContext *connect_now(struct mg_lua_redis *c)
{
    struct mg_lua *vm = c->vm;
    const struct mg_redis_conf *rc = &vm->cfg->redis;
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err || mg_hiredis_attach(ac, vm->ws->loop) < 0) {
        if (ac)
            redisAsyncFree(ac);
        c->retry_at = uv_now(vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
        return NULL;
    }
    ac->data = vm;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    c->ac = ac;
    c->ready = !c->sentinel;
    if (rc->password)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", rc->password);
    if (rc->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %u", rc->db);
    if (c->sentinel)
        redisAsyncCommand(ac, on_role, NULL, "ROLE");
    return ac;
}

static void on_sentinel_master(void *ud, const char *host, int port)
{
    struct mg_lua_redis *c = ud;
    if (c->ac)
        return; /* +switch-master got there first */
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    if (!connect_now(c))
        fail_parked(c, "redis unavailable");
}

static void on_sentinel_unknown(void *ud)
{
    struct mg_lua_redis *c = ud;
    if (c->ac)
        return;
    mg_warn("gw.redis: no sentinel named the master '%s'", c->vm->cfg->redis.sentinel.master);
    c->retry_at = uv_now(c->vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
    fail_parked(c, "redis unavailable: no sentinel named the master");
}

/* A failover was announced: leave the old master now (its pending calls fail:
 * they may have run there) and go to the new one. */
static void on_sentinel_switch(void *ud, const char *host, int port)
{
    struct mg_lua_redis *c = ud;
    if (c->ac && c->port == port && strcmp(c->host, host) == 0)
        return;
    conn_drop(c, "failover announced by the sentinels");
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->retry_at = 0;
    if (!connect_now(c))
        fail_parked(c, "redis unavailable");
}

static const struct mg_sentinel_ops sentinel_ops = {
    .on_master = on_sentinel_master,
    .on_unknown = on_sentinel_unknown,
    .on_switch = on_sentinel_switch,
};

static void set_address(struct mg_lua_redis *c, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, c->host, sizeof c->host);
        c->port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, c->host, sizeof c->host);
        c->port = ntohs(s4->sin_port);
    }
}

/* The VM's connection state, made at the first call. */
static struct mg_lua_redis *conn_state(struct mg_lua *vm)
{
    const struct mg_redis_conf *rc = &vm->cfg->redis;
    struct mg_lua_redis *c = vm->ws->redis;
    if (c)
        return c;
    if (!(c = calloc(1, sizeof *c)))
        return NULL;
    c->vm = vm;
    c->parked_tail = &c->parked;
    uv_check_init(vm->ws->loop, &c->flush);
    c->flush.data = c;
    if (rc->sentinel.enabled)
        c->sentinel = mg_sentinel_open(vm->ws->loop, &rc->sentinel,
                                       rc->timeout_ms ? rc->timeout_ms : 250, &sentinel_ops, c);
    else
        set_address(c, &rc->address.addr);
    vm->ws->redis = c;
    return c;
}

static void flush_closed(uv_handle_t *h)
{
    free(h->data);
}

void mg_lua_redis_close(struct mg_lua *vm)
{
    struct mg_lua_redis *c = vm->ws ? vm->ws->redis : NULL;
    if (!c)
        return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->ready = false;
    if (ac)
        redisAsyncFree(ac); /* pending callbacks run with NULL */
    fail_parked(c, "redis: connection lost");
    mg_sentinel_close(c->sentinel);
    vm->ws->redis = NULL;
    uv_close((uv_handle_t *)&c->flush, flush_closed);
}

/* ------------------------------------------------------------ Lua */

static int fail(lua_State *L, struct mg_lua *vm, const char *msg)
{
    mg_lua_io_failed(vm, MG_LUA_IO_REDIS);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Hands r to hiredis now (direct mode, or a confirmed master), or parks it
 * until the sentinels name a master. Returns an error message or NULL. */
static const char *dispatch(struct mg_lua_redis *c, struct redis_io *r, int argc, const char **argv,
                            const size_t *lens)
{
    uint64_t now = uv_now(c->vm->ws->loop);
    if (!c->ac && now < c->retry_at)
        return "redis unavailable";
    if (!c->sentinel) {
        if (!c->ac && !connect_now(c))
            return "redis unavailable";
        if (redisAsyncCommandArgv(c->ac, on_reply, r, argc, argv, lens) != REDIS_OK)
            return "redis unavailable";
        r->redis_pending = true;
        flush_soon(c);
        return NULL;
    }
    if (c->ready) {
        if (redisAsyncCommandArgv(c->ac, on_reply, r, argc, argv, lens) != REDIS_OK)
            return "redis unavailable";
        r->redis_pending = true;
        flush_soon(c);
        return NULL;
    }
    int len = redisFormatCommandArgv(&r->cmd, argc, argv, lens);
    if (len < 0)
        return "out of memory";
    r->cmdlen = (size_t)len;
    r->conn = c;
    r->next = NULL;
    r->pprev = c->parked_tail;
    *c->parked_tail = r;
    c->parked_tail = &r->next;
    if (!c->ac && !mg_sentinel_querying(c->sentinel))
        mg_sentinel_query(c->sentinel); /* answers later: on_master connects */
    return NULL;
}

int mg_lua_redis_call(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    int argc = lua_gettop(L);
    if (argc < 1 || argc > MAX_ARGS)
        return luaL_error(L, "gw.redis:call: 1 to %d arguments", MAX_ARGS);
    if (!mg_lua_waiting_task(vm) || !mg_lua_loop(vm))
        return luaL_error(L,
                          "gw.redis: cannot wait here (only in access, log and timer callbacks)");
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    for (int i = 0; i < argc; i++) {
        int t = lua_type(L, i + 1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "gw.redis:call: argument %d must be a string or a number, got %s",
                              i + 1, luaL_typename(L, i + 1));
        argv[i] = lua_tolstring(L, i + 1, &lens[i]);
    }
    if (!vm->cfg->redis.enabled)
        return fail(L, vm, "gw.redis: no redis in the config");
    struct mg_lua_redis *c = conn_state(vm);
    struct redis_io *r = c ? calloc(1, sizeof *r) : NULL;
    if (!r)
        return fail(L, vm, "out of memory");
    r->io.cancel = io_cancel;
    r->io.release = io_release;
    r->io.push = io_push;
    const char *err = dispatch(c, r, argc, argv, lens);
    if (err) {
        free(r);
        return fail(L, vm, err);
    }
    uv_timer_init(vm->ws->loop, &r->timer);
    r->timer.data = r;
    r->timer_open = true;
    uint64_t ms = vm->cfg->redis.timeout_ms ? vm->cfg->redis.timeout_ms : 250;
    uv_timer_start(&r->timer, on_timeout, ms, 0);
    mg_lua_io_begin(vm, &r->io);
    lua_pushboolean(L, 1);
    return 1;
}

int mg_lua_redis_sha1(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[SHA_DIGEST_LENGTH];
    char hex[2 * SHA_DIGEST_LENGTH + 1];
    SHA1((const unsigned char *)s, len, md);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    lua_pushlstring(L, hex, 2 * SHA_DIGEST_LENGTH);
    return 1;
}
