/*
 * gw.shared_dict(NAME) (DESIGN.md section 10.3): the Lua side of
 * gateway/shared/dict.c, as package.loaded["moongate.shdict"] (C functions
 * taking the dictionary's index; lua/moongate/gw_io.lua wraps them in
 * objects). A VM holds a reference to each dictionary of its config from
 * creation to mg_lua_free, so a reload that keeps `NAME: SIZE` keeps contents.
 *
 * Errors: misuse (bad argument types) raises; store outcomes (no memory,
 * exists, not a number) are returned as nil, message. Never waits.
 */
#include "lua/shdict.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "lua/state-t.h"
#include "lua/ws-t.h"
#include "shared/dict.h"

static struct mg_shdict *dict_arg(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = luaL_checkinteger(L, 1);
    if (i < 1 || (size_t)i > vm->ws->ndicts)
        luaL_error(L, "shared dict: bad handle");
    return vm->ws->dicts[i - 1];
}

static const char *key_arg(lua_State *L, size_t *len)
{
    int t = lua_type(L, 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "shared dict: key must be a string or a number, got %s", luaL_typename(L, 2));
    const char *k = lua_tolstring(L, 2, len);
    if (*len == 0)
        luaL_error(L, "shared dict: key must not be empty");
    return k;
}

static uint64_t ttl_arg(lua_State *L, int arg)
{
    double s = luaL_optnumber(L, arg, 0);
    if (!(s >= 0 && s < 1e9))
        luaL_error(L, "shared dict: ttl must be >= 0 seconds, got %f", s);
    return s > 0 ? (uint64_t)ceil(s * 1000.0) : 0;
}

static int push_rc(lua_State *L, int rc)
{
    static const char *const msgs[] = {"", "not found", "no memory", "exists", "not a number"};
    if (rc == MG_SHD_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, msgs[rc > 0 ? rc : -rc + 1]);
    return 2;
}

static int l_get(lua_State *L)
{
    struct mg_shdict *d = dict_arg(L);
    size_t klen;
    const char *k = key_arg(L, &klen);
    char stack[512];
    struct mg_shdict_val v;
    if (mg_shdict_get(d, k, klen, mg_shdict_now_ms(), &v, stack, sizeof stack) != MG_SHD_OK)
        return 0;
    switch (v.type) {
    case MG_SHD_NUM:
        lua_pushnumber(L, v.num);
        return 1;
    case MG_SHD_BOOL:
        lua_pushboolean(L, v.num != 0);
        return 1;
    case MG_SHD_STR:
        break;
    default: /* a bucket reads as absent */
        return 0;
    }
    if (v.len <= sizeof stack) {
        lua_pushlstring(L, stack, v.len);
        return 1;
    }
    /* Larger than the stack buffer: read again into a buffer of its size (it
     * may have changed meanwhile; then retry). */
    for (int tries = 0; tries < 4; tries++) {
        size_t cap = v.len;
        char *buf = lua_newuserdata(L, cap ? cap : 1); /* freed by the GC, even on error */
        if (mg_shdict_get(d, k, klen, mg_shdict_now_ms(), &v, buf, cap) != MG_SHD_OK)
            return 0;
        if (v.type != MG_SHD_STR) {
            lua_pop(L, 1);
            return l_get(L);
        }
        if (v.len <= cap) {
            lua_pushlstring(L, buf, v.len);
            return 1;
        }
        lua_pop(L, 1);
    }
    return luaL_error(L, "shared dict: value changes too fast to read");
}

static void val_arg(lua_State *L, int arg, struct mg_shdict_val *v)
{
    memset(v, 0, sizeof *v);
    switch (lua_type(L, arg)) {
    case LUA_TNIL:
    case LUA_TNONE:
        v->type = MG_SHD_NIL;
        break;
    case LUA_TBOOLEAN:
        v->type = MG_SHD_BOOL;
        v->num = lua_toboolean(L, arg);
        break;
    case LUA_TNUMBER:
        v->type = MG_SHD_NUM;
        v->num = lua_tonumber(L, arg);
        break;
    case LUA_TSTRING:
        v->type = MG_SHD_STR;
        v->str = lua_tolstring(L, arg, &v->len);
        break;
    default:
        luaL_error(L, "shared dict: values are strings, numbers or booleans, got %s",
                   luaL_typename(L, arg));
    }
}

static int l_store(lua_State *L, bool add)
{
    struct mg_shdict *d = dict_arg(L);
    size_t klen;
    const char *k = key_arg(L, &klen);
    struct mg_shdict_val v;
    val_arg(L, 3, &v);
    uint64_t ttl = ttl_arg(L, 4);
    uint64_t now = mg_shdict_now_ms();
    return push_rc(L, add ? mg_shdict_add(d, k, klen, &v, ttl, now)
                          : mg_shdict_set(d, k, klen, &v, ttl, now));
}

static int l_set(lua_State *L)
{
    return l_store(L, false);
}

static int l_add(lua_State *L)
{
    return l_store(L, true);
}

/* incr(i, key, by, init, ttl) -> new value | nil, err */
static int l_incr(lua_State *L)
{
    struct mg_shdict *d = dict_arg(L);
    size_t klen;
    const char *k = key_arg(L, &klen);
    double by = luaL_optnumber(L, 3, 1);
    double init = 0;
    bool has_init = !lua_isnoneornil(L, 4);
    if (has_init)
        init = luaL_checknumber(L, 4);
    uint64_t ttl = ttl_arg(L, 5);
    double out = 0;
    int rc = mg_shdict_incr(d, k, klen, by, has_init ? &init : NULL, ttl, mg_shdict_now_ms(), &out);
    if (rc != MG_SHD_OK)
        return push_rc(L, rc);
    lua_pushnumber(L, out);
    return 1;
}

static int l_delete(lua_State *L)
{
    struct mg_shdict *d = dict_arg(L);
    size_t klen;
    const char *k = key_arg(L, &klen);
    mg_shdict_delete(d, k, klen);
    lua_pushboolean(L, 1);
    return 1;
}

/* ttl(i, key) -> seconds left (0: none) | nil, "not found" */
static int l_ttl(lua_State *L)
{
    struct mg_shdict *d = dict_arg(L);
    size_t klen;
    const char *k = key_arg(L, &klen);
    uint64_t ms = 0;
    int rc = mg_shdict_ttl(d, k, klen, mg_shdict_now_ms(), &ms);
    if (rc != MG_SHD_OK)
        return push_rc(L, rc);
    lua_pushnumber(L, (double)ms / 1000.0);
    return 1;
}

/* take(i, key, rate_per_s, burst) -> allowed, tokens left, seconds to the next
 * token, seconds to full | nil, err */
/* Dict:take goes through the FFI (lua/moongate/gw_io.lua), so that a JIT
 * trace (rate_limit's access) runs through it instead of stopping at a
 * lua_CFunction. The Lua side checks the arguments. out: allowed (0 or 1),
 * tokens left, seconds to the next token, seconds to full. Never raises. */
static int ffi_take(struct mg_shdict *d, const char *k, size_t klen, double rate, double burst,
                    double *out)
{
    struct mg_shdict_take t;
    int rc = mg_shdict_take(d, k, klen, rate / 1000.0, burst, mg_shdict_now_ms(), &t);
    if (rc == MG_SHD_OK) {
        out[0] = t.allowed;
        out[1] = t.tokens;
        out[2] = t.retry_ms / 1000.0;
        out[3] = t.full_ms / 1000.0;
    }
    return rc;
}

/* Keep in step with the ffi.cdef of lua/moongate/gw_io.lua. */
struct mg_ffi_shdict_api {
    uint32_t size;
    int (*take)(struct mg_shdict *d, const char *k, size_t klen, double rate, double burst,
                double *out);
};

static const struct mg_ffi_shdict_api ffi_api = {sizeof ffi_api, ffi_take};

/* ptr(index) -> the dictionary as a light userdata (for the FFI calls). */
static int l_ptr(lua_State *L)
{
    lua_pushlightuserdata(L, dict_arg(L));
    return 1;
}

/* names() -> {name = index} */
static int l_names(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_createtable(L, 0, (int)vm->ws->ndicts);
    for (size_t i = 0; i < vm->ws->ndicts; i++) {
        lua_pushinteger(L, (lua_Integer)i + 1);
        lua_setfield(L, -2, vm->cfg->shared_dicts.v[i].name);
    }
    return 1;
}

void mg_lua_shdict_open(lua_State *L, struct mg_lua *vm)
{
    static const luaL_Reg fns[] = {
        {"get", l_get}, {"set", l_set},     {"add", l_add}, {"incr", l_incr}, {"delete", l_delete},
        {"ttl", l_ttl}, {"names", l_names}, {"ptr", l_ptr}, {NULL, NULL},
    };
    const struct mg_shdicts_conf *sd = &vm->cfg->shared_dicts;
    if (!vm->ws->dicts && sd->n) {
        vm->ws->dicts = calloc(sd->n, sizeof *vm->ws->dicts);
        if (!vm->ws->dicts)
            mg_fatal("out of memory (lua runtime)");
        for (size_t i = 0; i < sd->n; i++)
            vm->ws->dicts[i] = mg_shdict_acquire(sd->v[i].name, sd->v[i].bytes);
        vm->ws->ndicts = sd->n;
    }
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, vm);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_pushlightuserdata(L, (void *)&ffi_api);
    lua_setfield(L, -2, "api");
    lua_setfield(L, -2, "moongate.shdict");
    lua_pop(L, 2);
}

void mg_lua_shdict_close(struct mg_lua *vm)
{
    for (size_t i = 0; i < vm->ws->ndicts; i++)
        mg_shdict_release(vm->ws->dicts[i]);
    free(vm->ws->dicts);
    vm->ws->dicts = NULL;
    vm->ws->ndicts = 0;
}
