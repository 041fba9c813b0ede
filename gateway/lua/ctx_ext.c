/*
 * The wider plugin API (see ctx_ext.h). The checks mirror ctx.c: the running
 * request named by its slot, the phase, then the bytes (a path or query with
 * CR, LF or a space would split the upstream request line).
 */
#include "lua/ctx_ext.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config-t.h"
#include "http/request.h"
#include "lua/ctx.h"
#include "lua/guard.h"
#include "lua/jitboard.h"
#include "lua/jwt_cache.h"
#include "lua/jwt_hs.h"
#include "lua/state-t.h"
#include "lua/vm.h"

#define BIT(p) (1u << (p))

const char mg_lua_respond_sentinel = 0;

static int ext_headers(struct mg_lua *vm, uint32_t slot, int resp, const char *name, size_t nlen,
                       struct mg_lua_str *out, size_t cap, size_t *total)
{
    return mg_lua_ext_headers(vm, slot, resp != 0, name, nlen, out, cap, total);
}

static int ext_add_header(struct mg_lua *vm, uint32_t slot, int resp, const char *name, size_t nlen,
                          const char *value, size_t vlen)
{
    return mg_lua_ext_add_header(vm, slot, resp != 0, name, nlen, value, vlen);
}

static int ext_target_fault(const char *p, size_t n, int path_only)
{
    return (int)mg_http_path_fault((struct mg_slice){p, n}, path_only != 0);
}

static int ext_set_path(struct mg_lua *vm, uint32_t slot, const char *p, size_t n)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_ACCESS));
    if (!c)
        return mg_lua_ext_current(vm, slot, ~0u) ? MG_FFI_BAD_PHASE : MG_FFI_BAD_CONTEXT;
    /* The rules a client's target obeys: "/static/" .. user_input must not
     * forward "/static/../admin" (the route was chosen for the old path). */
    if (!p || n > 8192 || ext_target_fault(p, n, true) != MG_TARGET_OK)
        return MG_FFI_BAD_VALUE;
    c->new_path = mg_lua_ext_copy(c, p, n);
    return MG_FFI_OK;
}

static int ext_set_query(struct mg_lua *vm, uint32_t slot, const char *p, size_t n)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_ACCESS));
    if (!c)
        return mg_lua_ext_current(vm, slot, ~0u) ? MG_FFI_BAD_PHASE : MG_FFI_BAD_CONTEXT;
    if (p && (n > 8192 || !mg_http_target_valid((struct mg_slice){p, n})))
        return MG_FFI_BAD_VALUE;
    c->new_query = p ? mg_lua_ext_copy(c, p, n) : (struct mg_lua_str){NULL, 0};
    c->query_set = true;
    return MG_FFI_OK;
}

static int ext_set_upstream(struct mg_lua *vm, uint32_t slot, const char *name, size_t n)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_ACCESS));
    if (!c)
        return mg_lua_ext_current(vm, slot, ~0u) ? MG_FFI_BAD_PHASE : MG_FFI_BAD_CONTEXT;
    for (size_t i = 0; name && i < vm->cfg->nupstreams; i++) {
        const struct mg_upstream_conf *u = &vm->cfg->upstreams[i];
        if (strlen(u->name) == n && memcmp(u->name, name, n) == 0) {
            c->upstream = u;
            return MG_FFI_OK;
        }
    }
    return MG_FFI_NOT_FOUND;
}

static int ext_balance_refuse(struct mg_lua *vm, uint32_t slot, int status)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_BALANCE));
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (status < 500 || status > 599)
        return MG_FFI_BAD_VALUE;
    c->balance_refused = status;
    return MG_FFI_OK;
}

/* The buffered request body, as ctx:set_body() left it (access phase; the
 * route's plugins must declare P.body). */
static int ext_body(struct mg_lua *vm, uint32_t slot, struct mg_lua_str *out)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_ACCESS));
    if (!c)
        return mg_lua_ext_current(vm, slot, ~0u) ? MG_FFI_BAD_PHASE : MG_FFI_BAD_CONTEXT;
    if (!c->body.p)
        return MG_FFI_NOT_FOUND;
    *out = c->body_set ? c->new_body : c->body;
    return MG_FFI_OK;
}

static int ext_set_body(struct mg_lua *vm, uint32_t slot, const char *p, size_t n)
{
    struct mg_lua_ctx *c = mg_lua_ext_current(vm, slot, BIT(MG_LUA_ACCESS));
    if (!c)
        return mg_lua_ext_current(vm, slot, ~0u) ? MG_FFI_BAD_PHASE : MG_FFI_BAD_CONTEXT;
    if (!c->body.p)
        return MG_FFI_NOT_FOUND;
    if (!p)
        return MG_FFI_BAD_VALUE;
    if (n > MG_LUA_RESPOND_BODY_MAX && n > c->body.len)
        return MG_FFI_TOO_LARGE;
    c->new_body = mg_lua_ext_copy(c, p, n);
    c->body_set = true;
    return MG_FFI_OK;
}

const struct mg_ffi_ext_api mg_ffi_ext_api = {
    .size = sizeof(struct mg_ffi_ext_api),
    .headers = ext_headers,
    .add_header = ext_add_header,
    .set_path = ext_set_path,
    .set_query = ext_set_query,
    .set_upstream = ext_set_upstream,
    .balance_refuse = ext_balance_refuse,
    .body = ext_body,
    .set_body = ext_set_body,
    .target_fault = ext_target_fault,
};

/* A helper module name: dot-separated words of letters, digits and '_'. */
static bool module_name_ok(const char *s)
{
    if (!*s || *s == '.' || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || (*p == '.' && p[1] && p[1] != '.')))
            return false;
    return true;
}

/* load_module(name) -> chunk, path | nil, message: NAME.lua (dots become
 * '/') from the plugin_path dirs, instrumented by the runaway guard like a
 * plugin file. Blocking file I/O: the Lua side calls it only while plugins
 * load. Upvalue 1: the VM. */
static int l_load_module(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    char rel[160], path[4300];
    if (!module_name_ok(name)) {
        lua_pushnil(L);
        lua_pushstring(L, "invalid module name (words of letters, digits and _ separated by dots)");
        return 2;
    }
    snprintf(rel, sizeof(rel), "%s", name);
    for (char *p = rel; *p; p++)
        if (*p == '.')
            *p = '/';
    for (size_t i = 0; i < vm->cfg->nplugin_path; i++) {
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s.lua", vm->cfg->plugin_path[i], rel);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        FILE *f = fopen(path, "rb");
        char *src = f && st.st_size < (1 << 24) ? malloc((size_t)st.st_size + 1) : NULL;
        size_t n = src ? fread(src, 1, (size_t)st.st_size, f) : 0;
        if (f)
            fclose(f);
        if (!src) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
            return 2;
        }
        size_t glen = 0;
        char *guarded = mg_lua_guard_source(src, n, &glen);
        char chunkname[4400];
        snprintf(chunkname, sizeof(chunkname), "@%s", path);
        int rc = luaL_loadbuffer(L, guarded ? guarded : src, guarded ? glen : n, chunkname);
        free(guarded);
        free(src);
        if (rc != 0) {
            lua_pushnil(L);
            lua_insert(L, -2); /* nil, message */
            return 2;
        }
        lua_pushstring(L, path);
        return 2;
    }
    lua_pushnil(L);
    lua_pushfstring(L, "module '%s' not found on plugin_path", name);
    return 2;
}

void mg_lua_ext_open(lua_State *L, struct mg_lua *vm)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_createtable(L, 0, 4);
    lua_pushlightuserdata(L, (void *)&mg_ffi_ext_api);
    lua_setfield(L, -2, "api");
    lua_pushlightuserdata(L, (void *)&mg_lua_respond_sentinel);
    lua_setfield(L, -2, "respond_sentinel");
    mg_lua_crypto_push(L);
    mg_lua_jwt_cache_push(L); /* the jwt fast paths live in native.crypto too */
    mg_lua_jwt_hs_push(L);
    lua_setfield(L, -2, "crypto");
    mg_lua_json_push(L);
    lua_setfield(L, -2, "json");
    mg_lua_jitboard_push(L); /* native.jit_publish */
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_load_module, 1);
    lua_setfield(L, -2, "load_module");
    lua_setfield(L, -2, "moongate.native");
    lua_pop(L, 2);
}
