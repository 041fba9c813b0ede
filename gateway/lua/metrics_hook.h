/*
 * Feeds the Lua runtime's per-plugin timings and errors to the metrics
 * (moongate_plugin_duration_seconds, moongate_plugin_errors_total).
 *
 * The hook's data maps the VM's plugin ids to the metrics generation's plugin
 * indices once, when the VM is made, so the per-call cost is an array read.
 * It lives exactly as long as its VM: whoever frees the VM frees it too.
 */
#ifndef MG_LUA_METRICS_HOOK_H
#define MG_LUA_METRICS_HOOK_H

#include "config/config-t.h"
#include "lua/vm-t.h"

struct mg_metrics;
struct mg_lua;
struct mg_lua_metrics;

/* Makes the VM of worker `worker` for cfg with its timings counted in `metrics`
 * (which may be NULL: nothing is counted). Returns NULL with a one-line error.
 * *hook receives the hook data to free with mg_lua_metrics_free() after
 * mg_lua_free(). */
struct mg_lua *mg_lua_new_counted(const struct mg_config *cfg, unsigned worker,
                                  struct mg_metrics *metrics, struct mg_lua_metrics **hook,
                                  char *err, size_t errlen);
void mg_lua_metrics_free(struct mg_lua_metrics *hook);

#endif
