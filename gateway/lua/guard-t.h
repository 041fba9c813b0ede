/*
 * Types of the runaway-plugin guard (guard.c).
 */
#ifndef MG_LUA_GUARD_T_H
#define MG_LUA_GUARD_T_H

#include <stdatomic.h>
#include <stdint.h>

/* Bits of mg_lua_guard.word. The low byte is the stop flag that instrumented
 * plugin code reads through the FFI (a byte, so the Lua side never needs 32-bit
 * atomics); the rest tells the watchdog which call is running. */
#define MG_GUARD_STOP      0xffu /* != 0: the running call must stop */
#define MG_GUARD_IN_CALL   (1u << 8)
#define MG_GUARD_SEQ_SHIFT 9

/* One per VM, embedded in struct mg_lua. The worker writes word/start/limit at
 * each call's entry and exit; the watchdog thread only reads them and sets the
 * stop byte by CAS, so it can never stop a call other than the one it timed. */
struct mg_lua_guard {
    _Atomic uint32_t word;     /* seq << 9 | in_call << 8 | stop */
    _Atomic uint32_t limit_ms; /* of the running call */
    _Atomic uint64_t start_ms; /* monotonic ms at the running call's entry */
    uint32_t seq;              /* worker-side call counter */
    struct mg_lua_guard *next; /* watchdog list (under its lock) */
};

#endif
