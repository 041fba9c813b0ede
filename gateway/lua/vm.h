/*
 * The Lua plugin runtime (DESIGN.md section 6): one LuaJIT VM per worker per
 * config snapshot, the plugin chains of every route, and the balancer hook.
 *
 * (Named vm.h rather than lua.h: a quoted #include "lua.h" inside this folder
 * would otherwise find this file instead of LuaJIT's.)
 *
 * Threads: mg_lua_check_config() and mg_lua_new() may run on any thread (they
 * block on file I/O: never on a worker loop that serves traffic). A VM is then
 * used by one thread at a time: its worker. mg_lua_free() runs on the thread
 * that last used the VM, after the last request bound to it called
 * mg_lua_ctx_done(). Process-wide: a watchdog thread (guard.c) that bounds a
 * plugin's run time; it starts with the first VM and stops with the last.
 *
 * Errors: every plugin failure (missing file, syntax error, a raised error,
 * a runaway loop) is reported as a value, never a crash: config time gives
 * "FILE:LINE:COL: routes[I].plugins[J]: plugin NAME: MESSAGE"; request time
 * gives MG_LUA_ERROR after logging "plugin NAME: PHASE: MESSAGE + traceback".
 */
#ifndef MG_LUA_VM_H
#define MG_LUA_VM_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config-t.h"
#include "lua/ctx-t.h"
#include "lua/vm-t.h"

struct mg_arena;

/* Default run-time limits (guard.c). A plugin call (one phase of one request,
 * the whole chain) that runs longer is stopped with an error at its next loop
 * iteration or function entry; loading a plugin file plus its init() calls get
 * the larger init limit. Detection granularity: a quarter of the limit. */
#define MG_LUA_PHASE_LIMIT_MS 200
#define MG_LUA_INIT_LIMIT_MS  2000

/* ---- config time ---- */

/* Validates every plugin and non-default balancer of `cfg` in a scratch VM:
 * finds NAME.lua (cfg->plugin_path dirs in order, then the bundled MG_PLUGIN_DIR),
 * loads it, checks it returns a table of known functions, and runs init(conf)
 * for each route entry. Returns 0, or -1 with one line in `err` (always
 * NUL-terminated when errlen > 0):
 *   "FILE:LINE:COL: routes[I].plugins[J]: plugin NAME: MESSAGE"  (I, J 0-based)
 *   "FILE:LINE:COL: routes[I].balancer: plugin NAME: MESSAGE"
 * Blocking: main thread at `moongate -t` and before publishing a reload. */
int mg_lua_check_config(const struct mg_config *cfg, char *err, size_t errlen);

/* True when some route of `cfg` runs a plugin or a Lua balancer. When false the
 * proxy may skip creating VMs altogether. Stats the plugin directories. */
bool mg_lua_needed(const struct mg_config *cfg);

/* Creates the VM of worker `worker_id` for snapshot `cfg`: loads every plugin
 * fresh from disk and runs init(conf) per route entry. `cfg` must outlive the
 * VM (the VM keeps no reference count: the proxy's snapshot runtime owns both).
 * `hooks` may be NULL; it is copied. Returns NULL with the same one-line error
 * as mg_lua_check_config() on failure. */
struct mg_lua *mg_lua_new(const struct mg_config *cfg, unsigned worker_id,
                          const struct mg_lua_hooks *hooks, char *err, size_t errlen);

/* Closes the VM. NULL is ignored. No request may still be bound to it. */
void mg_lua_free(struct mg_lua *vm);

/* ---- request time (the VM's thread only) ---- */

/* Whether the route has anything to run in `phase`: a plugin with that
 * function, or for MG_LUA_BALANCE a Lua balancer (false for the default
 * round_robin without config: the proxy's C balancer does exactly that).
 * When false, skip the VM: it costs nothing. vm == NULL gives false. */
bool mg_lua_route_active(const struct mg_lua *vm, size_t route, enum mg_lua_phase phase);

/* Whether the route's chain for `phase` runs in a coroutine (some plugin of it
 * may wait): run it with mg_lua_run_task() then. The others are direct calls
 * that never return MG_LUA_WAIT: mg_lua_run() suffices, with no task
 * bookkeeping. vm == NULL gives false. */
bool mg_lua_route_waits(const struct mg_lua *vm, size_t route, enum mg_lua_phase phase);

/* All of the above for one route in one word, read once per request (when it
 * is routed) so the exchange's later phase checks are bit tests: bits
 * 1u << phase as mg_lua_route_active(), those shifted left by
 * MG_LUA_CAPS_WAITS_SHIFT as mg_lua_route_waits(), MG_LUA_CAPS_BODY_FILTER as
 * mg_lua_route_body_filter(), MG_LUA_CAPS_BODY when mg_lua_route_body_max()
 * is not 0 (so most requests need not ask). 0 for vm == NULL. */
#define MG_LUA_CAPS_WAITS_SHIFT 8
/* The CLOCK_MONOTONIC ns (uv_hrtime()'s clock) at which the last phase or
 * balance call returned, read for plugin_duration_seconds anyway: a caller
 * that needs "now" right after the call can use it instead of reading the
 * clock again. 0 after an mg_lua_balance() that called nothing, and for
 * vm == NULL. */
uint64_t mg_lua_call_end_ns(const struct mg_lua *vm);
#define MG_LUA_CAPS_BODY_FILTER (1u << 16)
#define MG_LUA_CAPS_BODY        (1u << 17)
unsigned mg_lua_route_caps(const struct mg_lua *vm, size_t route);

/* The bytes of request body the route's plugins want buffered before the
 * access phase (the largest P.body.max), 0 for none (DESIGN.md 10.4). */
size_t mg_lua_route_body_max(const struct mg_lua *vm, size_t route);

/* Whether some plugin of the route has P.body_filter (its responses are then
 * re-framed as chunked: their length may change). */
bool mg_lua_route_body_filter(const struct mg_lua *vm, size_t route);

/* Runs the route's body filters over one piece of the response body (eof:
 * the last call, with the remaining output, often n == 0). *out: the bytes to
 * send instead, in ctx->arena (p == NULL: send the input unchanged). -1 when a
 * filter raised (logged, counted) or the changed output passed
 * MG_LUA_FILTER_BYTES_MAX for the request. */
#define MG_LUA_FILTER_BYTES_MAX (8u * 1024 * 1024)
int mg_lua_body_filter(struct mg_lua *vm, size_t route, struct mg_lua_ctx *ctx, const char *p,
                       size_t n, bool eof, struct mg_lua_str *out);

/* Prepares a request's context: zeroes everything, sets `arena` (outputs are
 * allocated from it) and latency = -1. Fill the inputs afterwards. */
void mg_lua_ctx_init(struct mg_lua_ctx *ctx, struct mg_arena *arena);

/* The same for a proxy whose request inputs come from `fill` (ctx-t.h, "lazy
 * inputs") and whose ctx memory is all zero already (the exchange's
 * per-request part is, from its calloc and each reset): nothing is zeroed
 * again; fill(ctx, data) sets every request input before anything reads one. */
void mg_lua_ctx_init_lazy(struct mg_lua_ctx *ctx, struct mg_arena *arena,
                          void (*fill)(struct mg_lua_ctx *, void *), void *data);

/* Ends a request's use of the VM: its ctx.vars table goes back to the pool
 * (cleared when reused). Call it once per request that ran any phase (it is a
 * no-op for one that did not), with the VM the request started on; vm == NULL
 * means ctx->vm. Then the ctx may be reused or dropped. Never allocates. */
void mg_lua_ctx_done(struct mg_lua *vm, struct mg_lua_ctx *ctx);

/* Runs the route's chain for `phase` (ACCESS, RESPONSE or LOG) in config order,
 * through one protected call. ACCESS stops at the first plugin that responds
 * (MG_LUA_RESPONDED: send ctx->respond with ctx->resp_edits applied; run no
 * balance or response phase for it, only log). On error the chain stops (in LOG, the other plugins
 * still run), the error is logged with plugin name, phase and traceback, and counted. A request's
 * ctx is bound to the first VM that runs it: later phases must use the same VM (ctx->vm). */
enum mg_lua_result mg_lua_run(struct mg_lua *vm, size_t route, enum mg_lua_phase phase,
                              struct mg_lua_ctx *ctx);

/* Asks the route's Lua balancer for a target. `targets` (n of them, n <= 2^20)
 * is read in place through the FFI. Returns the 0-based index of an available
 * target, or -1 when the balancer returned nil, a non-integer, an index out of
 * range or an unavailable target (the proxy then takes the next available one
 * and counts a fallback), or raised: then *error is true (logged, counted: the
 * proxy answers 500 plugin_error). */
int mg_lua_balance(struct mg_lua *vm, size_t route, struct mg_lua_ctx *ctx,
                   const struct mg_lua_target *targets, size_t n, bool *error);

/* ---- observation ---- */

/* Distinct plugins (and Lua balancers) loaded in the VM; ids are 0..n-1. */
size_t mg_lua_nplugins(const struct mg_lua *vm);
const char *mg_lua_plugin_name(const struct mg_lua *vm, unsigned plugin);
/* Copies the counters of one plugin and phase (zeros for a bad id). */
struct mg_lua_plugin_stats mg_lua_plugin_stats(const struct mg_lua *vm, unsigned plugin,
                                               enum mg_lua_phase phase);
/* Sum of errors over every plugin and phase. */
uint64_t mg_lua_errors(const struct mg_lua *vm);
/* Bytes of Lua heap in use (the VM's thread only). */
size_t mg_lua_memory(const struct mg_lua *vm);

const char *mg_lua_phase_name(enum mg_lua_phase phase);

/* Process-wide limits (0 keeps the current value); they apply to calls that
 * start afterwards. Defaults: MG_LUA_PHASE_LIMIT_MS and MG_LUA_INIT_LIMIT_MS. */
void mg_lua_set_time_limits(unsigned phase_ms, unsigned init_ms);

#endif
