/*
 * Plugins that wait: tasks, their one pending operation, and the Lua module
 * "moongate.lio" through which lua/moongate/coro.lua and gw_io.lua reach
 * them (see task.h).
 *
 * Invariants:
 *  - A task is suspended (key != 0) exactly while the runner holds its
 *    coroutine in its `suspended` table; resume and abandon both clear it.
 *  - A task has at most one operation; a pending one points back at it, an
 *    abandoned one (task == NULL) frees itself when it completes or closes.
 *  - ws->cur_task is set only during a protected call that may wait.
 *
 * Ownership: struct mg_lua_ws belongs to the VM; detached tasks to their list
 * in it (freed at their end or with the VM).
 */
#include "lua/task.h"

#include <lauxlib.h>
#include <stdatomic.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "lua/guard.h"
#include "lua/http_client.h"
#include "lua/redis.h"
#include "lua/shdict.h"
#include "lua/state-t.h"
#include "lua/timer.h"
#include "lua/vm.h"
#include "lua/ws-t.h"

static struct mg_lua_ws *ws_of(struct mg_lua *vm)
{
    return vm->ws;
}

/* ------------------------------------------------------------ lio module */

static struct mg_lua *lio_vm(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* lio.take(): the results of the operation the running task waited for. */
static int lio_take(lua_State *L)
{
    struct mg_lua_task *t = ws_of(lio_vm(L))->cur_task;
    if (!t || !t->io || !t->io->done)
        return 0;
    struct mg_lua_io *io = t->io;
    t->io = NULL; /* released below even if push raises (out of memory) */
    int n = io->push ? io->push(L, io) : 0;
    io->release(io);
    return n;
}

/* lio.fail(msg): a plugin of a coroutine chain raised; log with its name. */
static int lio_fail(lua_State *L)
{
    struct mg_lua *vm = lio_vm(L);
    const char *msg = luaL_optstring(L, 1, "(no message)");
    int id = vm->cur_plugin;
    mg_error("plugin %s: %s: %s", id >= 0 ? vm->plugins[id].name : "(runtime)",
             mg_lua_phase_name(vm->phase), msg);
    vm->cur_failed = true;
    return 0;
}

/* lio.can_wait(): whether the running call may wait. */
static int lio_can_wait(lua_State *L)
{
    lua_pushboolean(L, ws_of(lio_vm(L))->cur_task != NULL);
    return 1;
}

void mg_lua_task_open(lua_State *L, struct mg_lua *vm)
{
    static const luaL_Reg fns[] = {
        {"take", lio_take},
        {"fail", lio_fail},
        {"can_wait", lio_can_wait},
        {"sleep", mg_lua_timer_sleep},
        {"timer", mg_lua_timer_start},
        {"http", mg_lua_http_start},
        {"redis", mg_lua_redis_call},
        {"sha1", mg_lua_redis_sha1},
        {NULL, NULL},
    };
    if (!vm->ws) {
        vm->ws = calloc(1, sizeof *vm->ws);
        if (!vm->ws)
            mg_fatal("out of memory (lua runtime)");
    }
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, vm);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "moongate.lio");
    lua_pop(L, 2);
    mg_lua_shdict_open(L, vm);
}

int mg_lua_task_boot(struct mg_lua *vm)
{
    lua_State *L = vm->L;
    struct mg_lua_ws *ws = vm->ws;
    static const char *const fns[] = {"resume", "abandon", "timer", "init_worker", "run_waiting"};
    int *refs[] = {&ws->ref_resume, &ws->ref_abandon, &ws->ref_timer, &ws->ref_init_worker,
                   &ws->ref_run};
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "moongate.runner");
    for (size_t i = 0; i < 5; i++) {
        lua_getfield(L, -1, fns[i]);
        if (!lua_isfunction(L, -1)) {
            lua_pop(L, 4);
            return -1;
        }
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 3);
    return 0;
}

/* ------------------------------------------------------------ operations */

struct mg_lua_task *mg_lua_waiting_task(struct mg_lua *vm)
{
    return vm && vm->ws ? vm->ws->cur_task : NULL;
}

uv_loop_t *mg_lua_loop(struct mg_lua *vm)
{
    return vm && vm->ws ? vm->ws->loop : NULL;
}

void mg_lua_io_begin(struct mg_lua *vm, struct mg_lua_io *io)
{
    struct mg_lua_task *t = vm->ws->cur_task;
    MG_ASSERT(t && !t->io);
    io->task = t;
    io->done = false;
    t->io = io;
    t->ready = false;
    t->plugin = vm->cur_plugin;
    io->start_ns = uv_hrtime();
}

void mg_lua_io_failed(struct mg_lua *vm, enum mg_lua_io_kind kind)
{
    if (vm->hooks.io_done)
        vm->hooks.io_done(vm->hooks.data, vm->cur_plugin, kind, MG_LUA_IO_ERROR, 0);
}

void mg_lua_io_complete(struct mg_lua_io *io)
{
    struct mg_lua_task *t = io->task;
    io->done = true;
    if (!t) {
        io->release(io);
        return;
    }
    if (t->vm->hooks.io_done)
        t->vm->hooks.io_done(t->vm->hooks.data, t->plugin, (enum mg_lua_io_kind)io->kind,
                             (enum mg_lua_io_result)io->result, uv_hrtime() - io->start_ns);
    t->ready = true;
    if (t->key && t->wake)
        t->wake(t);
}

/* Drops the task's operation: cancelled when pending, released when done. */
static void drop_io(struct mg_lua_task *t)
{
    struct mg_lua_io *io = t->io;
    if (!io)
        return;
    t->io = NULL;
    if (io->done) {
        io->release(io);
    } else {
        io->task = NULL;
        io->cancel(io);
    }
}

/* ------------------------------------------------------------ tasks */

static void task_reset(struct mg_lua_task *t, struct mg_lua *vm, struct mg_lua_ctx *ctx,
                       enum mg_lua_phase phase)
{
    t->vm = vm;
    t->ctx = ctx;
    t->io = NULL;
    t->key = 0;
    t->plugin = -1;
    t->phase = phase;
    t->cpu_ns = 0;
    t->ready = false;
}

void mg_lua_task_push_run(struct mg_lua *vm)
{
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->ws->ref_run);
}

void mg_lua_task_note_wait(struct mg_lua *vm, int key)
{
    struct mg_lua_task *t = vm->ws ? vm->ws->cur_task : NULL;
    if (t)
        t->key = key;
}

bool mg_lua_task_waiting(const struct mg_lua_task *t)
{
    return t->vm && t->key != 0;
}

enum mg_lua_result mg_lua_run_task(struct mg_lua *vm, size_t route, enum mg_lua_phase phase,
                                   struct mg_lua_ctx *ctx, struct mg_lua_task *t)
{
    if (!mg_lua_route_active(vm, route, phase))
        return MG_LUA_OK;
    task_reset(t, vm, ctx, phase);
    vm->ws->cur_task = t;
    enum mg_lua_result r = mg_lua_run(vm, route, phase, ctx);
    vm->ws->cur_task = NULL;
    if (r == MG_LUA_WAIT) { /* Lua time of this first slice, from the guard's start (ms) */
        uint64_t start = atomic_load_explicit(&vm->guard.start_ms, memory_order_relaxed);
        uint64_t now = mg_lua_clock_ns() / 1000000u;
        t->cpu_ns = now > start ? (now - start) * 1000000u : 0;
    }
    if (r != MG_LUA_WAIT || !t->io) {
        if (r == MG_LUA_WAIT) /* yielded without an operation: cannot go on */
            mg_lua_task_abandon(t);
        drop_io(t);
        return r == MG_LUA_WAIT ? MG_LUA_ERROR : r;
    }
    return r;
}

static uint32_t remaining_ms(const struct mg_lua_task *t, uint32_t limit)
{
    uint64_t used = t->cpu_ns / 1000000u;
    return used + 1 >= limit ? 1 : limit - (uint32_t)used;
}

/* One protected call of the task's: the runner function and its `nargs`
 * arguments are pushed. Its result: a wait key (suspended again), true (a
 * plugin failed, logged), or false (done). */
static enum mg_lua_result task_call(struct mg_lua_task *t, int nargs)
{
    struct mg_lua *vm = t->vm;
    struct mg_lua_ws *ws = vm->ws;
    lua_State *L = vm->L;
    int top = lua_gettop(L) - nargs - 1;
    ws->cur_task = t;
    vm->cur = t->ctx;
    uint32_t limit = mg_lua_guard_phase_limit();
    uint64_t t0 = mg_lua_clock_ns();
    mg_lua_call_begin(vm, t->phase, t->plugin, remaining_ms(t, limit));
    vm->budget_ms = limit;
    int rc = lua_pcall(L, nargs, 1, 1);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        mg_error("plugin %s: %s: %s",
                 vm->cur_plugin >= 0 ? vm->plugins[vm->cur_plugin].name : "(runtime)",
                 t->phase == MG_LUA_INIT ? "timer" : mg_lua_phase_name(t->phase),
                 msg ? msg : "(error)");
    }
    mg_lua_call_end(vm, rc != 0);
    t->cpu_ns += mg_lua_clock_ns() - t0;
    ws->cur_task = NULL;
    enum mg_lua_result r;
    if (rc != 0) {
        r = MG_LUA_ERROR;
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        t->key = (int)lua_tointeger(L, -1);
        r = MG_LUA_WAIT;
    } else if (lua_toboolean(L, -1)) {
        r = MG_LUA_ERROR;
    } else if (t->phase == MG_LUA_ACCESS && t->ctx && t->ctx->respond.status) {
        r = MG_LUA_RESPONDED;
    } else {
        r = MG_LUA_OK;
    }
    lua_settop(L, top);
    if (r != MG_LUA_WAIT || !t->io) {
        if (r == MG_LUA_WAIT)
            mg_lua_task_abandon(t);
        drop_io(t);
        return r == MG_LUA_WAIT ? MG_LUA_ERROR : r;
    }
    return r;
}

/* Resumes t's coroutine through runner.resume(key, phase). */
static enum mg_lua_result resume_call(struct mg_lua_task *t)
{
    struct mg_lua *vm = t->vm;
    int key = t->key;
    t->key = 0;
    t->ready = false;
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->ws->ref_resume);
    lua_pushinteger(vm->L, key);
    lua_pushinteger(vm->L, t->phase);
    return task_call(t, 2);
}

enum mg_lua_result mg_lua_task_call_timer(struct mg_lua_task *t, struct mg_lua *vm, int id,
                                          int plugin)
{
    task_reset(t, vm, NULL, MG_LUA_INIT);
    t->plugin = plugin;
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->ws->ref_timer);
    lua_pushinteger(vm->L, id);
    return task_call(t, 1);
}

enum mg_lua_result mg_lua_task_resume(struct mg_lua_task *t)
{
    if (!mg_lua_task_waiting(t))
        return MG_LUA_ERROR;
    if (!t->ready)
        return MG_LUA_WAIT;
    return resume_call(t);
}

void mg_lua_task_abandon(struct mg_lua_task *t)
{
    if (!mg_lua_task_waiting(t)) {
        drop_io(t);
        return;
    }
    struct mg_lua *vm = t->vm;
    drop_io(t);
    int key = t->key;
    t->key = 0;
    t->ready = false;
    lua_State *L = vm->L;
    if (!L)
        return;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ws->ref_abandon);
    lua_pushinteger(L, key);
    if (lua_pcall(L, 1, 0, 0) != 0)
        mg_error("lua runtime: abandoning a waiting plugin: %s", lua_tostring(L, -1));
    lua_settop(L, top);
}

/* ------------------------------------------------------------ detached */

static void detached_unlink(struct mg_lua_task *t)
{
    if (t->pprev) {
        *t->pprev = t->next;
        if (t->next)
            t->next->pprev = t->pprev;
    }
    t->next = NULL;
    t->pprev = NULL;
}

/* A detached task ends: the ctx slot it kept goes back to the VM's pool. */
static void detached_free(struct mg_lua_task *t)
{
    detached_unlink(t);
    if (t->slot) {
        struct mg_lua_ctx tmp = {.slot = t->slot, .vm = t->vm};
        mg_lua_ctx_done(t->vm, &tmp);
    }
    free(t);
}

static void detached_wake(struct mg_lua_task *t)
{
    if (mg_lua_task_resume(t) == MG_LUA_WAIT)
        return;
    detached_free(t);
}

void mg_lua_task_detach(struct mg_lua_task *t)
{
    if (!mg_lua_task_waiting(t))
        return;
    struct mg_lua_ws *ws = t->vm->ws;
    struct mg_lua_task *d = malloc(sizeof *d);
    if (!d) {
        mg_lua_task_abandon(t);
        return;
    }
    *d = *t;
    /* Its request is over: ctx reads fail from now on, but the pooled ctx
     * object (and its vars) stays this task's until it ends, so no later
     * request can be handed the object the coroutine still holds. */
    d->ctx = NULL;
    d->slot = t->ctx ? t->ctx->slot : 0;
    if (t->ctx)
        t->ctx->slot = 0; /* mg_lua_ctx_done() of the exchange: a no-op now */
    d->wake = detached_wake;
    d->data = NULL;
    if (d->io)
        d->io->task = d;
    d->next = ws->detached;
    d->pprev = &ws->detached;
    if (d->next)
        d->next->pprev = &d->next;
    ws->detached = d;
    t->key = 0;
    t->io = NULL;
}

/* ------------------------------------------------------------ lifecycle */

/* Every P.init_worker(conf), each in its own protected call inside
 * runner.init_worker (a failing one is logged; the others still run). */
static void call_init_worker(struct mg_lua *vm)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ws->ref_init_worker);
    mg_lua_call_begin(vm, MG_LUA_INIT, -1, mg_lua_guard_init_limit());
    int rc = lua_pcall(L, 0, 0, 1);
    if (rc != 0)
        mg_error("lua runtime: init_worker: %s", lua_tostring(L, -1));
    mg_lua_call_end(vm, rc != 0);
    lua_settop(L, top);
}

void mg_lua_start(struct mg_lua *vm, uv_loop_t *loop)
{
    if (!vm || !vm->ws)
        return;
    vm->ws->loop = loop;
    call_init_worker(vm);
}

void mg_lua_retire(struct mg_lua *vm)
{
    if (!vm || !vm->ws)
        return;
    vm->ws->retired = true;
    mg_lua_timers_stop(vm);
}

static void drop_detached(struct mg_lua_ws *ws)
{
    while (ws->detached) {
        struct mg_lua_task *t = ws->detached;
        drop_io(t); /* the coroutine stays parked until the lua_State goes */
        detached_free(t);
    }
}

void mg_lua_stop(struct mg_lua *vm)
{
    if (!vm || !vm->ws)
        return;
    mg_lua_retire(vm);
    drop_detached(vm->ws);
    mg_lua_redis_close(vm);
}

void mg_lua_task_close(struct mg_lua *vm)
{
    struct mg_lua_ws *ws = vm->ws;
    if (!ws)
        return;
    mg_lua_timers_stop(vm);
    drop_detached(ws);
    mg_lua_redis_close(vm);
    mg_lua_shdict_close(vm);
    free(ws);
    vm->ws = NULL;
}
