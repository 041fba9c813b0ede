/*
 * Metrics: the golden signals of DESIGN.md section 7, counted per worker without
 * locks and summed only when /metrics is scraped.
 *
 * Model. A process-wide store holds one "entity" per route, upstream, target
 * (upstream + address), plugin, plus one for process-wide series. Each entity
 * has one cache-line-aligned cell array per worker. A struct mg_metrics is one
 * config generation's view of that store: it maps the config's indices (route
 * i, upstream u, target t) to entities, so the request path only indexes arrays.
 *
 * Counting rule (the whole point). A cell of shard `worker` is written only by
 * the thread that runs worker `worker`, with a relaxed load and a relaxed store
 * (a plain `add` on x86 and arm64: no lock prefix, no fence); the admin thread
 * reads it with relaxed loads and sums the shards. Calling a counting function
 * with another thread's worker index is a data race that loses counts.
 *
 * Reloads. mg_metrics_next(old, new_cfg) builds the new generation on the same
 * store: entities are matched by name (route name; upstream name; upstream
 * name + target address; plugin name), so every series that still exists keeps
 * its counters and gauges, exactly, even while exchanges that started on the
 * old generation keep counting through it (they reach the very same cells).
 * Series whose name disappears are no longer rendered, and their memory goes
 * when the last generation that names them is released; a name that comes back
 * later starts from zero (a counter reset, which Prometheus' rate() handles).
 *
 * Label values come only from config names and the fixed sets of metrics-t.h.
 * Requests that matched no route are counted under route="" (an empty label
 * value cannot collide with a configured route name, which is never empty).
 * Status codes 100..599 get their own code label ("200", "404"); any other
 * number, which only a broken upstream can send, is counted as code="other".
 *
 * Threads: mg_metrics_new/next/ref/unref from any thread (the store has a mutex
 * taken only there); counting functions from the owning worker thread; render
 * from any thread (the admin thread) while workers count.
 */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/metrics-t.h"

struct mg_textbuf;

/* ---- lifecycle (not on the request path) ---- */

/* Creates a new store and its first generation for `cfg` (takes a reference on
 * cfg, dropped when the generation is freed), with `nworkers` shards (0 is
 * taken as 1). Returns a generation with one reference owned by the caller.
 * Aborts on out-of-memory. */
struct mg_metrics *mg_metrics_new(struct mg_config *cfg, unsigned nworkers);
/* Reload: a new generation for `cfg` on `prev`'s store, with prev's number of
 * workers; series matched by name carry over (see above). `prev` is not changed
 * and keeps its own reference count; the caller owns one reference on the
 * result. */
struct mg_metrics *mg_metrics_next(struct mg_metrics *prev, struct mg_config *cfg);
void mg_metrics_ref(struct mg_metrics *m);
/* Drops one reference; the last frees the generation, releases the entities only
 * it named, and the store with the last generation. NULL is ignored. */
void mg_metrics_unref(struct mg_metrics *m);

/* Index of plugin `name` (a plugin or balancer name that the generation's config
 * mentions), or -1. Look it up once at plugin load time, never per request. */
int mg_metrics_plugin_index(const struct mg_metrics *m, const char *name);
/* Marks a plugin as loaded: its series appear in /metrics from now on (and in
 * later generations, since the mark lives on the shared entity). Any thread. */
void mg_metrics_plugin_register(struct mg_metrics *m, int plugin);

/* moongate_config_reloads_total{result="success"|"failure"}. Any thread (a real
 * atomic add: reloads are rare). */
void mg_metrics_config_reload(struct mg_metrics *m, bool ok);

/* Appends the Prometheus text exposition (format 0.0.4) of this generation to
 * `out`: "# HELP" and "# TYPE" once per family, label values escaped, histogram
 * buckets cumulative, le="+Inf" equal to _count. moongate_circuit_state appears
 * only when hooks->target_stats is set. Any thread. */
void mg_metrics_render(struct mg_metrics *m, const struct mg_obs_hooks *hooks,
                       struct mg_textbuf *out);

/* The finite histogram bounds in use, in nanoseconds (their count). */
unsigned mg_metrics_bounds(const uint64_t **bounds_ns);

/* ---- reading totals (any thread; sums the shards like a scrape) ----
 * For samplers such as the live dashboard: each call reads only the cells it
 * returns, with relaxed loads, so it costs the workers nothing. */

/* route: index into cfg->routes, or -1 for "no route". */
void mg_metrics_route_totals(const struct mg_metrics *m, int route,
                             struct mg_metrics_route_totals *out);
/* Attempts on target `target` of `upstream` by enum mg_upstream_outcome. */
void mg_metrics_target_totals(const struct mg_metrics *m, size_t upstream, size_t target,
                              uint64_t out[MG_OUTCOME__COUNT]);
/* moongate_retries_total{upstream}. */
uint64_t mg_metrics_retries_total(const struct mg_metrics *m, size_t upstream);
/* Plugins the generation knows (plugin and balancer names of its config). */
size_t mg_metrics_nplugins(const struct mg_metrics *m);
void mg_metrics_plugin_totals(const struct mg_metrics *m, size_t plugin,
                              struct mg_metrics_plugin_totals *out);
/* moongate_connections{side,state}. */
int64_t mg_metrics_connections(const struct mg_metrics *m, enum mg_conn_side side,
                               enum mg_conn_state state);
/* moongate_config_reloads_total: [0] success, [1] failure. */
void mg_metrics_reloads(const struct mg_metrics *m, uint64_t out[2]);

/* Appends ,"redis":{...} to a /status document when hooks->redis says a Redis
 * store is in use: mode, master, up, failovers and the last failover (or
 * null). Here rather than in admin.c so that both renderings of the Redis
 * snapshot sit next to each other. Any thread. */
void mg_metrics_redis_status(const struct mg_obs_hooks *hooks, struct mg_textbuf *out);

/* ---- counting (request path: worker thread of shard `worker` only) ----
 * `route` is an index into cfg->routes of the generation, or -1 for "no route";
 * `upstream`/`target` index cfg->upstreams[] and its targets[]. m == NULL is
 * allowed and counts nothing (metrics off, unit tests). */

/* One request answered: moongate_requests_total{route,code} and the
 * moongate_request_duration_seconds{route} histogram. Durations are
 * nanoseconds (uv_hrtime() deltas) so that bucket edges and _sum are exact. */
void mg_metrics_request_done(struct mg_metrics *m, unsigned worker, int route, int status,
                             uint64_t duration_ns);
/* An upstream answered: moongate_upstream_response_duration_seconds{upstream},
 * from the last attempt's start (connect included) to the end of the exchange. */
void mg_metrics_upstream_response(struct mg_metrics *m, unsigned worker, size_t upstream,
                                  uint64_t duration_ns);
/* One plugin phase ran: moongate_plugin_duration_seconds{plugin,phase}, and
 * moongate_plugin_errors_total{plugin,phase} when `error`. */
void mg_metrics_plugin_done(struct mg_metrics *m, unsigned worker, int plugin,
                            enum mg_plugin_phase phase, uint64_t duration_ns, bool error);
/* The same with the plugin's cells resolved once (mg_metrics_plugin_cells(),
 * at plugin load): for a caller that counts every plugin call. */
void mg_metrics_plugin_observe(_Atomic uint64_t *cells, enum mg_plugin_phase phase,
                               uint64_t duration_ns, bool error);
static inline _Atomic uint64_t *mg_metrics_plugin_cells(struct mg_metrics *m, unsigned worker,
                                                        int plugin)
{
    return m->shards[worker].plugin[plugin];
}
/* An operation plugin `plugin` waited for completed (kind < MG_PLUGIN_IO_KINDS,
 * result < MG_PLUGIN_IO_RESULTS): moongate_plugin_io_total{plugin,kind,result}
 * and the moongate_plugin_io_wait_seconds{plugin,kind} histogram. */
void mg_metrics_plugin_io(struct mg_metrics *m, unsigned worker, int plugin, unsigned kind,
                          unsigned result, uint64_t wait_ns);

/* One TLS handshake on listener `listener` (an index into cfg->listen of the
 * generation) ended: moongate_tls_handshakes_total{listener,result}, and for
 * ok and resumed the moongate_tls_handshake_duration_seconds{listener}
 * histogram (from accept to the handshake's end). */
void mg_metrics_tls_handshake(struct mg_metrics *m, unsigned worker, size_t listener,
                              enum mg_tls_handshake_result r, uint64_t duration_ns);
/* Index of the listener with address text `address` in the generation's
 * cfg->listen, or -1. */
int mg_metrics_listener_index(const struct mg_metrics *m, const char *address);

/* Seconds (double) to the nanoseconds the functions above take. */
static inline uint64_t mg_metrics_ns(double seconds)
{
    if (!(seconds > 0))
        return 0; /* negative or NaN */
    if (seconds > 1e10)
        return (uint64_t)1e19;
    return (uint64_t)(seconds * 1e9 + 0.5);
}

static inline void mg_metrics_cell_add(_Atomic uint64_t *c, uint64_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static inline _Atomic uint64_t *mg_metrics_route_cells(struct mg_metrics *m, unsigned worker,
                                                       int route)
{
    return m->shards[worker].route[route + 1];
}

/* moongate_requests_in_flight{route}: +1 when the request is routed, -1 when it
 * ends, on the same generation and worker. */
static inline void mg_metrics_in_flight(struct mg_metrics *m, unsigned worker, int route, int delta)
{
    if (m)
        mg_metrics_cell_add(&mg_metrics_route_cells(m, worker, route)[MG_MR_IN_FLIGHT],
                            (uint64_t)(int64_t)delta);
}

/* moongate_errors_total{route,error}: a response the gateway generated itself. */
static inline void mg_metrics_error(struct mg_metrics *m, unsigned worker, int route,
                                    enum mg_error err)
{
    if (m && err > MG_ERR_NONE && err < MG_ERR__COUNT)
        mg_metrics_cell_add(&mg_metrics_route_cells(m, worker, route)[MG_MR_ERROR + err], 1);
}

/* moongate_idempotency_total{route,result} */
static inline void mg_metrics_idempotency(struct mg_metrics *m, unsigned worker, int route,
                                          enum mg_idem_metric r)
{
    if (m)
        mg_metrics_cell_add(&mg_metrics_route_cells(m, worker, route)[MG_MR_IDEM + r], 1);
}

/* moongate_upstream_requests_total{upstream,target,outcome}: once per attempt. */
static inline void mg_metrics_upstream_outcome(struct mg_metrics *m, unsigned worker,
                                               size_t upstream, size_t target,
                                               enum mg_upstream_outcome o)
{
    if (m) {
        const struct mg_metrics_shard *s = &m->shards[worker];
        mg_metrics_cell_add(&s->target[s->target_base[upstream] + target][MG_MT_OUTCOME + o], 1);
    }
}

/* moongate_retries_total{upstream}: once per retry (not for the first attempt). */
static inline void mg_metrics_retry(struct mg_metrics *m, unsigned worker, size_t upstream)
{
    if (m)
        mg_metrics_cell_add(&m->shards[worker].upstream[upstream][MG_MU_RETRIES], 1);
}

/* moongate_hedges_total{upstream,result}: once per hedge sent, when it ends. */
static inline void mg_metrics_hedge(struct mg_metrics *m, unsigned worker, size_t upstream,
                                    enum mg_hedge_result result)
{
    if (m)
        mg_metrics_cell_add(&m->shards[worker].upstream[upstream][MG_MU_HEDGES + result], 1);
}

/* moongate_bulkhead_in_use / moongate_bulkhead_queued{upstream}: deltas
 * (+1 admitted, -1 released; +1 queued, -1 left the queue). */
static inline void mg_metrics_bulkhead(struct mg_metrics *m, unsigned worker, size_t upstream,
                                       int d_in_use, int d_queued)
{
    if (m) {
        _Atomic uint64_t *c = m->shards[worker].upstream[upstream];
        if (d_in_use)
            mg_metrics_cell_add(&c[MG_MU_BULKHEAD_IN_USE], (uint64_t)(int64_t)d_in_use);
        if (d_queued)
            mg_metrics_cell_add(&c[MG_MU_BULKHEAD_QUEUED], (uint64_t)(int64_t)d_queued);
    }
}

/* moongate_bulkhead_rejected_total{upstream}: a 503 bulkhead_full. */
static inline void mg_metrics_bulkhead_rejected(struct mg_metrics *m, unsigned worker,
                                                size_t upstream)
{
    if (m)
        mg_metrics_cell_add(&m->shards[worker].upstream[upstream][MG_MU_BULKHEAD_REJECTED], 1);
}

/* moongate_connections{side,state}: +1/-1 as connections open, close and move
 * between active and idle. These cells are process-wide (not per config), so a
 * connection may count up on one generation and down on a later one. */
static inline void mg_metrics_conn(struct mg_metrics *m, unsigned worker, enum mg_conn_side side,
                                   enum mg_conn_state state, int delta)
{
    if (m)
        mg_metrics_cell_add(
            &m->shards[worker].global[MG_MG_CONN + side * MG_CONN_STATE__COUNT + state],
            (uint64_t)(int64_t)delta);
}

/* A connection moving between states: one call instead of two. */
static inline void mg_metrics_conn_move(struct mg_metrics *m, unsigned worker,
                                        enum mg_conn_side side, enum mg_conn_state from,
                                        enum mg_conn_state to)
{
    mg_metrics_conn(m, worker, side, from, -1);
    mg_metrics_conn(m, worker, side, to, +1);
}

/* moongate_http2_resets_total{reason}: one HTTP/2 defence acted. */
static inline void mg_metrics_h2_reset(struct mg_metrics *m, unsigned worker,
                                       enum mg_h2_reset_reason reason)
{
    if (m)
        mg_metrics_cell_add(&m->shards[worker].global[MG_MG_H2_RESET + reason], 1);
}

/* Names of the fixed label sets (the circuit states' are mg_breaker_state_name). */
const char *mg_metrics_outcome_name(enum mg_upstream_outcome o);
const char *mg_metrics_idem_result_name(enum mg_idem_metric r);
const char *mg_metrics_phase_name(enum mg_plugin_phase p);

#endif
