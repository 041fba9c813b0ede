/*
 * The waiting side's part of a VM (task.c, timer.c), private to gateway/lua/:
 * struct mg_lua holds a pointer to it so vm.c stays unaware of its fields.
 */
#ifndef MG_LUA_WS_T_H
#define MG_LUA_WS_T_H

#include <stdbool.h>
#include <uv.h>

struct mg_lua_task;
struct mg_lua_timer;
struct mg_shdict;
struct mg_lua_redis;
struct mg_loopctx;
struct mg_upstream_rt;

struct mg_lua_ws {
    uv_loop_t *loop;              /* the worker's, once started; NULL: config check */
    struct mg_lua_task *cur_task; /* the running call that may wait, or NULL */
    struct mg_lua_task *detached; /* log phases that outlived their exchange */
    struct mg_lua_timer *timers;  /* gw.timer.at/every of this VM */
    int ref_resume, ref_abandon, ref_timer, ref_init_worker, ref_run; /* runner functions */
    bool retired;             /* generation replaced: no new timers */
    struct mg_shdict **dicts; /* cfg->shared_dicts, references held */
    size_t ndicts;
    struct mg_lua_redis *redis; /* gw.redis's connection (redis.c), or NULL */
    unsigned http_rr;           /* gw.http.request to an upstream: its targets in turn */
    /* gw.http.request to an upstream leases from these pools (runtime.c binds
     * them; NULL: none, e.g. a config check) */
    struct mg_loopctx *loopctx;
    struct mg_upstream_rt *ups; /* [cfg->nupstreams], the runtime's */
};

#endif
