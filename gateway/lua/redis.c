/*
 * gw.redis (see redis.h). One connection per VM (so per worker per config
 * generation), opened at the first call, pipelined by hiredis.
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
#include "idempotency/hiredis_uv.h"
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
};

struct mg_lua_redis {
    redisAsyncContext *ac;
    uint64_t retry_at; /* loop ms: no connect before */
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

static void finish(struct redis_io *r, const char *err)
{
    if (r->finished)
        return;
    r->finished = true;
    if (err)
        snprintf(r->err, sizeof r->err, "%s", err);
    r->io.kind = MG_LUA_IO_REDIS;
    r->io.result = !err                          ? MG_LUA_IO_OK
                   : strcmp(err, "timeout") == 0 ? MG_LUA_IO_TIMEOUT
                                                 : MG_LUA_IO_ERROR;
    uv_close((uv_handle_t *)&r->timer, timer_closed);
    mg_lua_io_complete(&r->io);
}

static void io_cancel(struct mg_lua_io *io)
{
    struct redis_io *r = (struct redis_io *)io;
    r->released = true;
    if (!r->finished) {
        r->finished = true;
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

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct redis_io *r = privdata;
    r->redis_pending = false;
    if (!r->finished) {
        if (!reply)
            finish(r, "redis: connection lost");
        else if (rnode_copy(&r->reply, reply, 0) < 0)
            (r->have_reply = true, finish(r, "out of memory"));
        else
            (r->have_reply = true, finish(r, NULL));
    }
    io_maybe_free(r);
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, "timeout");
}

/* ------------------------------------------------------------ connection */

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct mg_lua *vm = ac->data;
    if (status != REDIS_OK && vm->ws->redis && vm->ws->redis->ac == ac) {
        mg_warn("gw.redis: cannot connect: %s", ac->errstr);
        vm->ws->redis->ac = NULL; /* hiredis frees it */
        vm->ws->redis->retry_at = uv_now(vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct mg_lua *vm = ac->data;
    if (vm->ws->redis && vm->ws->redis->ac == ac) {
        vm->ws->redis->ac = NULL;
        vm->ws->redis->retry_at = uv_now(vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
    }
}

static redisAsyncContext *connection(struct mg_lua *vm, char *msg, size_t cap)
{
    const struct mg_redis_conf *rc = &vm->cfg->redis;
    if (!rc->enabled || rc->sentinel.enabled) {
        snprintf(msg, cap, "gw.redis: no redis in the config (sentinel mode is not supported)");
        return NULL;
    }
    if (!vm->ws->redis && !(vm->ws->redis = calloc(1, sizeof *vm->ws->redis))) {
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    struct mg_lua_redis *c = vm->ws->redis;
    if (c->ac)
        return c->ac;
    if (uv_now(vm->ws->loop) < c->retry_at) {
        snprintf(msg, cap, "redis unavailable");
        return NULL;
    }
    char host[INET6_ADDRSTRLEN] = "";
    int port;
    const struct sockaddr_storage *ss = &rc->address.addr;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    }
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (!ac || ac->err || mg_hiredis_attach(ac, vm->ws->loop) < 0) {
        if (ac)
            redisAsyncFree(ac);
        c->retry_at = uv_now(vm->ws->loop) + MG_LUA_REDIS_RETRY_MS;
        snprintf(msg, cap, "redis unavailable");
        return NULL;
    }
    ac->data = vm;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    c->ac = ac;
    if (rc->password)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", rc->password);
    if (rc->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %u", rc->db);
    return ac;
}

void mg_lua_redis_close(struct mg_lua *vm)
{
    struct mg_lua_redis *c = vm->ws ? vm->ws->redis : NULL;
    if (!c)
        return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* pending callbacks run with NULL */
    free(c);
    vm->ws->redis = NULL;
}

/* ------------------------------------------------------------ Lua */

static int fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
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
    char msg[160];
    redisAsyncContext *ac = connection(vm, msg, sizeof msg);
    if (!ac)
        return fail(L, msg);
    struct redis_io *r = calloc(1, sizeof *r);
    if (!r)
        return fail(L, "out of memory");
    r->io.cancel = io_cancel;
    r->io.release = io_release;
    r->io.push = io_push;
    if (redisAsyncCommandArgv(ac, on_reply, r, argc, argv, lens) != REDIS_OK) {
        free(r);
        return fail(L, "redis unavailable");
    }
    r->redis_pending = true;
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
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    lua_pushlstring(L, hex, 2 * SHA_DIGEST_LENGTH);
    return 1;
}
