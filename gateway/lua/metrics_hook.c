/*
 * Plugin metrics hook (see metrics_hook.h).
 */
#include "lua/metrics_hook.h"

#include <stdlib.h>

#include "core/log.h"
#include "lua/vm.h"
#include "obs/metrics.h"

struct mg_lua_metrics {
    struct mg_metrics *metrics;
    unsigned worker;
    size_t n;
    _Atomic uint64_t **cells; /* VM plugin id -> its metrics cells, NULL: not counted */
    int index[];              /* VM plugin id -> metrics plugin index, -1: not counted */
};

/* Every plugin call: the cells were resolved at load, no lookup here. */
static void on_plugin_done(void *data, unsigned plugin, enum mg_lua_phase phase, uint64_t ns,
                           bool error)
{
    struct mg_lua_metrics *h = data;
    if (plugin < h->n && h->cells[plugin])
        mg_metrics_plugin_observe(h->cells[plugin], (enum mg_plugin_phase)phase, ns, error);
}

_Static_assert(MG_PLUGIN_IO_KINDS == MG_LUA_IO_KIND__COUNT &&
                   MG_PLUGIN_IO_RESULTS == MG_LUA_IO_RESULT__COUNT,
               "moongate_plugin_io_* labels follow enum mg_lua_io_kind/result");

static void on_io_done(void *data, int plugin, enum mg_lua_io_kind kind,
                       enum mg_lua_io_result result, uint64_t wait_ns)
{
    struct mg_lua_metrics *h = data;
    if (plugin >= 0 && (size_t)plugin < h->n && h->index[plugin] >= 0)
        mg_metrics_plugin_io(h->metrics, h->worker, h->index[plugin], (unsigned)kind,
                             (unsigned)result, wait_ns);
}

struct mg_lua *mg_lua_new_counted(const struct mg_config *cfg, unsigned worker,
                                  struct mg_metrics *metrics, struct mg_lua_metrics **hook,
                                  char *err, size_t errlen)
{
    /* Sized for every plugin entry the config names: a VM cannot load more. */
    size_t max = 0;
    for (size_t i = 0; i < cfg->nroutes; i++)
        max += cfg->routes[i].nplugins + 1;
    struct mg_lua_metrics *h = calloc(1, sizeof *h + sizeof(int) * (max ? max : 1));
    if (!h || !(h->cells = calloc(max ? max : 1, sizeof *h->cells)))
        mg_fatal("out of memory (plugin metrics)");
    h->metrics = metrics;
    h->worker = worker;
    struct mg_lua_hooks hooks = {.plugin_done = metrics ? on_plugin_done : NULL,
                                 .io_done = metrics ? on_io_done : NULL,
                                 .data = h};
    struct mg_lua *vm = mg_lua_new(cfg, worker, &hooks, err, errlen);
    if (!vm) {
        mg_lua_metrics_free(h);
        return NULL;
    }
    h->n = mg_lua_nplugins(vm) < max ? mg_lua_nplugins(vm) : max;
    for (size_t id = 0; id < h->n; id++) {
        h->index[id] =
            metrics ? mg_metrics_plugin_index(metrics, mg_lua_plugin_name(vm, (unsigned)id)) : -1;
        if (h->index[id] >= 0) {
            mg_metrics_plugin_register(metrics, h->index[id]);
            h->cells[id] = mg_metrics_plugin_cells(metrics, worker, h->index[id]);
        }
    }
    *hook = h;
    return vm;
}

void mg_lua_metrics_free(struct mg_lua_metrics *hook)
{
    if (hook)
        free(hook->cells);
    free(hook);
}
