/*
 * Plugins that wait (DESIGN.md section 10.3): a phase whose chain may wait
 * runs in a pooled coroutine of the worker's VM; when a plugin calls a
 * waiting function (gw.sleep, gw.timer callbacks...) the C side starts the
 * operation on the worker's loop, the coroutine yields and the caller gets
 * MG_LUA_WAIT. When the operation completes the task's wake callback runs and
 * its owner calls mg_lua_task_resume(). Time spent waiting is not charged to
 * the runaway guard; Lua time is (task->cpu_ns against the phase limit).
 *
 * Chains that never wait keep the direct call of mg_lua_run() and pay one
 * type check for this.
 *
 * Threads: the VM's thread only.
 */
#ifndef MG_LUA_TASK_H
#define MG_LUA_TASK_H

#include <stddef.h>
#include <uv.h>

#include "lua/task-t.h"
#include "lua/vm-t.h"

struct lua_State;
struct mg_lua;
struct mg_lua_ctx;

/* ---- for the owners (exchange/plugins.c, runtime.c) ---- */

/* Binds the VM to its worker's loop and runs every P.init_worker(conf) (per
 * route entry). Timers may start from then on. NULL vm is ignored. */
void mg_lua_start(struct mg_lua *vm, uv_loop_t *loop);
/* The VM's config generation was replaced: its timers stop now, their waits
 * are abandoned. Requests in flight finish. NULL is ignored. */
void mg_lua_retire(struct mg_lua *vm);
/* The worker stops: timers and every wait end now, while its loop can still
 * run their handle closes. NULL is ignored. */
void mg_lua_stop(struct mg_lua *vm);

/* mg_lua_run() for ACCESS or LOG with a task: MG_LUA_WAIT when a plugin
 * waits (the task is then suspended: set t->wake/t->data before returning to
 * the loop). */
enum mg_lua_result mg_lua_run_task(struct mg_lua *vm, size_t route, enum mg_lua_phase phase,
                                   struct mg_lua_ctx *ctx, struct mg_lua_task *t);
/* Runs the suspended task on when its operation completed: OK, RESPONDED,
 * ERROR (logged), or MG_LUA_WAIT again (also when it is not ready yet). */
enum mg_lua_result mg_lua_task_resume(struct mg_lua_task *t);
/* Whether the task is suspended. */
bool mg_lua_task_waiting(const struct mg_lua_task *t);
/* Gives up a suspended task (client gone, deadline): its operation is
 * cancelled or its result dropped; the coroutine is never resumed. No-op when
 * it is not suspended. */
void mg_lua_task_abandon(struct mg_lua_task *t);
/* Moves a suspended task off its owner (a log phase outliving its exchange):
 * it goes on without a ctx and frees itself at its end. */
void mg_lua_task_detach(struct mg_lua_task *t);

/* ---- for the operations (timer.c, ...) ---- */

/* The task of the running call that may wait, or NULL (then raise "cannot
 * wait here"). */
struct mg_lua_task *mg_lua_waiting_task(struct mg_lua *vm);
/* The VM's loop, or NULL (config check). */
uv_loop_t *mg_lua_loop(struct mg_lua *vm);
/* Attaches a started operation to the running task. */
void mg_lua_io_begin(struct mg_lua *vm, struct mg_lua_io *io);
/* The operation completed (results stored in it): wakes its task, or frees
 * the operation when the task was abandoned. Call from a loop callback. */
void mg_lua_io_complete(struct mg_lua_io *io);
/* An operation of the running plugin failed before it could start (Redis down,
 * no such upstream): counted as an error that did not wait. */
void mg_lua_io_failed(struct mg_lua *vm, enum mg_lua_io_kind kind);

/* ---- for vm.c ---- */

/* Opens package.loaded["moongate.lio"] (the C functions of the waiting side)
 * before the runner boots; fetches the runner functions after. */
void mg_lua_task_open(struct lua_State *L, struct mg_lua *vm);
int mg_lua_task_boot(struct mg_lua *vm);
/* Pushes runner.run_waiting (mg_lua_run for a chain that may wait). */
void mg_lua_task_push_run(struct mg_lua *vm);
/* vm->cur's chain ran with a wait key on the stack top: records it. */
void mg_lua_task_note_wait(struct mg_lua *vm, int key);
/* Frees what the VM's waiting side holds (before lua_close). */
void mg_lua_task_close(struct mg_lua *vm);
/* vm.c's guard and timing around a protected call (call_begin/call_end). */
void mg_lua_call_begin(struct mg_lua *vm, enum mg_lua_phase phase, int plugin, uint32_t limit_ms);
void mg_lua_call_end(struct mg_lua *vm, bool failed);

#endif
