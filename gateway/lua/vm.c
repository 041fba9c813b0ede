/*
 * The Lua plugin runtime: VM lifecycle, plugin loading, and the one protected
 * entry per phase (STYLE convention 11). lua/moongate/runner.lua is its Lua
 * half; ctx.c holds the FFI functions plugins reach through `ctx`.
 *
 * Invariants:
 *  - The Lua stack holds the same values between calls: the traceback
 *    handler, runner.run, runner.balance and the routes' pre-bound entries
 *    (up to vm->stack_top). Every call leaves it so.
 *  - Plugin code (file chunks, init, phases) runs only inside
 *    guard_enter()/guard_leave(), so the watchdog bounds all of it.
 *  - Config-time calls go through lua_cpcall (nothing can raise outside a
 *    protected call, not even out-of-memory while building a conf table);
 *    request-time calls push only non-allocating values before lua_pcall.
 *  - A request is bound to a slot of one VM from its first phase to
 *    mg_lua_ctx_done(); the free-slot array always has room for every slot
 *    handed out, so releasing never allocates.
 *
 * Ownership: the VM owns its lua_State, plugin table and slot arrays; it
 * borrows the config snapshot, which the proxy keeps alive longer.
 */
#include "lua/vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/arena.h"
#include "core/log.h"
#include "lua/conf.h"
#include "lua/ctx.h"
#include "lua/ctx_ext.h"
#include "lua/guard.h"
#include "lua/pluginfile.h"
#include "lua/state-t.h"
#include "lua/task.h"
#include "obs/metrics-t.h"
#include "process/paths.h"

_Static_assert((int)MG_LUA_ACCESS == (int)MG_PLUGIN_PHASE_ACCESS &&
                   (int)MG_LUA_BALANCE == (int)MG_PLUGIN_PHASE_BALANCE &&
                   (int)MG_LUA_RESPONSE == (int)MG_PLUGIN_PHASE_RESPONSE &&
                   (int)MG_LUA_LOG == (int)MG_PLUGIN_PHASE_LOG &&
                   (int)MG_LUA_PHASE__COUNT == (int)MG_PLUGIN_PHASE__COUNT,
               "enum mg_lua_phase mirrors enum mg_plugin_phase");

#define KIND_PLUGIN   MG_LUA_ACCESS  /* runner.entry's kind: a plugins[] entry */
#define KIND_BALANCER MG_LUA_BALANCE /*                      the route's balancer */
#define MAX_TARGETS   (1u << 20)
#define STACK_RUN     2 /* the runner functions, kept on the stack: cheaper than */
#define STACK_BALANCE 3 /* a registry lookup on every call */
#define STACK_BASE    3
#define MG_NOINLINE   __attribute__((noinline, cold)) /* off the request path */
#define STACK_ENTRIES 1024 /* pre-bound entries kept on the stack at most; the */
                           /* others are pushed from the registry */
_Static_assert(sizeof(enum mg_lua_phase) == sizeof(int), "ctx.lua reads vm->phase as an int");

static const char *const phase_names[] = {"init", "access", "balance", "response", "log"};

const char *mg_lua_phase_name(enum mg_lua_phase phase)
{
    return (unsigned)phase < MG_LUA_PHASE__COUNT ? phase_names[phase] : "?";
}

/* ------------------------------------------------------------ small helpers */

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        mg_fatal("out of memory (lua runtime)");
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        mg_fatal("out of memory (lua runtime)");
    return d;
}

/* Copies an error message into one line: newlines become "; ". */
static void one_line(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    if (cap == 0)
        return;
    for (const char *p = src ? src : "(no message)"; *p && o + 1 < cap; p++) {
        if (*p == '\n') {
            if (o + 2 < cap) {
                dst[o++] = ';';
                dst[o++] = ' ';
            }
            while (p[1] == '\t')
                p++;
        } else if (*p != '\r') {
            dst[o++] = *p;
        }
    }
    dst[o] = '\0';
}

/* The message on top of the stack (any type), popped. */
static void pop_message(lua_State *L, char *buf, size_t cap)
{
    const char *msg = lua_tostring(L, -1);
    char tmp[64];
    if (!msg) {
        snprintf(tmp, sizeof(tmp), "(error object is a %s value)", luaL_typename(L, -1));
        msg = tmp;
    }
    one_line(buf, cap, msg);
    lua_pop(L, 1);
}

/* --------------------------------------------------------- guard & timing */

/* Closes the running plugin's timing at `now_ns` (counting an error if
 * `error` or if it reported one already): its stats and the plugin_done hook
 * (moongate_plugin_duration_seconds). cur_plugin is -1 or a loaded plugin. */
static inline void plugin_close(struct mg_lua *vm, uint64_t now_ns, bool error)
{
    int id = vm->cur_plugin;
    if (id < 0)
        return;
    uint64_t ns = now_ns - vm->t_plugin; /* monotonic */
    bool failed = error | vm->cur_failed;
    struct mg_lua_plugin_stats *st = &vm->plugins[id].stats[vm->phase];
    st->calls++;
    st->ns += ns;
    st->errors += failed;
    if (vm->hooks.plugin_done)
        vm->hooks.plugin_done(vm->hooks.data, (unsigned)id, vm->phase, ns, failed);
    vm->cur_plugin = -1;
    vm->cur_failed = false;
}

void mg_lua_plugin_close(struct mg_lua *vm, uint64_t now_ns, bool error)
{
    plugin_close(vm, now_ns, error);
}

static inline void call_begin(struct mg_lua *vm, enum mg_lua_phase phase, int plugin,
                              uint32_t limit)
{
    uint64_t now = mg_lua_clock_ns();
    vm->phase = phase;
    vm->cur_plugin = plugin;
    vm->cur_failed = false;
    vm->t_plugin = now;
    vm->budget_ms = limit;
    mg_lua_guard_enter(&vm->guard, now / 1000000u, limit);
}

static inline void call_end(struct mg_lua *vm, bool failed)
{
    mg_lua_guard_leave(&vm->guard);
    vm->t_end = mg_lua_clock_ns();
    plugin_close(vm, vm->t_end, failed);
    vm->cur = NULL;
}

/* ------------------------------------------------------------------ boot */

/* The message handler at stack index 1: message + Lua traceback. Never raises
 * (luaL_traceback only pushes). */
static int on_traceback(lua_State *L)
{
    if (lua_touserdata(L, 1) == &mg_lua_respond_sentinel)
        return 1; /* ctx:respond() ended the phase: not an error */
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static uint64_t random_seed(unsigned worker_id)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = mg_lua_clock_ns();
    return seed ^ ((uint64_t)worker_id << 32);
}

struct boot_args {
    struct mg_lua *vm;
};

/* Sets the module path to the Lua library dir only (no C modules), requires
 * the runner and calls its boot(). Inside lua_cpcall. */
static MG_LJMP int boot_call(lua_State *L)
{
    struct mg_lua *vm = ((struct boot_args *)lua_touserdata(L, 1))->vm;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua", mg_paths_lua());
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    mg_lua_ext_open(L, vm);

    mg_lua_task_open(L, vm);
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.runner");
    lua_call(L, 1, 1);
    static const char *const fns[] = {"load", "entry", "run", "balance", "body_filter"};
    int *refs[] = {&vm->ref_load, &vm->ref_entry, &vm->ref_run, &vm->ref_balance,
                   &vm->ref_body_filter};
    for (size_t i = 0; i < 5; i++) {
        lua_getfield(L, -1, fns[i]);
        if (!lua_isfunction(L, -1))
            luaL_error(L, "moongate.runner has no function %s", fns[i]);
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_getfield(L, -1, "boot");
    lua_pushlightuserdata(L, vm);
    lua_pushlightuserdata(L, (void *)&mg_ffi_api);
    lua_pushlightuserdata(L, (void *)mg_lua_guard_stop(&vm->guard));
    lua_pushinteger(L, (lua_Integer)vm->worker_id);
    lua_pushboolean(L, vm->checking);
    lua_pushnumber(L, (lua_Number)(random_seed(vm->worker_id) % (1ull << 52)));
    lua_pushlightuserdata(L, &vm->slot_flags);
    lua_pushlightuserdata(L, &vm->phase);
    lua_pushlightuserdata(L, &vm->pick);
    lua_pushlightuserdata(L, &vm->cur_slot);
    lua_call(L, 10, 0);
    return 0;
}

static struct mg_lua *vm_open(const struct mg_config *cfg, unsigned worker_id, bool checking,
                              const struct mg_lua_hooks *hooks, char *err, size_t errlen)
{
    struct mg_lua *vm = calloc(1, sizeof(*vm));
    if (!vm)
        mg_fatal("out of memory (lua runtime)");
    vm->cfg = cfg;
    vm->worker_id = worker_id;
    vm->checking = checking;
    vm->cur_plugin = -1;
    if (hooks)
        vm->hooks = *hooks;
    vm->routes = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*vm->routes));
    if (!vm->routes)
        mg_fatal("out of memory (lua runtime)");
    for (size_t i = 0; i < cfg->nroutes; i++)
        for (int p = 0; p < MG_LUA_PHASE__COUNT; p++)
            vm->routes[i].first[p] = -1;
    mg_lua_guard_register(&vm->guard);

    vm->L = luaL_newstate();
    if (!vm->L) {
        snprintf(err, errlen, "%s: lua runtime: cannot create a LuaJIT VM", cfg->path);
        mg_lua_free(vm);
        return NULL;
    }
    luaL_openlibs(vm->L);
    lua_pushcfunction(vm->L, on_traceback); /* stays at index 1 */
    struct boot_args args = {vm};
    if (lua_cpcall(vm->L, boot_call, &args) != 0) {
        char msg[512];
        pop_message(vm->L, msg, sizeof(msg));
        snprintf(err, errlen, "%s: lua runtime (%s): %s", cfg->path, mg_paths_lua(), msg);
        mg_lua_free(vm);
        return NULL;
    }
    if (mg_lua_task_boot(vm) < 0) {
        snprintf(err, errlen, "%s: lua runtime (%s): runner lacks its waiting side", cfg->path,
                 MG_LUA_DIR);
        mg_lua_free(vm);
        return NULL;
    }
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->ref_run);     /* STACK_RUN */
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->ref_balance); /* STACK_BALANCE */
    vm->stack_top = STACK_BASE;
    return vm;
}

/* True for the route's balancer when the proxy's C smooth weighted round robin
 * does exactly what it asks: bundled round_robin (not overridden on
 * plugin_path) without config. */
static bool balancer_is_c(const struct mg_config *cfg, const struct mg_route_conf *rt)
{
    const struct mg_plugin_conf *b = &rt->balancer;
    char path[4096];
    if (b->name && strcmp(b->name, "round_robin") != 0)
        return false;
    if (b->config && !(b->config->kind == MG_VAL_MAP && b->config->n == 0))
        return false;
    return mg_lua_find_plugin(cfg, "round_robin", true, path, sizeof(path)) < 0;
}

struct load_args {
    struct mg_lua *vm;
    int id;
    unsigned caps;
};

/* Stack: [1] handler, [2] args, [3] chunk. Calls runner.load(id, name, chunk). */
static MG_LJMP int load_call(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->ref_load);
    lua_pushinteger(L, a->id);
    lua_pushstring(L, a->vm->plugins[a->id].name);
    lua_pushvalue(L, 2);
    lua_call(L, 3, 1);
    a->caps = (unsigned)lua_tointeger(L, -1);
    return 0;
}

/* Loads plugin `name` into the VM (once) and returns its id, or -1 with a
 * message. */
static int load_plugin(struct mg_lua *vm, const char *name, char *msg, size_t cap)
{
    char path[4096];
    for (size_t i = 0; i < vm->nplugins; i++)
        if (strcmp(vm->plugins[i].name, name) == 0)
            return (int)i;
    if (mg_lua_find_plugin(vm->cfg, name, false, path, sizeof(path)) < 0) {
        mg_lua_not_found_message(vm->cfg, msg, cap);
        return -1;
    }
    size_t len = 0, glen = 0;
    char *src = mg_lua_read_file(path, &len);
    if (!src) {
        snprintf(msg, cap, "cannot read %.900s: %s", path, strerror(errno));
        return -1;
    }
    char *guarded = mg_lua_guard_source(src, len, &glen);

    if (vm->nplugins == vm->plugins_cap) {
        vm->plugins_cap = vm->plugins_cap ? vm->plugins_cap * 2 : 8;
        vm->plugins = xrealloc(vm->plugins, vm->plugins_cap * sizeof(*vm->plugins));
    }
    int id = (int)vm->nplugins;
    struct mg_lua_plugin *p = &vm->plugins[id];
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(name);
    p->path = xstrdup(path);
    vm->nplugins++;

    lua_State *L = vm->L;
    char chunkname[4200];
    snprintf(chunkname, sizeof(chunkname), "@%s", path);
    int rc = luaL_loadbuffer(L, guarded ? guarded : src, guarded ? glen : len, chunkname);
    free(guarded);
    free(src);
    if (rc != 0) {
        pop_message(L, msg, cap);
        return -1;
    }
    struct load_args a = {vm, id, 0};
    lua_pushcfunction(L, load_call);
    lua_pushlightuserdata(L, &a);
    lua_pushvalue(L, -3); /* the chunk */
    call_begin(vm, MG_LUA_INIT, id, mg_lua_guard_init_limit());
    rc = lua_pcall(L, 2, 0, 0);
    call_end(vm, rc != 0);
    lua_remove(L, -1 - (rc != 0)); /* the chunk, below a message if any */
    if (rc != 0) {
        pop_message(L, msg, cap);
        return -1;
    }
    p->caps = a.caps;
    return id;
}

struct entry_args {
    struct mg_lua *vm;
    size_t route;
    int kind, id;
    const struct mg_conf_value *conf;
    unsigned mask;
    size_t body_max; /* P.body.max in bytes, 0: none */
    bool body_filter;
};

static MG_LJMP int entry_call(lua_State *L)
{
    struct entry_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->ref_entry);
    lua_pushinteger(L, (lua_Integer)a->route + 1);
    lua_pushinteger(L, a->kind);
    lua_pushinteger(L, a->id);
    mg_lua_push_conf(L, a->conf);
    mg_lua_push_conf_positions(L, a->conf);
    lua_call(L, 5, 3);
    a->mask = (unsigned)lua_tointeger(L, -3);
    a->body_max = (size_t)lua_tonumber(L, -2);
    a->body_filter = lua_toboolean(L, -1);
    return 0;
}

/* A P.schema error names the offending value: "\1LINE:COL\1message". */
static void error_position(char *msg, int *line, int *col)
{
    int l, c, n = 0;
    if (msg[0] == '\1' && sscanf(msg + 1, "%d:%d\1%n", &l, &c, &n) == 2 && n > 0) {
        *line = l;
        *col = c;
        memmove(msg, msg + 1 + n, strlen(msg + 1 + n) + 1);
    }
}

/* One route entry: load its plugin, run init(conf), add it to the chains. */
static int add_entry(struct mg_lua *vm, size_t ri, int kind, const struct mg_plugin_conf *pc,
                     char *msg, size_t cap)
{
    int id = load_plugin(vm, pc->name, msg, cap);
    if (id < 0)
        return -1;
    struct entry_args a = {vm, ri, kind, id, pc->config, 0, 0, false};
    call_begin(vm, MG_LUA_INIT, id, mg_lua_guard_init_limit());
    int rc = lua_cpcall(vm->L, entry_call, &a);
    call_end(vm, rc != 0);
    if (rc != 0) {
        pop_message(vm->L, msg, cap);
        return -1;
    }
    struct mg_lua_route *r = &vm->routes[ri];
    for (int p = MG_LUA_ACCESS; p < MG_LUA_PHASE__COUNT; p++) {
        if ((a.mask & MG_LUA_CAP(p)) && r->first[p] < 0)
            r->first[p] = id;
    }
    r->active |= a.mask & 0xffu;
    r->waits |= a.mask >> 8; /* phases whose chain runs in a coroutine (task.c) */
    if (a.body_max && vm->cfg->routes[ri].idempotency.enabled) {
        snprintf(msg, cap,
                 "P.body (request body buffering) cannot be used on a route with "
                 "idempotency yet");
        return -1;
    }
    if (a.body_max > r->body_max)
        r->body_max = a.body_max;
    r->body_filter |= a.body_filter;
    return 0;
}

/* Does the route name this top-level plugin itself (to turn it off or to
 * configure it its own way)? */
static bool route_names(const struct mg_route_conf *rt, const char *name)
{
    for (size_t j = 0; j < rt->nplugins; j++)
        if (strcmp(rt->plugins[j].name, name) == 0)
            return true;
    return false;
}

static int load_routes(struct mg_lua *vm, char *err, size_t errlen)
{
    const struct mg_config *cfg = vm->cfg;
    char msg[1024];
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct mg_route_conf *rt = &cfg->routes[i];
        for (size_t j = 0; j < cfg->nplugins; j++) { /* top-level plugins come first */
            const struct mg_plugin_conf *pc = &cfg->plugins[j];
            if (!pc->enabled || route_names(rt, pc->name))
                continue;
            int line = pc->line, col = pc->col;
            if (add_entry(vm, i, KIND_PLUGIN, pc, msg, sizeof(msg)) < 0) {
                error_position(msg, &line, &col);
                snprintf(err, errlen, "%s:%d:%d: plugins[%zu]: plugin %s: %s",
                         pc->file ? pc->file : cfg->path, line, col, j, pc->name, msg);
                return -1;
            }
        }
        for (size_t j = 0; j < rt->nplugins; j++) {
            const struct mg_plugin_conf *pc = &rt->plugins[j];
            if (!pc->enabled)
                continue;
            int line = pc->line, col = pc->col;
            if (add_entry(vm, i, KIND_PLUGIN, pc, msg, sizeof(msg)) < 0) {
                error_position(msg, &line, &col);
                snprintf(err, errlen, "%s:%d:%d: routes[%zu].plugins[%zu]: plugin %s: %s",
                         pc->file ? pc->file : cfg->path, line, col, i, j, pc->name, msg);
                return -1;
            }
        }
        if (balancer_is_c(cfg, rt))
            continue;
        const struct mg_plugin_conf *bc = &rt->balancer;
        int line = bc->line, col = bc->col;
        if (add_entry(vm, i, KIND_BALANCER, bc, msg, sizeof(msg)) < 0) {
            error_position(msg, &line, &col);
            snprintf(err, errlen, "%s:%d:%d: routes[%zu].balancer: plugin %s: %s",
                     bc->file ? bc->file : cfg->path, line, col, i, bc->name, msg);
            return -1;
        }
    }
    return 0;
}

struct bind_args {
    struct mg_lua *vm;
};

/* Asks runner.runner(route, phase) for each chain's pre-bound entry, and
 * runner.balancer(route) for each Lua balancer's, and keeps them in the
 * registry (bind_runners puts them on the stack too): a request then pushes
 * one function, and its slot goes in vm->cur_slot. */
static MG_LJMP int bind_call(lua_State *L)
{
    struct mg_lua *vm = ((struct bind_args *)lua_touserdata(L, 1))->vm;
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.runner");
    lua_call(L, 1, 1);
    for (size_t i = 0; i < vm->cfg->nroutes; i++) {
        static const enum mg_lua_phase phases[] = {MG_LUA_ACCESS, MG_LUA_RESPONSE, MG_LUA_LOG,
                                                   MG_LUA_BALANCE};
        for (size_t k = 0; k < 4; k++) {
            if (!(vm->routes[i].active & MG_LUA_CAP(phases[k])))
                continue;
            lua_getfield(L, -1, phases[k] == MG_LUA_BALANCE ? "balancer" : "runner");
            lua_pushinteger(L, (lua_Integer)i + 1);
            lua_pushinteger(L, phases[k]);
            lua_call(L, 2, 1);
            if (lua_isfunction(L, -1))
                vm->routes[i].ref_run[phases[k]] = luaL_ref(L, LUA_REGISTRYINDEX);
            else
                lua_pop(L, 1);
        }
    }
    return 0;
}

/* Pushes the first STACK_ENTRIES pre-bound entries (inside lua_pcall: growing
 * the stack may raise) and returns them: they stay on the stack, where
 * pushing one for a call is cheaper than a registry lookup. */
static MG_LJMP int stack_call(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, 1);
    int n = 0;
    for (size_t i = 0; i < vm->cfg->nroutes; i++)
        for (int p = 0; p < MG_LUA_PHASE__COUNT; p++)
            n += vm->routes[i].ref_run[p] != 0;
    n = n < STACK_ENTRIES ? n : STACK_ENTRIES;
    luaL_checkstack(L, n, "pre-bound entries");
    int k = 0;
    for (size_t i = 0; i < vm->cfg->nroutes && k < n; i++)
        for (int p = 0; p < MG_LUA_PHASE__COUNT && k < n; p++)
            if (vm->routes[i].ref_run[p]) {
                lua_rawgeti(L, LUA_REGISTRYINDEX, vm->routes[i].ref_run[p]);
                k++;
            }
    return k;
}

static int bind_runners(struct mg_lua *vm, char *err, size_t errlen)
{
    struct bind_args a = {vm};
    lua_State *L = vm->L;
    char msg[512];
    if (lua_cpcall(L, bind_call, &a) != 0) {
        pop_message(L, msg, sizeof(msg));
        snprintf(err, errlen, "%s: lua runtime: %s", vm->cfg->path, msg);
        return -1;
    }
    lua_pushcfunction(L, stack_call);
    lua_pushlightuserdata(L, vm);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
        pop_message(L, msg, sizeof(msg));
        snprintf(err, errlen, "%s: lua runtime: %s", vm->cfg->path, msg);
        return -1;
    }
    int idx = STACK_BASE, top = lua_gettop(L); /* the same order as stack_call's */
    for (size_t i = 0; i < vm->cfg->nroutes && idx < top; i++)
        for (int p = 0; p < MG_LUA_PHASE__COUNT && idx < top; p++)
            if (vm->routes[i].ref_run[p])
                vm->routes[i].stk_run[p] = ++idx;
    vm->stack_top = top;
    return 0;
}

/* ------------------------------------------------------------- public API */

struct mg_lua *mg_lua_new(const struct mg_config *cfg, unsigned worker_id,
                          const struct mg_lua_hooks *hooks, char *err, size_t errlen)
{
    struct mg_lua *vm = vm_open(cfg, worker_id, false, hooks, err, errlen);
    if (vm && (load_routes(vm, err, errlen) < 0 || bind_runners(vm, err, errlen) < 0)) {
        mg_lua_free(vm);
        return NULL;
    }
    return vm;
}

int mg_lua_check_config(const struct mg_config *cfg, char *err, size_t errlen)
{
    struct mg_lua *vm = vm_open(cfg, 0, true, NULL, err, errlen);
    if (!vm)
        return -1;
    int rc = load_routes(vm, err, errlen);
    mg_lua_free(vm);
    return rc;
}

bool mg_lua_needed(const struct mg_config *cfg)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].nplugins || cfg->nplugins || !balancer_is_c(cfg, &cfg->routes[i]))
            return true;
    return false;
}

void mg_lua_free(struct mg_lua *vm)
{
    if (!vm)
        return;
    mg_lua_guard_unregister(&vm->guard);
    mg_lua_task_close(vm);
    if (vm->L)
        lua_close(vm->L);
    for (size_t i = 0; i < vm->nplugins; i++) {
        free(vm->plugins[i].name);
        free(vm->plugins[i].path);
    }
    free(vm->plugins);
    free(vm->routes);
    free(vm->free_slots);
    free(vm->slot_flags);
    free(vm->tarrays);
    free(vm);
}

bool mg_lua_route_active(const struct mg_lua *vm, size_t route, enum mg_lua_phase phase)
{
    return vm && route < vm->cfg->nroutes && (vm->routes[route].active & MG_LUA_CAP(phase));
}

bool mg_lua_route_waits(const struct mg_lua *vm, size_t route, enum mg_lua_phase phase)
{
    return vm && route < vm->cfg->nroutes && (vm->routes[route].waits & MG_LUA_CAP(phase));
}

size_t mg_lua_route_body_max(const struct mg_lua *vm, size_t route)
{
    return vm && route < vm->cfg->nroutes ? vm->routes[route].body_max : 0;
}

void mg_lua_ctx_init(struct mg_lua_ctx *ctx, struct mg_arena *arena)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->arena = arena;
    ctx->latency = -1;
}

void mg_lua_ctx_init_lazy(struct mg_lua_ctx *ctx, struct mg_arena *arena,
                          void (*fill)(struct mg_lua_ctx *, void *), void *data)
{
    MG_ASSERT(ctx->slot == 0 && ctx->vm == NULL && ctx->respond.status == 0);
    ctx->arena = arena;
    ctx->latency = -1;
    ctx->fill = fill;
    ctx->fill_data = data;
}

/* A new slot: room to release every slot later, and its flags. */
static MG_NOINLINE uint32_t new_slot(struct mg_lua *vm)
{
    uint32_t slot = ++vm->next_slot;
    if (vm->free_cap < slot) {
        vm->free_cap = vm->free_cap ? vm->free_cap * 2 : 64;
        vm->free_slots = xrealloc(vm->free_slots, vm->free_cap * sizeof(uint32_t));
        vm->slot_flags = xrealloc(vm->slot_flags, vm->free_cap + 1);
    }
    return slot;
}

/* Binds the request to a slot on its first phase; the slot's flags start
 * empty then (the Lua side clears the pooled ctx object's tables lazily). */
static inline uint32_t bind_slot(struct mg_lua *vm, struct mg_lua_ctx *ctx)
{
    if (ctx->slot) {
        MG_ASSERT(ctx->vm == vm);
        return ctx->slot;
    }
    uint32_t slot = vm->nfree ? vm->free_slots[--vm->nfree] : new_slot(vm);
    vm->slot_flags[slot] = 0;
    ctx->slot = slot;
    ctx->vm = vm;
    return slot;
}

void mg_lua_ctx_done(struct mg_lua *vm, struct mg_lua_ctx *ctx)
{
    if (!ctx->slot)
        return;
    vm = vm ? vm : ctx->vm;
    MG_ASSERT(ctx->vm == vm && vm->nfree < vm->free_cap);
    vm->free_slots[vm->nfree++] = ctx->slot;
    ctx->slot = 0;
    ctx->vm = NULL;
}

/* A request-time call raised: a ctx:respond() (the phase's normal end: its
 * results are nils, 0) or an error (logged, -1). Pops the message. */
static MG_NOINLINE int call_raised(struct mg_lua *vm, enum mg_lua_phase phase,
                                   const struct mg_lua_ctx *ctx, int nres)
{
    lua_State *L = vm->L;
    if (lua_touserdata(L, -1) == &mg_lua_respond_sentinel && ctx->respond.status) {
        lua_pop(L, 1);
        for (int i = 0; i < nres; i++)
            lua_pushnil(L);
        return 0;
    }
    char msg[1800];
    pop_message(L, msg, sizeof(msg));
    mg_error("plugin %s: %s: %s",
             vm->cur_plugin >= 0 ? vm->plugins[vm->cur_plugin].name : "(runtime)",
             mg_lua_phase_name(phase), msg);
    return -1;
}

/* The one protected entry of request time: function and nargs arguments are
 * pushed; leaves nres results on success, nothing on error (logged). `plugin`
 * is timed first (the chain's first plugin, or the balancer). */
static inline __attribute__((always_inline)) int protected_call(struct mg_lua *vm,
                                                                enum mg_lua_phase phase,
                                                                struct mg_lua_ctx *ctx, int nargs,
                                                                int nres, int plugin)
{
    vm->cur = ctx;
    call_begin(vm, phase, plugin, mg_lua_guard_phase_limit());
    int rc = lua_pcall(vm->L, nargs, nres, 1);
    if (rc != 0)
        rc = call_raised(vm, phase, ctx, nres);
    call_end(vm, rc != 0);
    return rc;
}

/* Pushes route r's pre-bound entry for `phase`. */
static inline void push_entry(lua_State *L, const struct mg_lua_route *r, enum mg_lua_phase phase)
{
    if (r->stk_run[phase])
        lua_pushvalue(L, r->stk_run[phase]);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref_run[phase]);
}

/* A chain that may wait (runner.run_waiting: in a coroutine), or one of a VM
 * made by mg_lua_check_config() (runner.run): no pre-bound entry. */
static MG_NOINLINE enum mg_lua_result run_slow(struct mg_lua *vm, size_t route,
                                               enum mg_lua_phase phase, struct mg_lua_ctx *ctx)
{
    lua_State *L = vm->L;
    uint32_t slot = bind_slot(vm, ctx);
    const struct mg_lua_route *r = &vm->routes[route];
    bool waits = r->waits & MG_LUA_CAP(phase);
    if (waits)
        mg_lua_task_push_run(vm);
    else
        lua_pushvalue(L, STACK_RUN);
    lua_pushinteger(L, (lua_Integer)route + 1);
    lua_pushinteger(L, phase);
    lua_pushinteger(L, slot);
    if (protected_call(vm, phase, ctx, 3, 1, r->first[phase]) != 0)
        return MG_LUA_ERROR;
    if (waits && lua_type(L, -1) == LUA_TNUMBER) { /* it waits: the coroutine's key */
        mg_lua_task_note_wait(vm, (int)lua_tointeger(L, -1));
        lua_settop(L, vm->stack_top);
        return MG_LUA_WAIT;
    }
    bool failed = lua_toboolean(L, -1); /* true: some plugin failed (logged) */
    lua_settop(L, vm->stack_top);
    if (failed)
        return MG_LUA_ERROR;
    if (phase == MG_LUA_ACCESS && ctx->respond.status)
        return MG_LUA_RESPONDED;
    return MG_LUA_OK;
}

enum mg_lua_result mg_lua_run(struct mg_lua *vm, size_t route, enum mg_lua_phase phase,
                              struct mg_lua_ctx *ctx)
{
    MG_ASSERT(phase == MG_LUA_ACCESS || phase == MG_LUA_RESPONSE || phase == MG_LUA_LOG);
    if (!mg_lua_route_active(vm, route, phase))
        return MG_LUA_OK;
    MG_ASSERT(ctx->arena != NULL);
    const struct mg_lua_route *r = &vm->routes[route];
    if ((r->waits & MG_LUA_CAP(phase)) || !r->ref_run[phase])
        return run_slow(vm, route, phase, ctx);
    /* The chain's pre-bound entry, without arguments: it reads the slot from
     * vm->cur_slot. Only a log chain has a result to read (some plugin
     * failed); the others leave the stack as it was. */
    lua_State *L = vm->L;
    vm->cur_slot = bind_slot(vm, ctx);
    push_entry(L, r, phase);
    if (phase != MG_LUA_LOG) {
        if (protected_call(vm, phase, ctx, 0, 0, r->first[phase]) != 0)
            return MG_LUA_ERROR;
        return phase == MG_LUA_ACCESS && ctx->respond.status ? MG_LUA_RESPONDED : MG_LUA_OK;
    }
    if (protected_call(vm, phase, ctx, 0, 1, r->first[phase]) != 0)
        return MG_LUA_ERROR;
    bool failed = lua_toboolean(L, -1);
    lua_settop(L, vm->stack_top);
    return failed ? MG_LUA_ERROR : MG_LUA_OK;
}

/* The index of a targets array in vm->tarrays (memoized per route). */
static unsigned tarray_id(struct mg_lua *vm, struct mg_lua_route *r,
                          const struct mg_lua_target *targets, size_t n)
{
    if (r->last_targets == targets && r->last_n == n)
        return r->last_id;
    size_t i = 0;
    while (i < vm->ntarrays && !(vm->tarrays[i].targets == targets && vm->tarrays[i].n == n))
        i++;
    if (i == vm->ntarrays) { /* first time: at most one per upstream and snapshot */
        if (vm->ntarrays == vm->tarrays_cap) {
            vm->tarrays_cap = vm->tarrays_cap ? vm->tarrays_cap * 2 : 8;
            vm->tarrays = xrealloc(vm->tarrays, vm->tarrays_cap * sizeof(*vm->tarrays));
        }
        vm->tarrays[vm->ntarrays++] = (struct mg_lua_tarray){targets, n, false};
    }
    r->last_targets = targets;
    r->last_n = n;
    r->last_id = (unsigned)i;
    return (unsigned)i;
}

int mg_lua_balance(struct mg_lua *vm, size_t route, struct mg_lua_ctx *ctx,
                   const struct mg_lua_target *targets, size_t n, bool *error)
{
    *error = false;
    if (vm)
        vm->t_end = 0; /* no call, no end time (mg_lua_call_end_ns) */
    if (!mg_lua_route_active(vm, route, MG_LUA_BALANCE) || n == 0 || n > MAX_TARGETS)
        return -1;
    MG_ASSERT(ctx->arena != NULL);
    lua_State *L = vm->L;
    struct mg_lua_route *r = &vm->routes[route];
    unsigned id = tarray_id(vm, r, targets, n);
    uint32_t slot = bind_slot(vm, ctx);
    int nargs = 0;
    if (r->ref_run[MG_LUA_BALANCE]) { /* runner.balancer(route): ([id[, n, targets]]) */
        vm->cur_slot = slot;
        push_entry(L, r, MG_LUA_BALANCE);
    } else { /* a VM made by mg_lua_check_config(): runner.balance */
        lua_pushvalue(L, STACK_BALANCE);
        lua_pushinteger(L, (lua_Integer)route + 1);
        lua_pushinteger(L, (lua_Integer)slot);
        nargs = 2;
        r->lua_id = 0;
    }
    if (r->lua_id != id + 1) { /* the entry saw another array last: name this one */
        lua_pushinteger(L, (lua_Integer)id + 1);
        nargs++;
        if (!vm->tarrays[id].wrapped) { /* the first call with it: Lua wraps it */
            lua_pushinteger(L, (lua_Integer)n);
            lua_pushlightuserdata(L, (void *)targets);
            nargs += 2;
        }
    }
    /* The result comes back in vm->pick (0 when the balancer's was not a
     * number): no result on the stack to read and pop. */
    if (protected_call(vm, MG_LUA_BALANCE, ctx, nargs, 0, r->first[MG_LUA_BALANCE]) != 0) {
        r->lua_id = 0;
        *error = true;
        return -1;
    }
    vm->tarrays[id].wrapped = true;
    r->lua_id = r->ref_run[MG_LUA_BALANCE] ? id + 1 : 0;
    double v = vm->pick;
    if (!(v >= 1 && v <= (double)n)) /* NaN too */
        return -1;
    int k = (int)v - 1; /* n <= MAX_TARGETS: in range */
    return (double)(k + 1) == v && targets[k].available ? k : -1;
}

size_t mg_lua_nplugins(const struct mg_lua *vm)
{
    return vm ? vm->nplugins : 0;
}

const char *mg_lua_plugin_name(const struct mg_lua *vm, unsigned plugin)
{
    return vm && plugin < vm->nplugins ? vm->plugins[plugin].name : NULL;
}

struct mg_lua_plugin_stats mg_lua_plugin_stats(const struct mg_lua *vm, unsigned plugin,
                                               enum mg_lua_phase phase)
{
    struct mg_lua_plugin_stats zero = {0};
    if (!vm || plugin >= vm->nplugins || (unsigned)phase >= MG_LUA_PHASE__COUNT)
        return zero;
    return vm->plugins[plugin].stats[phase];
}

uint64_t mg_lua_errors(const struct mg_lua *vm)
{
    uint64_t n = 0;
    for (size_t i = 0; vm && i < vm->nplugins; i++)
        for (int p = 0; p < MG_LUA_PHASE__COUNT; p++)
            n += vm->plugins[i].stats[p].errors;
    return n;
}

size_t mg_lua_memory(const struct mg_lua *vm)
{
    if (!vm || !vm->L)
        return 0;
    return (size_t)lua_gc(vm->L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(vm->L, LUA_GCCOUNTB, 0);
}

void mg_lua_set_time_limits(unsigned phase_ms, unsigned init_ms)
{
    mg_lua_guard_set_limits(phase_ms, init_ms);
}

void mg_lua_call_begin(struct mg_lua *vm, enum mg_lua_phase phase, int plugin, uint32_t limit_ms)
{
    call_begin(vm, phase, plugin, limit_ms);
}

void mg_lua_call_end(struct mg_lua *vm, bool failed)
{
    call_end(vm, failed);
}

uint64_t mg_lua_call_end_ns(const struct mg_lua *vm)
{
    return vm ? vm->t_end : 0;
}

unsigned mg_lua_route_caps(const struct mg_lua *vm, size_t route)
{
    if (!vm || route >= vm->cfg->nroutes)
        return 0;
    const struct mg_lua_route *r = &vm->routes[route];
    _Static_assert(MG_LUA_PHASE__COUNT <= MG_LUA_CAPS_WAITS_SHIFT, "phase bits fit below waits");
    return r->active | r->waits << MG_LUA_CAPS_WAITS_SHIFT |
           (r->body_filter ? MG_LUA_CAPS_BODY_FILTER : 0) |
           (r->body_max && (r->active & MG_LUA_CAP(MG_LUA_ACCESS)) ? MG_LUA_CAPS_BODY : 0);
}

bool mg_lua_route_body_filter(const struct mg_lua *vm, size_t route)
{
    return vm && route < vm->cfg->nroutes && vm->routes[route].body_filter;
}

int mg_lua_body_filter(struct mg_lua *vm, size_t route, struct mg_lua_ctx *ctx, const char *p,
                       size_t n, bool eof, struct mg_lua_str *out)
{
    *out = (struct mg_lua_str){NULL, 0};
    if (!mg_lua_route_body_filter(vm, route))
        return 0;
    MG_ASSERT(ctx->arena != NULL);
    lua_State *L = vm->L;
    uint32_t slot = bind_slot(vm, ctx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_body_filter);
    lua_pushinteger(L, (lua_Integer)route + 1);
    lua_pushinteger(L, (lua_Integer)slot);
    lua_pushlstring(L, p ? p : "", n);
    lua_pushboolean(L, eof);
    if (protected_call(vm, MG_LUA_RESPONSE, ctx, 4, 1, vm->routes[route].first[MG_LUA_RESPONSE]) !=
        0)
        return -1;
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    int rc = 0;
    if (s && (len != n || (n && memcmp(s, p, n) != 0))) {
        if (len > MG_LUA_FILTER_BYTES_MAX - ctx->filtered_bytes) {
            mg_error("plugin body_filter: route %zu: over %u bytes of changed response body", route,
                     (unsigned)MG_LUA_FILTER_BYTES_MAX);
            rc = -1;
        } else {
            char *d = len ? mg_arena_alloc(ctx->arena, len) : NULL;
            if (len)
                memcpy(d, s, len);
            ctx->filtered_bytes += (uint32_t)len;
            *out = (struct mg_lua_str){len ? d : "", len};
        }
    }
    lua_settop(L, vm->stack_top);
    return rc;
}
