/*
 * The Prometheus text exposition of the metrics (see metrics.h): summing the
 * per-worker shards of one generation on the admin thread, never taking a
 * lock a worker could wait for.
 */
#include "obs/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "obs/metrics-int.h"
#include "obs/process.h"
#include "obs/textbuf.h"

/* ---------------------------------------------------------- rendering */

/* Sums of every cell of one entity over all workers (malloc'd). */
static uint64_t *sum_entity(const struct mg_metrics *m, const struct mg_metrics_entity *e)
{
    uint64_t *v = mg_metrics__xcalloc(e->ncells, sizeof(uint64_t));

    for (unsigned w = 0; w < m->nworkers; w++) {
        const _Atomic uint64_t *c = e->cells[w];
        for (size_t i = 0; i < e->ncells; i++)
            v[i] += atomic_load_explicit(&c[i], memory_order_relaxed);
    }
    return v;
}

static void family(struct mg_textbuf *b, const char *name, const char *type, const char *help)
{
    mg_textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes `name{k1="v1",k2="v2"` (labels escaped; NULL keys end the list) without
 * the closing brace, so the caller can add le. */
static void series_open(struct mg_textbuf *b, const char *name, const char *const *kv, size_t n)
{
    mg_textbuf_puts(b, name);
    if (n)
        mg_textbuf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mg_textbuf_putc(b, ',');
        mg_textbuf_puts(b, kv[2 * i]);
        mg_textbuf_puts(b, "=\"");
        mg_textbuf_prom_label(b, kv[2 * i + 1]);
        mg_textbuf_putc(b, '"');
    }
}

static void sample_u64(struct mg_textbuf *b, const char *name, const char *const *kv, size_t n,
                       uint64_t v)
{
    series_open(b, name, kv, n);
    mg_textbuf_puts(b, n ? "} " : " ");
    mg_textbuf_u64(b, v);
    mg_textbuf_putc(b, '\n');
}

static void sample_i64(struct mg_textbuf *b, const char *name, const char *const *kv, size_t n,
                       int64_t v)
{
    series_open(b, name, kv, n);
    mg_textbuf_puts(b, n ? "} " : " ");
    mg_textbuf_i64(b, v);
    mg_textbuf_putc(b, '\n');
}

/* The _bucket, _sum and _count lines of one histogram series. */
static void histogram(struct mg_textbuf *b, const char *base, const char *const *kv, size_t n,
                      const uint64_t *h)
{
    char name[96];
    uint64_t cum = 0;

    snprintf(name, sizeof(name), "%s_bucket", base);
    for (unsigned i = 0; i <= mg_metrics__nbounds; i++) {
        cum += h[i];
        series_open(b, name, kv, n);
        mg_textbuf_printf(b, "%sle=\"%s\"} ", n ? "," : "{", mg_metrics__bounds_text[i]);
        mg_textbuf_u64(b, cum);
        mg_textbuf_putc(b, '\n');
    }
    snprintf(name, sizeof(name), "%s_sum", base);
    series_open(b, name, kv, n);
    mg_textbuf_puts(b, n ? "} " : " ");
    mg_textbuf_seconds(b, h[MG_MH_SUM], 9);
    mg_textbuf_putc(b, '\n');
    snprintf(name, sizeof(name), "%s_count", base);
    sample_u64(b, name, kv, n, cum);
}

struct render {
    struct mg_metrics *m;
    struct mg_textbuf *b;
    uint64_t **route;    /* nroutes + 1 */
    uint64_t **upstream; /* nupstreams */
    uint64_t **target;   /* ntargets */
    uint64_t **plugin;   /* nplugins */
    uint64_t **listener; /* nlisteners */
    uint64_t *global;
};

static const char *route_name(const struct render *r, size_t i)
{
    return r->m->routes[i]->name; /* "" for [0], the no-route series */
}

static void render_routes(struct render *r)
{
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;
    char code[8];

    family(b, "moongate_requests_total", "counter",
           "Requests answered, by route (\"\" when no route matched) and status code.");
    for (size_t i = 0; i <= m->nroutes; i++) {
        for (unsigned c = 0; c <= MG_MR_CODE_OTHER; c++) {
            uint64_t v = r->route[i][MG_MR_CODE + c];
            if (v == 0)
                continue;
            if (c == MG_MR_CODE_OTHER)
                snprintf(code, sizeof(code), "other");
            else
                snprintf(code, sizeof(code), "%u", c + 100);
            const char *kv[] = {"route", route_name(r, i), "code", code};
            sample_u64(b, "moongate_requests_total", kv, 2, v);
        }
    }
    family(b, "moongate_request_duration_seconds", "histogram",
           "Request latency in seconds, from the request head to the end of the response, by "
           "route.");
    for (size_t i = 0; i <= m->nroutes; i++) {
        const char *kv[] = {"route", route_name(r, i)};
        histogram(b, "moongate_request_duration_seconds", kv, 1, &r->route[i][MG_MR_HIST]);
    }
    family(b, "moongate_requests_in_flight", "gauge", "Requests being served now, by route.");
    for (size_t i = 0; i <= m->nroutes; i++) {
        const char *kv[] = {"route", route_name(r, i)};
        sample_i64(b, "moongate_requests_in_flight", kv, 1, (int64_t)r->route[i][MG_MR_IN_FLIGHT]);
    }
    family(b, "moongate_errors_total", "counter",
           "Error responses the gateway generated itself, by route and error name.");
    for (size_t i = 0; i <= m->nroutes; i++) {
        for (int e = MG_ERR_NONE + 1; e < MG_ERR__COUNT; e++) {
            uint64_t v = r->route[i][MG_MR_ERROR + e];
            if (v == 0)
                continue;
            const char *kv[] = {"route", route_name(r, i), "error", mg_error_name(e)};
            sample_u64(b, "moongate_errors_total", kv, 2, v);
        }
    }
    family(b, "moongate_idempotency_total", "counter",
           "Idempotency-Key outcomes, by route (routes with an idempotency section) and result.");
    for (size_t i = 1; i <= m->nroutes; i++) {
        if (!m->cfg->routes[i - 1].idempotency.enabled)
            continue;
        for (unsigned k = 0; k < MG_IDEM_RESULT__COUNT; k++) {
            const char *kv[] = {"route", route_name(r, i), "result", mg_metrics__idem_names[k]};
            sample_u64(b, "moongate_idempotency_total", kv, 2, r->route[i][MG_MR_IDEM + k]);
        }
    }
}

/* Service discovery (DESIGN.md section 10.5): the targets each upstream has
 * now, and how the DNS lookups of those that follow DNS went. */
static void render_discovery(struct render *r, const struct mg_obs_hooks *hooks)
{
    const struct mg_config *cfg = r->m->cfg;
    family(r->b, "moongate_upstream_targets", "gauge",
           "Targets of each upstream now (those DNS gives, for upstreams that follow DNS).");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const char *kv[] = {"upstream", cfg->upstreams[u].name};
        sample_u64(r->b, "moongate_upstream_targets", kv, 1, cfg->upstreams[u].ntargets);
    }
    if (hooks == NULL || hooks->upstream_stats == NULL)
        return;
    family(r->b, "moongate_discovery_resolutions_total", "counter",
           "DNS resolutions of the names upstreams follow, by upstream and result (success, "
           "failure: the last good targets were kept).");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        struct mg_upstream_snapshot snap = {0};
        if (!cfg->upstreams[u].dynamic)
            continue;
        hooks->upstream_stats(hooks->ud, cfg, u, &snap);
        const char *ok[] = {"upstream", cfg->upstreams[u].name, "result", "success"};
        const char *ko[] = {"upstream", cfg->upstreams[u].name, "result", "failure"};
        sample_u64(r->b, "moongate_discovery_resolutions_total", ok, 2, snap.dns_ok);
        sample_u64(r->b, "moongate_discovery_resolutions_total", ko, 2, snap.dns_failed);
    }
}

static void render_upstreams(struct render *r, const struct mg_obs_hooks *hooks)
{
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;
    static const struct {
        const char *name, *type, *help;
        unsigned cell;
    } per_upstream[] = {
        {"moongate_retries_total", "counter", "Retries (attempts after the first), by upstream.",
         MG_MU_RETRIES},
        {"moongate_bulkhead_in_use", "gauge",
         "Requests holding a bulkhead slot now, by upstream (whole process).",
         MG_MU_BULKHEAD_IN_USE},
        {"moongate_bulkhead_queued", "gauge", "Requests waiting for a bulkhead slot, by upstream.",
         MG_MU_BULKHEAD_QUEUED},
        {"moongate_bulkhead_rejected_total", "counter",
         "Requests rejected with bulkhead_full, by upstream.", MG_MU_BULKHEAD_REJECTED},
        {"moongate_bulkhead_limit", "gauge",
         "Concurrency limit now, by upstream: max_concurrent, or the adaptive limit.",
         MG_MU_BULKHEAD_LIMIT},
    };

    family(b, "moongate_upstream_requests_total", "counter",
           "Attempts on upstream targets, by upstream, target and outcome (success, failure, "
           "timeout, connect_failure, reset).");
    for (size_t u = 0; u < m->nupstreams; u++) {
        const struct mg_upstream_conf *up = &m->cfg->upstreams[u];
        for (size_t t = 0; t < up->ntargets; t++) {
            size_t i = m->target_base[u] + t;
            if (m->target_dup[i])
                continue;
            for (unsigned o = 0; o < MG_OUTCOME__COUNT; o++) {
                const char *kv[] = {"upstream", up->name,
                                    "target",   up->targets[t].address.text,
                                    "outcome",  mg_metrics__outcome_names[o]};
                sample_u64(b, "moongate_upstream_requests_total", kv, 3,
                           r->target[i][MG_MT_OUTCOME + o]);
            }
        }
    }
    for (size_t u = 0; u < m->nupstreams && hooks && hooks->upstream_stats; u++) {
        struct mg_upstream_snapshot snap = {0};
        hooks->upstream_stats(hooks->ud, m->cfg, u, &snap);
        r->upstream[u][MG_MU_BULKHEAD_IN_USE] = (uint64_t)snap.bulkhead_in_use;
        r->upstream[u][MG_MU_BULKHEAD_QUEUED] = (uint64_t)snap.bulkhead_queued;
        r->upstream[u][MG_MU_BULKHEAD_REJECTED] = snap.bulkhead_rejected;
        r->upstream[u][MG_MU_BULKHEAD_LIMIT] = snap.bulkhead_limit;
    }
    for (size_t f = 0; f < sizeof(per_upstream) / sizeof(per_upstream[0]); f++) {
        bool gauge = per_upstream[f].type[0] == 'g';
        family(b, per_upstream[f].name, per_upstream[f].type, per_upstream[f].help);
        for (size_t u = 0; u < m->nupstreams; u++) {
            const char *kv[] = {"upstream", m->cfg->upstreams[u].name};
            uint64_t v = r->upstream[u][per_upstream[f].cell];
            if (gauge)
                sample_i64(b, per_upstream[f].name, kv, 1, (int64_t)v);
            else
                sample_u64(b, per_upstream[f].name, kv, 1, v);
        }
    }
    family(b, "moongate_upstream_response_duration_seconds", "histogram",
           "Upstream response time, from the last attempt's start (connect included) to the end "
           "of the response, by upstream.");
    for (size_t u = 0; u < m->nupstreams; u++) {
        const char *kv[] = {"upstream", m->cfg->upstreams[u].name};
        histogram(b, "moongate_upstream_response_duration_seconds", kv, 1,
                  &r->upstream[u][MG_MU_RESP_HIST]);
    }
    render_discovery(r, hooks);
    static const char *const hedge_results[] = {"won", "lost", "cancelled"};
    _Static_assert(sizeof hedge_results / sizeof hedge_results[0] == MG_HEDGE__COUNT, "names");
    family(b, "moongate_hedges_total", "counter",
           "Hedged tries, by upstream and result (won, lost, cancelled).");
    for (size_t u = 0; u < m->nupstreams; u++) {
        for (unsigned k = 0; k < MG_HEDGE__COUNT; k++) {
            const char *kv[] = {"upstream", m->cfg->upstreams[u].name, "result", hedge_results[k]};
            sample_u64(b, "moongate_hedges_total", kv, 2, r->upstream[u][MG_MU_HEDGES + k]);
        }
    }
    if (hooks == NULL || hooks->target_stats == NULL)
        return;
    family(b, "moongate_circuit_state", "gauge",
           "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.");
    for (size_t u = 0; u < m->nupstreams; u++) {
        const struct mg_upstream_conf *up = &m->cfg->upstreams[u];
        for (size_t t = 0; t < up->ntargets; t++) {
            struct mg_target_snapshot snap = {.circuit = MG_CIRCUIT_CLOSED};
            if (m->target_dup[m->target_base[u] + t])
                continue;
            hooks->target_stats(hooks->ud, m->cfg, u, t, &snap);
            const char *kv[] = {"upstream", up->name, "target", up->targets[t].address.text};
            sample_u64(b, "moongate_circuit_state", kv, 2, (uint64_t)snap.circuit);
        }
    }
}

static void render_process(struct render *r)
{
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;

    family(b, "moongate_connections", "gauge",
           "Open connections, by side (client, upstream) and state (active, idle).");
    for (unsigned s = 0; s < MG_CONN_SIDE__COUNT; s++) {
        for (unsigned st = 0; st < MG_CONN_STATE__COUNT; st++) {
            const char *kv[] = {"side", mg_metrics__side_names[s], "state",
                                mg_metrics__state_names[st]};
            sample_i64(b, "moongate_connections", kv, 2,
                       (int64_t)r->global[MG_MG_CONN + s * MG_CONN_STATE__COUNT + st]);
        }
    }
    static const char *const h2_reasons[MG_H2R__COUNT] = {"rapid_reset", "window_stall", "protocol",
                                                          "idle"};
    family(b, "moongate_http2_resets_total", "counter",
           "HTTP/2 connections or streams ended by a defence, by reason.");
    for (unsigned k = 0; k < MG_H2R__COUNT; k++) {
        const char *kv[] = {"reason", h2_reasons[k]};
        sample_u64(b, "moongate_http2_resets_total", kv, 1, r->global[MG_MG_H2_RESET + k]);
    }
    family(b, "moongate_config_reloads_total", "counter",
           "Configuration reloads, by result (success, failure).");
    for (unsigned k = 0; k < 2; k++) {
        const char *kv[] = {"result", k == 0 ? "success" : "failure"};
        sample_u64(b, "moongate_config_reloads_total", kv, 1,
                   atomic_load_explicit(&m->store->reloads[k], memory_order_relaxed));
    }
}

/* Only TLS listeners have series; a plain one has no handshakes to count. An
 * address listed twice shares one entity and is rendered once. */
static bool tls_listener_shown(const struct mg_metrics *m, size_t l)
{
    if (!m->cfg->listen[l].tls)
        return false;
    for (size_t k = 0; k < l; k++)
        if (m->listeners[k] == m->listeners[l] && m->cfg->listen[k].tls)
            return false;
    return true;
}

static void render_tls(struct render *r)
{
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;

    family(b, "moongate_tls_handshakes_total", "counter",
           "TLS handshakes on TLS listeners, by listener address and result (ok: full "
           "handshake, resumed: abbreviated one, failed, timeout).");
    for (size_t l = 0; l < m->nlisteners; l++) {
        if (!tls_listener_shown(m, l))
            continue;
        for (unsigned k = 0; k < MG_TLS_HS__COUNT; k++) {
            const char *kv[] = {"listener", m->listeners[l]->name, "result",
                                mg_metrics__tls_hs_names[k]};
            sample_u64(b, "moongate_tls_handshakes_total", kv, 2, r->listener[l][MG_ML_RESULT + k]);
        }
    }
    family(b, "moongate_tls_handshake_duration_seconds", "histogram",
           "Time from accept to a completed TLS handshake (ok or resumed), by listener address.");
    for (size_t l = 0; l < m->nlisteners; l++) {
        if (!tls_listener_shown(m, l))
            continue;
        const char *kv[] = {"listener", m->listeners[l]->name};
        histogram(b, "moongate_tls_handshake_duration_seconds", kv, 1, &r->listener[l][MG_ML_HIST]);
    }
}

static bool phase_ran(const uint64_t *c)
{
    for (unsigned i = 0; i < MG_METRICS_NBUCKETS; i++)
        if (c[i])
            return true;
    return c[MG_MH_CELLS] != 0;
}

/* Whether plugin cells `c` count any operation of `kind`. */
static bool io_kind_used(const uint64_t *c, unsigned kind)
{
    for (unsigned res = 0; res < MG_PLUGIN_IO_RESULTS; res++)
        if (c[MG_MP_IO + kind * MG_PLUGIN_IO_RESULTS + res])
            return true;
    return false;
}

/* moongate_plugin_io_total and moongate_plugin_io_wait_seconds: a plugin's
 * series of a kind appear once it has waited for one (every result then), so
 * plugins that never wait add no series. */
static void render_plugin_io(struct render *r)
{
    static const char *const kinds[MG_PLUGIN_IO_KINDS] = {"http", "redis", "sleep"};
    static const char *const results[MG_PLUGIN_IO_RESULTS] = {"ok", "error", "timeout"};
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;

    family(b, "moongate_plugin_io_total", "counter",
           "Operations Lua plugins waited for, by plugin, kind (http, redis, sleep) and result "
           "(ok, error, timeout).");
    for (size_t p = 0; p < m->nplugins; p++) {
        for (unsigned k = 0; k < MG_PLUGIN_IO_KINDS; k++) {
            if (!io_kind_used(r->plugin[p], k))
                continue;
            for (unsigned res = 0; res < MG_PLUGIN_IO_RESULTS; res++) {
                const char *kv[] = {"plugin", m->plugins[p]->name, "kind", kinds[k],
                                    "result", results[res]};
                sample_u64(b, "moongate_plugin_io_total", kv, 3,
                           r->plugin[p][MG_MP_IO + k * MG_PLUGIN_IO_RESULTS + res]);
            }
        }
    }
    family(b, "moongate_plugin_io_wait_seconds", "histogram",
           "Time Lua plugins spent waiting for an operation, by plugin and kind (not Lua time: "
           "that is moongate_plugin_duration_seconds).");
    for (size_t p = 0; p < m->nplugins; p++) {
        for (unsigned k = 0; k < MG_PLUGIN_IO_KINDS; k++) {
            if (!io_kind_used(r->plugin[p], k))
                continue;
            const char *kv[] = {"plugin", m->plugins[p]->name, "kind", kinds[k]};
            histogram(b, "moongate_plugin_io_wait_seconds", kv, 2,
                      &r->plugin[p][MG_MP_IO_WAIT + (size_t)k * MG_MH_CELLS]);
        }
    }
}

/* Plugin families appear once a plugin has registered; within a registered
 * plugin, a phase appears once it has run. */
static void render_plugins(struct render *r)
{
    struct mg_metrics *m = r->m;
    struct mg_textbuf *b = r->b;
    bool any = false;

    for (size_t p = 0; p < m->nplugins; p++)
        any |= atomic_load_explicit(&m->plugins[p]->registered, memory_order_relaxed);
    if (!any)
        return;
    render_plugin_io(r);
    family(b, "moongate_plugin_errors_total", "counter",
           "Errors raised by Lua plugins, by plugin and phase.");
    for (size_t p = 0; p < m->nplugins; p++) {
        if (!atomic_load_explicit(&m->plugins[p]->registered, memory_order_relaxed))
            continue;
        for (unsigned ph = 0; ph < MG_PLUGIN_PHASE__COUNT; ph++) {
            const uint64_t *c = r->plugin[p] + ph * MG_MP_PHASE_CELLS;
            if (!phase_ran(c))
                continue;
            const char *kv[] = {"plugin", m->plugins[p]->name, "phase",
                                mg_metrics__phase_names[ph]};
            sample_u64(b, "moongate_plugin_errors_total", kv, 2, c[MG_MH_CELLS]);
        }
    }
    family(b, "moongate_plugin_duration_seconds", "histogram",
           "Time spent in Lua plugin phases, by plugin and phase.");
    for (size_t p = 0; p < m->nplugins; p++) {
        if (!atomic_load_explicit(&m->plugins[p]->registered, memory_order_relaxed))
            continue;
        for (unsigned ph = 0; ph < MG_PLUGIN_PHASE__COUNT; ph++) {
            const uint64_t *c = r->plugin[p] + ph * MG_MP_PHASE_CELLS;
            if (!phase_ran(c))
                continue;
            const char *kv[] = {"plugin", m->plugins[p]->name, "phase",
                                mg_metrics__phase_names[ph]};
            histogram(b, "moongate_plugin_duration_seconds", kv, 2, c);
        }
    }
}

static void render_idem_memory(struct render *r, const struct mg_obs_hooks *hooks)
{
    if (!hooks || !hooks->idem_memory)
        return;
    struct mg_idem_memory_snapshot s = {0};
    hooks->idem_memory(hooks->ud, &s);
    static const char *const none[1] = {NULL};
    family(r->b, "moongate_idempotency_memory_bytes", "gauge",
           "Bytes the embedded idempotency store accounts for (records, keys, locks).");
    sample_u64(r->b, "moongate_idempotency_memory_bytes", none, 0, s.bytes);
    family(r->b, "moongate_idempotency_memory_budget_bytes", "gauge",
           "The embedded idempotency store's bound (idempotency_memory).");
    sample_u64(r->b, "moongate_idempotency_memory_budget_bytes", none, 0, s.budget);
    family(r->b, "moongate_idempotency_memory_entries", "gauge",
           "Keys held by the embedded idempotency store, in-flight locks included.");
    sample_u64(r->b, "moongate_idempotency_memory_entries", none, 0, s.entries);
    family(r->b, "moongate_idempotency_memory_evictions_total", "counter",
           "Entries removed from the embedded idempotency store: reason expired (ttl passed), "
           "evicted (completed record dropped early for room), refused (no room for a lock).");
    const char *kv_expired[] = {"reason", "expired"}, *kv_evicted[] = {"reason", "evicted"},
               *kv_refused[] = {"reason", "refused"};
    sample_u64(r->b, "moongate_idempotency_memory_evictions_total", kv_expired, 1, s.expired);
    sample_u64(r->b, "moongate_idempotency_memory_evictions_total", kv_evicted, 1, s.evicted);
    sample_u64(r->b, "moongate_idempotency_memory_evictions_total", kv_refused, 1, s.refused);
}

static void render_redis(struct render *r, const struct mg_obs_hooks *hooks)
{
    static const char *const none[1] = {NULL};
    struct mg_redis_snapshot s = {0};

    if (!hooks || !hooks->redis)
        return;
    hooks->redis(hooks->ud, &s);
    if (!s.in_use)
        return;
    family(r->b, "moongate_redis_up", "gauge",
           "1 when every worker is connected to a Redis master that answered its handshake "
           "(and ROLE master, with Sentinel); 0 during an outage or a failover.");
    sample_u64(r->b, "moongate_redis_up", none, 0, s.up ? 1 : 0);
    family(r->b, "moongate_redis_failovers_total", "counter",
           "Redis master changes followed (the idempotency store reconnected to another "
           "master address named by the sentinels), counted once per process.");
    sample_u64(r->b, "moongate_redis_failovers_total", none, 0, s.failovers);
}

void mg_metrics_redis_status(const struct mg_obs_hooks *hooks, struct mg_textbuf *b)
{
    struct mg_redis_snapshot s = {0};

    if (!hooks || !hooks->redis)
        return;
    hooks->redis(hooks->ud, &s);
    if (!s.in_use)
        return;
    mg_textbuf_puts(b, ",\"redis\":{\"mode\":");
    mg_textbuf_puts(b, s.sentinel ? "\"sentinel\",\"master_name\":" : "\"address\"");
    if (s.sentinel)
        mg_textbuf_json_str(b, s.master_name, strlen(s.master_name));
    mg_textbuf_puts(b, ",\"master\":");
    if (s.master[0])
        mg_textbuf_json_str(b, s.master, strlen(s.master));
    else
        mg_textbuf_puts(b, "null");
    mg_textbuf_puts(b, s.up ? ",\"up\":true" : ",\"up\":false");
    mg_textbuf_printf(b, ",\"failovers\":%llu,\"last_failover\":", (unsigned long long)s.failovers);
    if (s.last_failover_unix_ms == 0) {
        mg_textbuf_puts(b, "null}");
        return;
    }
    mg_textbuf_puts(b, "{\"at\":\"");
    mg_textbuf_rfc3339_ms(b, s.last_failover_unix_ms);
    mg_textbuf_printf(b, "\",\"at_unix_ms\":%lld,\"from\":", (long long)s.last_failover_unix_ms);
    mg_textbuf_json_str(b, s.last_failover_from, strlen(s.last_failover_from));
    mg_textbuf_puts(b, ",\"to\":");
    mg_textbuf_json_str(b, s.last_failover_to, strlen(s.last_failover_to));
    mg_textbuf_printf(b, ",\"unavailable_ms\":%llu}}",
                      (unsigned long long)s.last_failover_unavailable_ms);
}

void mg_metrics_render(struct mg_metrics *m, const struct mg_obs_hooks *hooks,
                       struct mg_textbuf *out)
{
    struct render r = {.m = m, .b = out};

    r.route = mg_metrics__xcalloc(m->nroutes + 1, sizeof(uint64_t *));
    r.upstream = mg_metrics__xcalloc(m->nupstreams, sizeof(uint64_t *));
    r.target = mg_metrics__xcalloc(m->ntargets, sizeof(uint64_t *));
    r.plugin = mg_metrics__xcalloc(m->nplugins, sizeof(uint64_t *));
    r.listener = mg_metrics__xcalloc(m->nlisteners, sizeof(uint64_t *));
    for (size_t i = 0; i <= m->nroutes; i++)
        r.route[i] = sum_entity(m, m->routes[i]);
    for (size_t i = 0; i < m->nupstreams; i++)
        r.upstream[i] = sum_entity(m, m->upstreams[i]);
    for (size_t i = 0; i < m->ntargets; i++)
        r.target[i] = sum_entity(m, m->targets[i]);
    for (size_t i = 0; i < m->nplugins; i++)
        r.plugin[i] = sum_entity(m, m->plugins[i]);
    for (size_t i = 0; i < m->nlisteners; i++)
        r.listener[i] = sum_entity(m, m->listeners[i]);
    r.global = sum_entity(m, m->global);

    render_routes(&r);
    render_upstreams(&r, hooks);
    render_idem_memory(&r, hooks);
    render_redis(&r, hooks);
    render_process(&r);
    render_tls(&r);
    render_plugins(&r);
    mg_process_metrics_render(out);

    for (size_t i = 0; i <= m->nroutes; i++)
        free(r.route[i]);
    for (size_t i = 0; i < m->nupstreams; i++)
        free(r.upstream[i]);
    for (size_t i = 0; i < m->ntargets; i++)
        free(r.target[i]);
    for (size_t i = 0; i < m->nplugins; i++)
        free(r.plugin[i]);
    for (size_t i = 0; i < m->nlisteners; i++)
        free(r.listener[i]);
    free(r.listener);
    free(r.route);
    free(r.upstream);
    free(r.target);
    free(r.plugin);
    free(r.global);
}
