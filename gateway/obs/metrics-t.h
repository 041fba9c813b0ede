/*
 * Types of the metrics registry (DESIGN.md section 7) and of the read-only
 * hooks through which the proxy lets the admin thread see live target state.
 *
 * Every series is an array index fixed when a struct mg_metrics is built from a
 * config snapshot: route i, upstream u, target t of upstream u, plugin p. The
 * request path therefore never hashes or compares a string; it bumps one
 * counter cell of its own worker's shard (see metrics.h for the rules).
 *
 * The layout of the per-entity cell arrays is public only so that the small
 * counting functions of metrics.h can be inlined; nothing outside metrics.c
 * and metrics.h reads the fields marked private.
 */
#ifndef MG_METRICS_T_H
#define MG_METRICS_T_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "resilience/breaker-t.h" /* enum mg_circuit: the moongate_circuit_state values */

struct mg_config;

/* Finite bucket bounds of every duration histogram: `metrics.duration_buckets`
 * (at most MG_METRICS_NBOUNDS), by default DESIGN 10.8's, from 0.25 ms so the
 * gateway's own sub-millisecond overhead is visible. The bounds are process-wide
 * and fixed when the first generation is made (mg_metrics_new): a reload cannot
 * change the meaning of cells that are already counting. A histogram has room
 * for MG_METRICS_NBUCKETS buckets; with n bounds, bucket n is +Inf and the
 * rest stay 0. */
#define MG_METRICS_NBOUNDS  30
#define MG_METRICS_NBUCKETS (MG_METRICS_NBOUNDS + 1)

/* moongate_upstream_requests_total{outcome}: how one attempt on a target ended. */
enum mg_upstream_outcome {
    MG_OUTCOME_SUCCESS,         /* "success": a response head that is not a failure */
    MG_OUTCOME_FAILURE,         /* "failure": status in circuit_breaker.failure_statuses,
                                   or a malformed response */
    MG_OUTCOME_TIMEOUT,         /* "timeout": connect, send or read timeout */
    MG_OUTCOME_CONNECT_FAILURE, /* "connect_failure": refused, unreachable, ... */
    MG_OUTCOME_RESET,           /* "reset": the connection broke before the response ended */
    MG_OUTCOME__COUNT
};

/* moongate_idempotency_total{result}: what the idempotency layer did. */
enum mg_idem_metric {
    MG_IDEM_RESULT_NEW,                /* "new": key stored, request forwarded */
    MG_IDEM_RESULT_REPLAYED,           /* "replayed": stored response returned, nothing forwarded */
    MG_IDEM_RESULT_CONFLICT,           /* "conflict": 409, same key in flight */
    MG_IDEM_RESULT_MISMATCH,           /* "mismatch": 422, same key, other fingerprint */
    MG_IDEM_RESULT_KEY_MISSING,        /* "key_missing": 400, required and absent */
    MG_IDEM_RESULT_KEY_INVALID,        /* "key_invalid": 400 */
    MG_IDEM_RESULT_STORE_ERROR,        /* "store_error": store down (503, or passed through) */
    MG_IDEM_RESULT_REPLAY_UNAVAILABLE, /* "replay_unavailable": 409, completed but the
                                          response was too big to keep */
    MG_IDEM_RESULT__COUNT
};

/* moongate_connections{side,state} */
enum mg_conn_side { MG_CONN_SIDE_CLIENT, MG_CONN_SIDE_UPSTREAM, MG_CONN_SIDE__COUNT };
enum mg_conn_state {
    MG_CONN_STATE_ACTIVE, /* client: an exchange in progress; upstream: leased */
    MG_CONN_STATE_IDLE,   /* client: keep-alive wait; upstream: in the pool */
    MG_CONN_STATE__COUNT
};

/* moongate_tls_handshakes_total{result}: how a TLS listener's handshake ended.
 * ok and resumed are exclusive: together they are the completed handshakes. */
enum mg_tls_handshake_result {
    MG_TLS_HS_OK,      /* "ok": a full handshake completed */
    MG_TLS_HS_FAILED,  /* "failed": protocol error, bad certificate, peer gone mid-way */
    MG_TLS_HS_TIMEOUT, /* "timeout": not done within listen[].tls.handshake_timeout */
    MG_TLS_HS_RESUMED, /* "resumed": an abbreviated handshake (ticket or session cache) */
    MG_TLS_HS__COUNT
};

/* The Lua plugin phases of DESIGN.md section 6. */
enum mg_plugin_phase {
    MG_PLUGIN_PHASE_INIT,
    MG_PLUGIN_PHASE_ACCESS,
    MG_PLUGIN_PHASE_BALANCE,
    MG_PLUGIN_PHASE_RESPONSE,
    MG_PLUGIN_PHASE_LOG,
    MG_PLUGIN_PHASE__COUNT
};

enum mg_target_health {
    MG_HEALTH_UNKNOWN, /* no active check configured, or no verdict yet */
    MG_HEALTH_HEALTHY,
    MG_HEALTH_UNHEALTHY,
};

/* Live state of one target as the proxy sees it (struct mg_target_stats of the
 * registry), for /status and moongate_circuit_state. Filled by a hook; the
 * defaults below stand when no hook is set or the hook leaves a field alone. */
struct mg_target_snapshot {
    enum mg_circuit circuit;      /* MG_CIRCUIT_CLOSED */
    uint32_t in_flight;           /* 0: requests on this target now, all workers */
    double ewma;                  /* 0: smoothed latency, seconds */
    enum mg_target_health health; /* MG_HEALTH_UNKNOWN */
    uint64_t failures;            /* 0: failures reported (targets[i].failures in Lua) */
    uint64_t retry_after_ms;      /* 0: until the breaker admits a request again */
    uint32_t consecutive;         /* 0: failures in a row while closed */
};

/* Process-wide state of one upstream's bulkhead (struct mg_upstream_stats of
 * the registry). */
struct mg_upstream_snapshot {
    int64_t bulkhead_in_use;
    int64_t bulkhead_queued;
    uint64_t bulkhead_rejected; /* since the process started */
    uint64_t budget_requests;   /* retry budget, last 10 s: first tries */
    uint64_t budget_retries;    /* ... and retries spent */
    /* Service discovery (upstreams that follow DNS). */
    uint64_t dns_ok, dns_failed; /* resolutions by result, since the start */
    uint64_t dns_last_unix_ms;   /* the last one, 0: none yet */
    bool dns_last_ok;
    uint32_t bulkhead_limit; /* max_concurrent, or bulkhead.adaptive's current limit */
};

/* The embedded idempotency store (process-wide). */
struct mg_idem_memory_snapshot {
    uint64_t bytes, budget, entries, in_flight;
    uint64_t expired, evicted, refused; /* since the process started */
};

/* The shared Redis of the idempotency store (process-wide), for
 * moongate_redis_up, moongate_redis_failovers_total and /status. */
struct mg_redis_snapshot {
    bool in_use;             /* some worker has a Redis store open; nothing is shown otherwise */
    bool sentinel;           /* the master is discovered through Redis Sentinel */
    bool up;                 /* every open store is connected to a confirmed master */
    const char *master_name; /* sentinel mode: redis.sentinel.master; else "" */
    const char *master;      /* "host:port" last connected to; "" before any */
    uint64_t failovers;      /* master address changes since the start */
    int64_t last_failover_unix_ms; /* 0: none */
    const char *last_failover_from, *last_failover_to;
    uint64_t last_failover_unavailable_ms; /* a store's time without Redis around it */
};

/* Read-only views the proxy provides. Every hook runs on the admin thread while
 * workers keep running, so it must read shared state with atomics or its own
 * lock, and must not block. `cfg` is the snapshot whose indices are meant. Any
 * hook may be NULL. */
struct mg_textbuf;

struct mg_obs_hooks {
    void *ud;
    /* target: index into cfg->upstreams[upstream].targets */
    void (*target_stats)(void *ud, const struct mg_config *cfg, size_t upstream, size_t target,
                         struct mg_target_snapshot *out);
    /* When set, the three moongate_bulkhead_* series are read from it at scrape
     * time (the bulkhead already counts them, process-wide) and the
     * mg_metrics_bulkhead* counting calls are not needed; when NULL, they come
     * from those calls. */
    void (*upstream_stats)(void *ud, const struct mg_config *cfg, size_t upstream,
                           struct mg_upstream_snapshot *out);
    /* When set, the moongate_idempotency_memory_* series are rendered from it. */
    void (*idem_memory)(void *ud, struct mg_idem_memory_snapshot *out);
    /* When set, the moongate_redis_* series and the /status "redis" object are
     * rendered from it. The strings stay valid until the next call from the
     * same thread. */
    void (*redis)(void *ud, struct mg_redis_snapshot *out);
    /* When set, /status has "plugins_jit": it appends a JSON array (each
     * worker's plugin JIT trace aborts). */
    void (*plugins_jit)(void *ud, struct mg_textbuf *b);
};

/* Cell layout of the entities (private to metrics.c/metrics.h). A histogram is
 * MG_METRICS_NBUCKETS non-cumulative bucket counts then the sum in nanoseconds;
 * its count is the sum of its buckets, so +Inf == _count always holds. */
enum {
    MG_MH_SUM = MG_METRICS_NBUCKETS,
    MG_MH_CELLS,
};

/* route entity */
enum {
    MG_MR_CODE = 0,                                   /* status 100..599 -> status - 100 */
    MG_MR_CODE_OTHER = 500,                           /* any other status: code="other" */
    MG_MR_HIST = 501,                                 /* MG_MH_CELLS */
    MG_MR_IN_FLIGHT = MG_MR_HIST + MG_MH_CELLS,       /* gauge */
    MG_MR_IDEM,                                       /* MG_IDEM_RESULT__COUNT */
    MG_MR_ERROR = MG_MR_IDEM + MG_IDEM_RESULT__COUNT, /* MG_ERR__COUNT, [0] unused */
    MG_MR_CELLS = MG_MR_ERROR + MG_ERR__COUNT,
};

/* upstream entity */
enum {
    MG_MU_RETRIES = 0,
    MG_MU_BULKHEAD_IN_USE, /* gauge */
    MG_MU_BULKHEAD_QUEUED, /* gauge */
    MG_MU_BULKHEAD_REJECTED,
    MG_MU_RESP_HIST, /* MG_MH_CELLS: moongate_upstream_response_duration_seconds */
    MG_MU_HEDGES = MG_MU_RESP_HIST + MG_MH_CELLS, /* MG_HEDGE__COUNT */
    MG_MU_BULKHEAD_LIMIT = MG_MU_HEDGES + 3,      /* gauge */
    MG_MU_CELLS,
};

/* moongate_hedges_total{result}: a hedge's response head came first (won),
 * the first try's did (lost), or the exchange ended otherwise (cancelled). */
enum mg_hedge_result { MG_HEDGE_WON, MG_HEDGE_LOST, MG_HEDGE_CANCELLED, MG_HEDGE__COUNT };

/* target entity */
enum {
    MG_MT_OUTCOME = 0, /* MG_OUTCOME__COUNT */
    MG_MT_CELLS = MG_OUTCOME__COUNT,
};

/* moongate_plugin_io_total: kinds http, redis, sleep; results ok, error,
 * timeout (the order of enum mg_lua_io_kind and mg_lua_io_result). */
#define MG_PLUGIN_IO_KINDS   3
#define MG_PLUGIN_IO_RESULTS 3

/* plugin entity */
enum {
    MG_MP_PHASE_CELLS = MG_MH_CELLS + 1, /* histogram, then errors */
    /* moongate_plugin_io_total{plugin,kind,result}: kind * MG_PLUGIN_IO_RESULTS + result */
    MG_MP_IO = MG_MP_PHASE_CELLS * MG_PLUGIN_PHASE__COUNT,
    /* moongate_plugin_io_wait_seconds{plugin,kind}: kind * MG_MH_CELLS, histograms */
    MG_MP_IO_WAIT = MG_MP_IO + MG_PLUGIN_IO_KINDS * MG_PLUGIN_IO_RESULTS,
    MG_MP_CELLS = MG_MP_IO_WAIT + MG_PLUGIN_IO_KINDS * MG_MH_CELLS,
};

/* listener entity (its address text): TLS handshakes */
enum {
    MG_ML_RESULT = 0,              /* MG_TLS_HS__COUNT */
    MG_ML_HIST = MG_TLS_HS__COUNT, /* MG_MH_CELLS: completed handshakes' durations */
    MG_ML_CELLS = MG_ML_HIST + MG_MH_CELLS,
};

/* moongate_http2_resets_total{reason}: what the HTTP/2 defences ended. */
enum mg_h2_reset_reason {
    MG_H2R_RAPID_RESET,  /* "rapid_reset": GOAWAY past http2.max_resets_per_second */
    MG_H2R_WINDOW_STALL, /* "window_stall": a stream whose window never opened */
    MG_H2R_PROTOCOL,     /* "protocol": nghttp2 ended the session (floods, bad frames) */
    MG_H2R_IDLE,         /* "idle": GOAWAY after http2.idle_timeout */
    MG_H2R__COUNT
};

/* the process-wide entity */
enum {
    MG_MG_CONN = 0, /* side * MG_CONN_STATE__COUNT + state, gauges */
    MG_MG_H2_RESET = MG_CONN_SIDE__COUNT * MG_CONN_STATE__COUNT, /* MG_H2R__COUNT */
    MG_MG_CELLS = MG_MG_H2_RESET + MG_H2R__COUNT,
};

/* One worker's pointers to its cells. Built with the struct mg_metrics and
 * read-only afterwards; the cells they point to are written by that worker only. */
struct mg_metrics_shard {
    _Atomic uint64_t **route;    /* nroutes + 1; [0] is "no route" */
    _Atomic uint64_t **upstream; /* nupstreams */
    _Atomic uint64_t **target;   /* flat: target_base[upstream] + target */
    _Atomic uint64_t **plugin;   /* nplugins */
    _Atomic uint64_t **listener; /* nlisteners: cfg->listen[] */
    _Atomic uint64_t *global;
    const size_t *target_base;
};

/* Totals summed over every worker, for readers that sample (the live
 * dashboard, obs/live.c) rather than render. */
struct mg_metrics_route_totals {
    uint64_t requests;                  /* every status */
    uint64_t status_5xx;                /* status 500..599, gateway's own included */
    uint64_t hist[MG_METRICS_NBUCKETS]; /* non-cumulative bucket counts */
    uint64_t sum_ns;                    /* of the durations */
    int64_t in_flight;                  /* gauge */
    uint64_t errors[MG_ERR__COUNT];     /* gateway errors by enum mg_error; [0] unused */
};

struct mg_metrics_plugin_totals {
    const char *name; /* owned by the generation */
    bool registered;  /* loaded at least once */
    struct {
        uint64_t calls, sum_ns, errors;
    } phase[MG_PLUGIN_PHASE__COUNT];
};

struct mg_metrics_store;  /* private: the process-wide series store */
struct mg_metrics_entity; /* private: one route/upstream/target/plugin's cells */

/* One config generation's view of the series store. Refcounted; immutable after
 * mg_metrics_new/mg_metrics_next return it. */
struct mg_metrics {
    atomic_int refs;
    unsigned nworkers;
    struct mg_metrics_shard *shards; /* nworkers */

    /* private */
    struct mg_config *cfg; /* one reference held: names and hook indices */
    struct mg_metrics_store *store;
    struct mg_metrics_entity *global;
    struct mg_metrics_entity **routes; /* nroutes + 1 */
    size_t nroutes;
    struct mg_metrics_entity **upstreams;
    size_t nupstreams;
    struct mg_metrics_entity **targets; /* ntargets, flat */
    unsigned char *target_dup;          /* ntargets: 1 = same address as an earlier one */
    size_t *target_base;                /* nupstreams */
    size_t ntargets;
    struct mg_metrics_entity **plugins;
    size_t nplugins;
    struct mg_metrics_entity **listeners; /* cfg->listen[], by address text */
    size_t nlisteners;
    void *mem; /* private: one allocation for the arrays above */
};

#endif
