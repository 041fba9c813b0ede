/*
 * The runaway-plugin guard: plugin source is instrumented so that every loop
 * iteration and every function entry checks a stop byte, and a process-wide
 * watchdog thread sets that byte when a VM has been inside one call for longer
 * than its limit. The check raises a Lua error, so the call ends like any
 * plugin error (500 plugin_error) and the VM stays usable. Plugin functions
 * get two more upvalues (__mg_n, __mg_c) and each file four more locals.
 *
 * Why not a count hook: LuaJIT's compiled traces ignore hooks (LuaJIT#723), so
 * `while true do end` would spin forever once compiled; turning the JIT off
 * for plugins would make every plugin several times slower. The inserted check
 * costs ~1 ns per loop iteration compiled and ~5 ns interpreted.
 */
#ifndef MG_LUA_GUARD_H
#define MG_LUA_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/guard-t.h"

/* What the instrumented code looks like. Each check counts down a chunk-level
 * counter (a few bytecodes: cheap in the interpreter too) and every
 * MG_GUARD_EVERY checks calls __mg_c, which reads the stop byte. That read
 * happens in the slow path only, so it lands in a side trace that runs anew
 * each time: LuaJIT cannot hoist it out of a compiled loop (the FFI ignores
 * `volatile`, and a load inside the loop body would be hoisted). Once the
 * stop byte is set the counter stays negative, so every later check raises
 * too: a plugin that catches the error with pcall cannot keep looping.
 * The loader defines two globals of the plugin's environment:
 *   __mg_w: a `const uint8_t *` cdata pointing at the stop byte (mg_lua_guard_stop)
 *   __mg_a: a function that raises the time-limit error */
#define MG_GUARD_EVERY "1000"
#define MG_GUARD_CHECK " __mg_n=__mg_n-1 if __mg_n<0 then __mg_c() end "
#define MG_GUARD_PROLOGUE                                                                          \
    "local __mg_w,__mg_a=__mg_w,__mg_a local __mg_n=" MG_GUARD_EVERY                               \
    " local function __mg_c() if __mg_w[0]~=0 then __mg_a() end __mg_n=" MG_GUARD_EVERY " end "

/* Returns a malloc'd copy of the Lua source `src` with MG_GUARD_PROLOGUE at the
 * start and MG_GUARD_CHECK after every `do`, `repeat` and function parameter
 * list and before every `goto`. Newlines are kept, so line numbers in errors
 * and tracebacks do not move. *outlen receives the length (the copy is also
 * NUL-terminated). Returns NULL when the source does not lex (an unfinished
 * string or comment): load the original then, so Lua reports the error. */
char *mg_lua_guard_source(const char *src, size_t len, size_t *outlen);

/* Adds a VM's guard to the watchdog (starting its thread if needed) / removes
 * it (stopping the thread with the last one). Any thread. */
void mg_lua_guard_register(struct mg_lua_guard *g);
void mg_lua_guard_unregister(struct mg_lua_guard *g);

/* Around every protected call into plugin code, on the VM's thread. enter()
 * clears the stop byte; `limit_ms` bounds this call. */
void mg_lua_guard_enter(struct mg_lua_guard *g, uint64_t now_ms, uint32_t limit_ms);
void mg_lua_guard_leave(struct mg_lua_guard *g);

/* Whether the watchdog stopped the call in progress (or the last one, before
 * the next enter()). */
bool mg_lua_guard_stopped(const struct mg_lua_guard *g);

/* Address of the stop byte inside g->word, for the FFI. */
const uint8_t *mg_lua_guard_stop(const struct mg_lua_guard *g);

/* Process-wide limits in ms (see vm.h). */
uint32_t mg_lua_guard_phase_limit(void);
uint32_t mg_lua_guard_init_limit(void);
void mg_lua_guard_set_limits(uint32_t phase_ms, uint32_t init_ms);

/* Monotonic clock, in ns and ms. */
uint64_t mg_lua_clock_ns(void);

#endif
