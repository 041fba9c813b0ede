/*
 * The C side of one plugin VM (struct mg_lua), private to gateway/lua/.
 *
 * Invariant: `cur` is non-NULL exactly while a protected call for a request
 * runs (mg_lua_run / mg_lua_balance); the FFI functions (ctx.c) act only on
 * `cur`, and only when the Lua side names its slot, so a ctx object kept by a
 * plugin past its request can never reach another request's memory.
 *
 * Ownership: everything here is owned by the VM and freed by mg_lua_free();
 * `cfg` is borrowed (the proxy's snapshot outlives the VM).
 */
#ifndef MG_LUA_STATE_T_H
#define MG_LUA_STATE_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "lua/ctx-t.h"
#include "lua/guard-t.h"
#include "lua/vm-t.h"

struct lua_State;
struct mg_lua_ws;

/* Bits of mg_lua.slot_flags[slot] (lua/moongate/ctx.lua has the same): what
 * the Lua side did for the request that holds the slot. */
#define MG_LUA_SLOT_VARS      1u /* ctx.vars cleared for it */
#define MG_LUA_SLOT_CACHE     2u /* the cached request fields cleared for it */
#define MG_LUA_SLOT_RESPONDED 4u /* ctx:respond() ran */

/* Bits of mg_lua_plugin.caps and mg_lua_route.active: 1 << enum mg_lua_phase. */
#define MG_LUA_CAP(phase) (1u << (phase))

struct mg_lua_plugin {
    char *name;
    char *path;    /* the file it was loaded from */
    unsigned caps; /* MG_LUA_CAP of each function it defines */
    struct mg_lua_plugin_stats stats[MG_LUA_PHASE__COUNT];
};

struct mg_lua_route {
    unsigned active;                  /* MG_LUA_CAP of phases with something to run */
    unsigned waits;                   /* MG_LUA_CAP of phases run in a coroutine */
    size_t body_max;                  /* the largest P.body.max of its plugins; 0: no buffering */
    bool body_filter;                 /* some plugin has P.body_filter */
    int first[MG_LUA_PHASE__COUNT];   /* plugin id first in each chain, -1: none */
    int ref_run[MG_LUA_PHASE__COUNT]; /* runner.runner(route, phase) (balance:
                                         runner.balancer(route)): the pre-bound
                                         entry (registry); 0: none */
    int stk_run[MG_LUA_PHASE__COUNT]; /* the same entry's index on the Lua stack
                                         (cheaper to push); 0: registry only */
    const struct mg_lua_target *last_targets; /* memo of the last targets array */
    size_t last_n;
    unsigned last_id; /* its index in mg_lua.tarrays */
    unsigned lua_id;  /* last_id + 1 as the balance entry last saw it; 0: none */
};

/* A targets array the proxy handed to mg_lua_balance(): Lua wraps it once and
 * finds it again by index, so the pointer crosses into Lua only once (a light
 * userdata push costs as much as the rest of the call in GC64 LuaJIT). */
struct mg_lua_tarray {
    const struct mg_lua_target *targets;
    size_t n;
    bool wrapped; /* Lua holds its view (set after a good call) */
};

struct mg_lua {
    struct lua_State *L; /* stack: [1] traceback handler, [2] runner.run,
                            [3] runner.balance, then the routes' pre-bound
                            entries up to stack_top; nothing else between calls */
    int stack_top;
    const struct mg_config *cfg;
    unsigned worker_id;
    bool checking; /* scratch VM of mg_lua_check_config() */
    struct mg_lua_hooks hooks;

    struct mg_lua_route *routes; /* [cfg->nroutes] */
    struct mg_lua_plugin *plugins;
    size_t nplugins, plugins_cap;
    int ref_load, ref_entry, ref_run, ref_balance; /* runner functions (registry) */
    int ref_body_filter;
    struct mg_lua_tarray *tarrays;
    size_t ntarrays, tarrays_cap;

    /* the call in progress */
    struct mg_lua_ctx *cur; /* request of the running phase, NULL otherwise */
    enum mg_lua_phase phase;
    int cur_plugin;    /* plugin being timed, -1: none */
    bool cur_failed;   /* it raised an error already reported */
    uint64_t t_plugin; /* ns: when cur_plugin was entered */
    uint64_t t_end;    /* ns: when the last request-time call returned */
    double pick;       /* a balance call's result, stored by the Lua side (0: none) */
    uint32_t cur_slot; /* the slot of a pre-bound entry's call: it reads it here */
    /* The running phase's whole time limit, for the guard's message: a phase
     * resumed after a wait runs with only what is left of it (task.c). */
    uint32_t budget_ms;

    /* ctx slots: ctx objects and their ctx.vars, pooled per VM in Lua */
    uint8_t *slot_flags; /* [slot]: MG_LUA_SLOT_* of its request so far; C zeroes
                            it when the slot is bound to a new request, Lua
                            reads and sets it (through &slot_flags: it moves
                            when slots grow) */
    uint32_t *free_slots;
    size_t nfree, free_cap;
    uint32_t next_slot; /* slots handed out so far; slot numbers start at 1 */

    struct mg_lua_guard guard;
    struct mg_lua_ws *ws; /* plugins that wait (task.c, timer.c) */
};

#endif
