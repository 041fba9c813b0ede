/*
 * Types of the waiting side of the plugin runtime (task.h): a suspended
 * plugin coroutine and the one operation it waits for.
 */
#ifndef MG_LUA_TASK_T_H
#define MG_LUA_TASK_T_H

#include <stdbool.h>
#include <stdint.h>

#include "lua/vm-t.h"

struct lua_State;
struct mg_lua;
struct mg_lua_ctx;
struct mg_lua_task;

/* One operation a coroutine waits for (a sleep, an HTTP call...). It is
 * malloc'd by its kind and owned through its task; once the task is gone
 * (abandoned) `task` is NULL and the operation frees itself when it can. */
struct mg_lua_io {
    struct mg_lua_task *task; /* NULL once abandoned */
    bool done;                /* completed: results kept until taken */
    uint8_t kind;             /* enum mg_lua_io_kind */
    uint8_t result;           /* enum mg_lua_io_result, set before completing */
    uint64_t start_ns;        /* mg_lua_io_begin(): the wait histogram's start */
    /* Pending: stop it; it frees itself (maybe later, after a handle closes). */
    void (*cancel)(struct mg_lua_io *io);
    /* Completed: push its results (inside a protected call); returns how many. */
    int (*push)(struct lua_State *L, struct mg_lua_io *io);
    /* Completed: release it. */
    void (*release)(struct mg_lua_io *io);
};

/* A plugin run (a phase's chain, a timer callback) that may be suspended in a
 * coroutine. Embedded in its owner: the exchange for access, the timer, or a
 * heap copy for a log phase that outlives its exchange. */
struct mg_lua_task {
    struct mg_lua *vm;
    struct mg_lua_ctx *ctx; /* the request it acts for, NULL: none (timer, detached log) */
    struct mg_lua_io *io;   /* what it waits for (pending or done), or NULL */
    int key;                /* runner's id of the suspended coroutine, 0: not suspended */
    int plugin;             /* the plugin that waits (timing, error attribution) */
    enum mg_lua_phase phase;
    uint64_t cpu_ns; /* Lua time used so far: the runaway guard's budget */
    bool ready;      /* io completed: resume it */
    /* The owner's news: io completed, call mg_lua_task_resume() (from a loop
     * callback, never inside Lua). */
    void (*wake)(struct mg_lua_task *t);
    void *data;
    struct mg_lua_task *next, **pprev; /* detached tasks of the VM */
    uint32_t slot; /* detached: the ctx slot it keeps (its pooled ctx object) until its end */
};

#endif
