/*
 * gw.sleep and gw.timer (see timer.h).
 *
 * Ownership: a sleep belongs to its task until it completes or is dropped; its
 * uv handle is closed exactly once, by cancel or release, and the close
 * callback frees it. A timer belongs to its VM's list; a one-shot timer frees
 * itself after its callback ran, a repeating one with the VM or its retirement.
 * A repeating timer whose previous run still waits skips the tick.
 */
#include "lua/timer.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>

#include "core/log.h"
#include "lua/state-t.h"
#include "lua/task.h"
#include "lua/ws-t.h"

#define MAX_SECONDS (365.0 * 24 * 3600)

/* ------------------------------------------------------------ sleep */

struct sleep_io {
    struct mg_lua_io io;
    uv_timer_t h;
};

static void sleep_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sleep_close(struct mg_lua_io *io)
{
    struct sleep_io *s = (struct sleep_io *)io;
    if (!uv_is_closing((uv_handle_t *)&s->h)) /* the worker's final walk may have */
        uv_close((uv_handle_t *)&s->h, sleep_closed);
}

static void sleep_fired(uv_timer_t *h)
{
    struct sleep_io *s = h->data;
    s->io.kind = MG_LUA_IO_SLEEP;
    s->io.result = MG_LUA_IO_OK;
    mg_lua_io_complete(h->data);
}

static uint64_t to_ms(lua_State *L, int arg, const char *what)
{
    double s = luaL_checknumber(L, arg);
    if (!(s >= 0 && s <= MAX_SECONDS))
        luaL_error(L, "%s: seconds must be between 0 and one year, got %f", what, s);
    return (uint64_t)ceil(s * 1000.0);
}

int mg_lua_timer_sleep(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    uint64_t ms = to_ms(L, 1, "gw.sleep");
    uv_loop_t *loop = mg_lua_loop(vm);
    if (!mg_lua_waiting_task(vm) || !loop)
        return luaL_error(L,
                          "gw.sleep: cannot wait here (only in access, log and timer callbacks)");
    struct sleep_io *s = calloc(1, sizeof *s);
    if (!s)
        return luaL_error(L, "gw.sleep: out of memory");
    s->io.cancel = sleep_close;
    s->io.release = sleep_close;
    uv_timer_init(loop, &s->h);
    s->h.data = s;
    uv_timer_start(&s->h, sleep_fired, ms, 0);
    mg_lua_io_begin(vm, &s->io);
    return 0;
}

/* ------------------------------------------------------------ timers */

struct mg_lua_timer {
    uv_timer_t h;
    struct mg_lua *vm;
    int id;     /* the runner's */
    int plugin; /* who started it (timing, errors) */
    bool repeat;
    struct mg_lua_task task;
    struct mg_lua_timer *next, **pprev;
};

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timer_free(struct mg_lua_timer *tm)
{
    if (tm->pprev) {
        *tm->pprev = tm->next;
        if (tm->next)
            tm->next->pprev = tm->pprev;
        tm->pprev = NULL;
    }
    if (!uv_is_closing((uv_handle_t *)&tm->h))
        uv_close((uv_handle_t *)&tm->h, timer_closed);
}

/* A run of the callback ended (not waiting any more). */
static void timer_ran(struct mg_lua_timer *tm)
{
    if (!tm->repeat)
        timer_free(tm);
}

static void timer_wake(struct mg_lua_task *t)
{
    struct mg_lua_timer *tm = t->data;
    if (mg_lua_task_resume(t) != MG_LUA_WAIT)
        timer_ran(tm);
}

static void timer_fired(uv_timer_t *h)
{
    struct mg_lua_timer *tm = h->data;
    if (mg_lua_task_waiting(&tm->task))
        return; /* the last run still waits: skip this tick */
    enum mg_lua_result r = mg_lua_task_call_timer(&tm->task, tm->vm, tm->id, tm->plugin);
    if (r == MG_LUA_WAIT) {
        tm->task.wake = timer_wake;
        tm->task.data = tm;
        return;
    }
    timer_ran(tm);
}

int mg_lua_timer_start(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    int id = (int)luaL_checkinteger(L, 1);
    uint64_t delay = to_ms(L, 2, "gw.timer");
    uint64_t interval = to_ms(L, 3, "gw.timer");
    uv_loop_t *loop = mg_lua_loop(vm);
    if (!loop || vm->ws->retired) {
        lua_pushnil(L);
        lua_pushstring(L, loop ? "this config generation was retired by a reload"
                               : "no worker loop here (start timers from init_worker, access, "
                                 "log or another timer)");
        return 2;
    }
    struct mg_lua_timer *tm = calloc(1, sizeof *tm);
    if (!tm)
        return luaL_error(L, "gw.timer: out of memory");
    tm->vm = vm;
    tm->id = id;
    tm->plugin = vm->cur_plugin;
    tm->repeat = interval > 0;
    uv_timer_init(loop, &tm->h);
    uv_unref((uv_handle_t *)&tm->h); /* timers never keep a draining worker alive */
    tm->h.data = tm;
    uv_timer_start(&tm->h, timer_fired, delay, interval);
    tm->next = vm->ws->timers;
    tm->pprev = &vm->ws->timers;
    if (tm->next)
        tm->next->pprev = &tm->next;
    vm->ws->timers = tm;
    lua_pushboolean(L, 1);
    return 1;
}

void mg_lua_timers_stop(struct mg_lua *vm)
{
    while (vm->ws && vm->ws->timers) {
        struct mg_lua_timer *tm = vm->ws->timers;
        uv_timer_stop(&tm->h);
        mg_lua_task_abandon(&tm->task);
        timer_free(tm);
    }
}
