/*
 * Types of the Lua plugin runtime's public API (vm.h): phases, results, the
 * balancer's target view and the observation hooks.
 */
#ifndef MG_LUA_VM_T_H
#define MG_LUA_VM_T_H

#include <stdbool.h>
#include <stdint.h>

struct mg_target_stats;

/* The plugin phases of DESIGN.md section 6, in the order a request meets them.
 * Same values as enum mg_plugin_phase (obs/metrics-t.h), so a phase can be
 * handed to the metrics unchanged (vm.c checks this at compile time). */
enum mg_lua_phase {
    MG_LUA_INIT,     /* init(conf): at load, per worker; never per request */
    MG_LUA_ACCESS,   /* before proxying; may ctx:respond() */
    MG_LUA_BALANCE,  /* balancer only: pick a target (mg_lua_balance) */
    MG_LUA_RESPONSE, /* upstream response head received, not yet sent */
    MG_LUA_LOG,      /* after the response was sent */
    MG_LUA_PHASE__COUNT
};

enum mg_lua_result {
    MG_LUA_OK,        /* the chain ran to its end */
    MG_LUA_RESPONDED, /* access: a plugin called ctx:respond(); answer ctx->respond */
    MG_LUA_ERROR,     /* a plugin raised (logged and counted): 500 plugin_error,
                         except in the log phase where it is only logged */
    MG_LUA_WAIT,      /* a plugin waits (task.h): the caller's task is suspended */
};

/* One target as the balancer sees it (Lua: targets[i], 1-based). The array is
 * owned by the proxy, per upstream per runtime snapshot: its address, the
 * address/weight/stats pointers in it must not change while the VM lives,
 * because the VM wraps each array once (keyed by its address) and never copies
 * it again. Only `available` may change between calls: set it before each
 * mg_lua_balance() (breaker not open, health ok; on a retry, also 0 for the
 * targets this exchange already tried when others remain). */
struct mg_lua_target {
    const char *address; /* NUL-terminated "host:port" */
    uint32_t weight;
    uint8_t available;                   /* 0 or 1 */
    const struct mg_target_stats *stats; /* process-wide; NULL reads as zeros */
};

/* Cumulative per plugin and phase, for the worker that owns the VM. */
struct mg_lua_plugin_stats {
    uint64_t calls;
    uint64_t errors;
    uint64_t ns; /* total wall time inside the plugin's function */
};

/* Optional: called on the VM's thread after each plugin function ran, for
 * moongate_plugin_duration_seconds and moongate_plugin_errors_total. `plugin`
 * indexes mg_lua_plugin_name(); map it to a metrics index once, at VM creation. */
typedef void (*mg_lua_plugin_done_cb)(void *data, unsigned plugin, enum mg_lua_phase phase,
                                      uint64_t ns, bool error);

/* What a plugin waited for, and how it ended (moongate_plugin_io_total,
 * moongate_plugin_io_wait_seconds). */
enum mg_lua_io_kind { MG_LUA_IO_HTTP, MG_LUA_IO_REDIS, MG_LUA_IO_SLEEP, MG_LUA_IO_KIND__COUNT };
enum mg_lua_io_result { MG_LUA_IO_OK, MG_LUA_IO_ERROR, MG_LUA_IO_TIMEOUT, MG_LUA_IO_RESULT__COUNT };

/* Optional: an operation of plugin `plugin` (an mg_lua_plugin_name() index, -1:
 * none) completed after `wait_ns` of waiting, or failed before it could start
 * (wait_ns 0). Not called when it was cancelled (client gone, deadline). */
typedef void (*mg_lua_io_done_cb)(void *data, int plugin, enum mg_lua_io_kind kind,
                                  enum mg_lua_io_result result, uint64_t wait_ns);

struct mg_lua_hooks {
    mg_lua_plugin_done_cb plugin_done;
    void *data;
    mg_lua_io_done_cb io_done;
};

#endif
