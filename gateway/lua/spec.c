/*
 * `moongate test SPEC.lua` (see spec.h). Flow: the spec's `config` is read in a
 * scratch Lua state (its describe/it are no-ops there); the config is loaded
 * like any other and a real plugin VM made from it; the spec then runs in that
 * VM as a coroutine. Each request{} yields its table; this file builds a ctx
 * from it, runs access, the response phase against the scripted upstream
 * answer, the body filters and log, exactly as the proxy calls them, and
 * resumes the spec with the outcome. The balance phase is not run (no
 * targets here): write balancer tests with real upstreams.
 */
#include "lua/spec.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/arena.h"
#include "lua/edits.h"
#include "lua/state-t.h"
#include "lua/vm.h"

static const char *field_str(lua_State *L, int t, const char *k, const char *def, size_t *len)
{
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1); /* the table keeps the string alive */
    if (!s && def)
        *len = strlen(def);
    return s ? s : def;
}

/* headers = {Name = "v" | {"v1", "v2"}} at index t (absolute) -> an array. */
static struct mg_lua_header *read_headers(lua_State *L, int t, const char *k, struct mg_arena *a,
                                          size_t *n)
{
    struct mg_lua_header *h = mg_arena_alloc(a, 64 * sizeof(*h));
    *n = 0;
    lua_getfield(L, t, k);
    int ht = lua_gettop(L);
    if (lua_istable(L, ht)) {
        lua_pushnil(L);
        while (lua_next(L, ht) && *n < 64) {
            size_t nl;
            const char *name = lua_tolstring(L, -2, &nl);
            if (lua_istable(L, -1)) {
                for (int i = 1; *n < 64; i++) {
                    lua_rawgeti(L, -1, i);
                    if (!lua_isstring(L, -1)) {
                        lua_pop(L, 1);
                        break;
                    }
                    size_t vl;
                    const char *v = lua_tolstring(L, -1, &vl);
                    h[(*n)++] = (struct mg_lua_header){{name, nl}, {v, vl}};
                    lua_pop(L, 1);
                }
            } else if (lua_isstring(L, -1)) {
                size_t vl;
                const char *v = lua_tolstring(L, -1, &vl);
                h[(*n)++] = (struct mg_lua_header){{name, nl}, {v, vl}};
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return h;
}

static void add_value(lua_State *L, int t, struct mg_lua_str name, struct mg_lua_str value)
{
    char low[256];
    size_t n = name.len < sizeof(low) ? name.len : sizeof(low) - 1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)(name.p[i] >= 'A' && name.p[i] <= 'Z' ? name.p[i] + 32 : name.p[i]);
    lua_pushlstring(L, low, n);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlstring(L, low, n);
        lua_pushvalue(L, -2);
        lua_rawset(L, t);
    }
    lua_pushlstring(L, value.p ? value.p : "", value.len);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* Pushes {name = {values}}: the originals no edit replaced, then `extra`,
 * then the edits' values. */
static void push_headers(lua_State *L, const struct mg_lua_header *h, size_t n,
                         const struct mg_lua_edit *extra, const struct mg_lua_edit *edits)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    for (size_t i = 0; i < n; i++)
        if (!mg_lua_edits_name(edits, (struct mg_slice){h[i].name.p, h[i].name.len}))
            add_value(L, t, h[i].name, h[i].value);
    const struct mg_lua_edit *lists[2] = {extra, edits};
    for (int l = 0; l < 2; l++)
        for (const struct mg_lua_edit *e = lists[l]; e; e = e->next)
            if (e->value.p)
                add_value(L, t, e->name, e->value);
}

static void set_str(lua_State *L, const char *k, struct mg_lua_str s)
{
    if (!s.p)
        return;
    lua_pushlstring(L, s.p, s.len);
    lua_setfield(L, -2, k);
}

/* The request table is at the top of co; replaced by the outcome. */
static void run_request(struct mg_lua *vm, lua_State *co)
{
    int t = lua_gettop(co);
    struct mg_arena arena;
    struct mg_lua_ctx ctx;
    mg_arena_init(&arena, NULL);
    mg_lua_ctx_init(&ctx, &arena);
    size_t ri = 0, len;
    const char *route = field_str(co, t, "route", NULL, &len);
    for (size_t i = 0; route && i < vm->cfg->nroutes; i++)
        if (strcmp(vm->cfg->routes[i].name, route) == 0)
            ri = i;
    ctx.route = (struct mg_lua_str){vm->cfg->routes[ri].name, strlen(vm->cfg->routes[ri].name)};
    const char *s = field_str(co, t, "method", "GET", &len);
    ctx.method = (struct mg_lua_str){s, len};
    s = field_str(co, t, "path", "/", &len);
    ctx.path = (struct mg_lua_str){s, len};
    s = field_str(co, t, "query", NULL, &len);
    ctx.query = (struct mg_lua_str){s, s ? len : 0};
    s = field_str(co, t, "client_ip", "127.0.0.1", &len);
    ctx.client_ip = (struct mg_lua_str){s, len};
    ctx.request_id = (struct mg_lua_str){"spec-request", 12};
    ctx.req_headers = read_headers(co, t, "headers", &arena, &ctx.n_req_headers);
    s = field_str(co, t, "body", "", &len);
    struct mg_lua_str body = {s, len};

    int status = 0;
    bool responded = false, failed = false;
    struct mg_lua_str out_body = {NULL, 0};
    const struct mg_lua_header *resp = NULL;
    size_t nresp = 0;
    size_t max = mg_lua_route_body_max(vm, ri);
    if (max)
        ctx.body = body;
    enum mg_lua_result r =
        max && body.len > max ? MG_LUA_ERROR : mg_lua_run(vm, ri, MG_LUA_ACCESS, &ctx);
    if (max && body.len > max) {
        status = 413;
    } else if (r == MG_LUA_RESPONDED) {
        responded = true;
        status = ctx.respond.status;
        out_body = ctx.respond.body;
    } else if (r == MG_LUA_ERROR) {
        failed = true;
        status = 500;
    } else {
        lua_getfield(co, t, "upstream");
        int up = lua_gettop(co);
        lua_Integer st =
            lua_istable(co, up) ? (lua_getfield(co, up, "status"), lua_tointeger(co, -1)) : 0;
        if (lua_istable(co, up))
            lua_pop(co, 1);
        ctx.status = st ? (int)st : 200;
        if (lua_istable(co, up)) {
            resp = read_headers(co, up, "headers", &arena, &nresp);
            s = field_str(co, up, "body", "", &len);
            out_body = (struct mg_lua_str){s, len};
        } else {
            out_body = (struct mg_lua_str){"", 0};
        }
        ctx.resp_headers = resp;
        ctx.n_resp_headers = nresp;
        ctx.upstream_address = (struct mg_lua_str){"127.0.0.1:1", 11};
        ctx.latency = 0.001;
        status = ctx.status;
        if (mg_lua_run(vm, ri, MG_LUA_RESPONSE, &ctx) == MG_LUA_ERROR) {
            failed = true;
            status = 500;
        } else if (mg_lua_route_body_filter(vm, ri)) {
            struct mg_lua_str a, b;
            if (mg_lua_body_filter(vm, ri, &ctx, out_body.p, out_body.len, false, &a) ||
                mg_lua_body_filter(vm, ri, &ctx, NULL, 0, true, &b)) {
                failed = true;
                status = 500;
            } else {
                struct mg_lua_str first = a.p ? a : out_body, last = b;
                char *d = mg_arena_alloc(&arena, first.len + last.len + 1);
                memcpy(d, first.p ? first.p : "", first.len);
                if (last.len)
                    memcpy(d + first.len, last.p, last.len);
                out_body = (struct mg_lua_str){d, first.len + last.len};
            }
        }
        lua_pop(co, 1); /* upstream */
    }
    ctx.status = status;
    ctx.latency = 0.002;
    if (mg_lua_run(vm, ri, MG_LUA_LOG, &ctx) == MG_LUA_ERROR)
        failed = true;

    lua_createtable(co, 0, 8);
    lua_pushinteger(co, status);
    lua_setfield(co, -2, "status");
    lua_pushboolean(co, responded);
    lua_setfield(co, -2, "responded");
    lua_pushboolean(co, failed);
    lua_setfield(co, -2, "error");
    set_str(co, "body", out_body.p ? out_body : (struct mg_lua_str){"", 0});
    push_headers(co, responded ? NULL : resp, responded ? 0 : nresp,
                 responded ? ctx.respond.headers : NULL, ctx.resp_edits);
    lua_setfield(co, -2, "headers");
    if (!responded && !failed && status != 413) {
        lua_createtable(co, 0, 4);
        set_str(co, "path", ctx.new_path.p ? ctx.new_path : ctx.path);
        set_str(co, "query", ctx.query_set ? ctx.new_query : ctx.query);
        set_str(co, "body", ctx.body_set ? ctx.new_body : body);
        if (ctx.upstream) {
            lua_pushstring(co, ctx.upstream->name);
            lua_setfield(co, -2, "upstream");
        }
        push_headers(co, ctx.req_headers, ctx.n_req_headers, NULL, ctx.req_edits);
        lua_setfield(co, -2, "headers");
        lua_setfield(co, -2, "upstream");
    }
    mg_lua_ctx_done(vm, &ctx);
    mg_arena_destroy(&arena);
    lua_replace(co, t); /* the outcome where the request was */
}

/* The spec's `config`, from a scratch state where describe/it do nothing. */
static char *read_config(const char *path, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    char *out = NULL;
    luaL_openlibs(L);
    if (luaL_dostring(L, "local noop = function() end\n"
                         "describe, it, request = noop, noop, noop\n"
                         "gw = setmetatable({}, {__index = function() return noop end})") ||
        luaL_dofile(L, path)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
    } else {
        lua_getglobal(L, "config");
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (!s) {
            snprintf(err, errlen, "%s: set `config` to the YAML of the routes under test", path);
        } else {
            bool listen = strstr(s, "listen:") != NULL;
            out = malloc(n + 64);
            if (out)
                snprintf(out, n + 64, "%s%s", listen ? "" : "listen: [\"127.0.0.1:1\"]\n", s);
        }
    }
    lua_close(L);
    return out;
}

/* Inside a protected call on the VM's main thread: prepares the spec chunk
 * with its environment and moves it onto a new coroutine (kept in the
 * registry). Everything that may raise happens on L, never on the coroutine. */
static int start_spec(lua_State *L)
{
    const char *path = lua_touserdata(L, 1);
    if (luaL_loadfile(L, path) != 0)
        return lua_error(L);
    int chunk = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.spec");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "env");
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.runner");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "spec_env");
    lua_remove(L, -2);
    lua_call(L, 0, 1); /* the plugins' sandbox, with this VM's gw */
    lua_getglobal(L, "print");
    lua_call(L, 2, 1); /* spec.env(base, print) */
    lua_setfenv(L, chunk);
    lua_settop(L, chunk);
    lua_State *co = lua_newthread(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "moongate.spec.thread");
    lua_xmove(L, co, 1); /* the chunk: the coroutine's body */
    return 0;
}

int mg_lua_spec_main(const char *spec_path)
{
    char err[1024] = "";
    char *yaml = read_config(spec_path, err, sizeof(err));
    if (!yaml) {
        fprintf(stderr, "moongate test: %s\n", err);
        return 2;
    }
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), spec_path, err, sizeof(err));
    free(yaml);
    struct mg_lua *vm = cfg ? mg_lua_new(cfg, 0, NULL, err, sizeof(err)) : NULL;
    if (!vm) {
        fprintf(stderr, "moongate test: %s\n", err);
        if (cfg)
            mg_config_unref(cfg);
        return 2;
    }
    lua_State *L = vm->L;
    int rc = 0;
    if (lua_cpcall(L, start_spec, (void *)spec_path) != 0) {
        fprintf(stderr, "moongate test: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        rc = 2;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "moongate.spec.thread");
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1); /* the registry keeps it */
    int nargs = 0;
    while (rc == 0) {
        int r = lua_resume(co, nargs);
        if (r == 0)
            break;
        if (r != LUA_YIELD) {
            fprintf(stderr, "moongate test: %s\n", lua_tostring(co, -1));
            rc = 2;
            break;
        }
        run_request(vm, co);
        nargs = 1;
    }
    if (rc == 0) {
        lua_getglobal(L, "require");
        lua_pushstring(L, "moongate.spec");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "results");
        lua_call(L, 0, 2);
        int passed = (int)lua_tointeger(L, -2), failed = (int)lua_tointeger(L, -1);
        lua_pop(L, 3);
        printf("%d passed, %d failed\n", passed, failed);
        rc = failed ? 1 : 0;
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "moongate.spec.thread");
    lua_settop(L, 3);
    mg_lua_free(vm);
    mg_config_unref(cfg);
    return rc;
}
