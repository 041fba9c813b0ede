/*
 * gw.sleep and gw.timer.at/every (DESIGN.md section 10.3): libuv timers on the
 * worker's loop. A sleep is an operation of the running task (task.h); a timer
 * runs its callback as a task of its own, which may wait too. Timers belong to
 * their VM's config generation: mg_lua_timers_stop() ends them at a reload.
 */
#ifndef MG_LUA_TIMER_H
#define MG_LUA_TIMER_H

#include "lua/vm-t.h"

struct lua_State;
struct mg_lua;
struct mg_lua_task;

/* lio.sleep(seconds): starts the running task's sleep (the Lua side yields). */
int mg_lua_timer_sleep(struct lua_State *L);
/* lio.timer(id, delay, interval): starts runner timer `id` (interval 0: once);
 * returns true, or nil and a message. */
int mg_lua_timer_start(struct lua_State *L);
/* Stops and frees every timer of the VM, abandoning their waits. */
void mg_lua_timers_stop(struct mg_lua *vm);

/* task.c: runs runner.timer(id) as task t (phase INIT, timed for `plugin`). */
enum mg_lua_result mg_lua_task_call_timer(struct mg_lua_task *t, struct mg_lua *vm, int id,
                                          int plugin);

#endif
