/*
 * Types of the configuration snapshot (DESIGN.md section 3).
 *
 * A struct mg_config is built once by mg_config_load() from a YAML file and is
 * immutable afterwards: workers read it without locks. It is refcounted so a
 * reload can publish a new snapshot while requests in flight finish on the old
 * one. Every pointer inside a snapshot is owned by the snapshot and freed with
 * it (mg_config_unref dropping the last reference).
 *
 * Durations are milliseconds, sizes are bytes. A value absent from the file holds
 * the default documented in DESIGN.md section 3.
 */
#ifndef MG_CONFIG_T_H
#define MG_CONFIG_T_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* A generic YAML value, kept for plugin `config:` tables (handed to Lua later). */
enum mg_conf_value_kind { MG_VAL_NULL, MG_VAL_SCALAR, MG_VAL_SEQ, MG_VAL_MAP };

struct mg_conf_value {
    enum mg_conf_value_kind kind;
    char *scalar;                /* MG_VAL_SCALAR: the text as written */
    bool quoted;                 /* scalar was quoted: never a number/bool */
    size_t n;                    /* MG_VAL_SEQ / MG_VAL_MAP: number of items */
    char **keys;                 /* MG_VAL_MAP: n keys */
    struct mg_conf_value *items; /* n items */
    int line, col;               /* 1-based position in the file */
};

/* "host:port", "[v6]:port" or "*:port"; resolved when the file is loaded. */
struct mg_address {
    char *text; /* as written in the file */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct mg_client_conf {
    uint64_t header_timeout_ms;    /* 10s */
    uint64_t body_timeout_ms;      /* 30s */
    uint64_t keepalive_timeout_ms; /* 75s */
    uint64_t max_header_size;      /* 16k */
    uint64_t max_body_size;        /* 10m */
    uint32_t max_connections;      /* 10000 */
};

struct mg_target_conf {
    struct mg_address address;
    uint32_t weight; /* 1 */
};

/* Bits of retry.on that are not status codes. */
enum {
    MG_RETRY_ON_CONNECT_FAILURE = 1u << 0,
    MG_RETRY_ON_RESET = 1u << 1,
    MG_RETRY_ON_TIMEOUT = 1u << 2,
};

struct mg_retry_conf {
    uint32_t max_retries;  /* 2, 0..10 */
    uint32_t on_mask;      /* MG_RETRY_ON_*; default all three */
    uint16_t *on_statuses; /* default 502, 503, 504 */
    size_t n_on_statuses;
    uint64_t backoff_base_ms;       /* 25ms */
    uint64_t backoff_max_ms;        /* 250ms */
    double budget_ratio;            /* 0.2 */
    uint32_t budget_min_per_second; /* 10 */
};

struct mg_breaker_conf {
    uint32_t consecutive_failures; /* 5 */
    double failure_rate;           /* 0.5 */
    uint64_t window_ms;            /* 10s */
    uint32_t min_requests;         /* 20 */
    uint64_t open_for_ms;          /* 10s */
    uint64_t max_open_for_ms;      /* 5m */
    uint32_t half_open_requests;   /* 1 */
    uint16_t *failure_statuses;    /* default 502, 503, 504 */
    size_t n_failure_statuses;
};

/* bulkhead.adaptive: off when absent (resilience/gradient.h). */
struct mg_adaptive_conf {
    bool enabled;
    uint32_t min_limit; /* 4 */
    uint32_t max_limit; /* 512 */
    double smoothing;   /* 0.2 */
};

struct mg_bulkhead_conf {
    uint32_t max_concurrent;   /* 256 */
    uint32_t max_queue;        /* 128 */
    uint64_t queue_timeout_ms; /* 1s */
    struct mg_adaptive_conf adaptive;
};

struct mg_health_conf {
    bool enabled;             /* true only when the section is present */
    char *path;               /* /healthz */
    uint64_t interval_ms;     /* 5s */
    uint64_t timeout_ms;      /* 1s */
    uint32_t healthy_after;   /* 2 */
    uint32_t unhealthy_after; /* 3 */
};

struct mg_tls_ctx; /* tls/context.h: an OpenSSL context built from the config */

enum { MG_TLS_V12 = 1u << 0, MG_TLS_V13 = 1u << 1 };

struct mg_tls_cert_conf {
    char *cert; /* PEM, chain after the leaf; absolute (resolved against the file's dir) */
    char *key;  /* PEM private key, absolute */
};

/* listen[].tls (DESIGN.md section 10.1). */
struct mg_tls_conf {
    struct mg_tls_cert_conf *certs; /* at least one; chosen by SNI, the first is the default */
    size_t ncerts;
    unsigned protocols;            /* MG_TLS_V12 | MG_TLS_V13 */
    char *ciphers;                 /* "intermediate" (Mozilla) or an OpenSSL cipher string */
    bool session_tickets;          /* true */
    uint64_t session_cache;        /* 10m bytes; 0 = off */
    uint64_t handshake_timeout_ms; /* 10s */
    char *client_ca;               /* NULL; a CA file: require and verify client certificates */
    struct mg_tls_ctx *ctx;        /* built at load, freed with the snapshot */
};

/* One entry of `listen`: a plain "host:port", or a mapping with options. */
struct mg_listen_conf {
    struct mg_address address;
    bool http2;              /* false (HTTP/2 is not built yet: true is refused) */
    bool proxy_protocol;     /* false (not built yet: true is refused) */
    struct mg_tls_conf *tls; /* NULL: plain TCP */
};

/* upstreams.X.tls */
struct mg_upstream_tls_conf {
    bool enabled;           /* false */
    char *sni;              /* NULL: the target's host when it is a name, else none */
    bool verify;            /* true: the certificate chain and the name (sni) are checked */
    char *ca;               /* "system" (the default store) or a CA file */
    char *cert, *key;       /* NULL; a client certificate for mTLS to the upstream */
    struct mg_tls_ctx *ctx; /* built at load when enabled, freed with the snapshot */
};

/* hedge: {after: p95 | DURATION, max: 1}; off when absent. */
struct mg_hedge_conf {
    bool enabled;
    uint64_t after_ms;       /* a fixed delay, or 0 when after_permille is used */
    uint32_t after_permille; /* pNN of recent response-head latency (950 = p95) */
    uint32_t max;            /* extra tries at most per request: 1 */
};

/* outlier_detection: off when absent (resilience/outlier.h). */
struct mg_outlier_conf {
    bool enabled;
    uint64_t interval_ms;          /* 5s */
    double error_factor;           /* 2.0 */
    double latency_factor;         /* 3.0 */
    uint64_t base_ejection_ms;     /* 30s */
    uint32_t max_ejection_percent; /* 50 */
    uint32_t min_requests;         /* 50 */
};

struct mg_upstream_conf {
    char *name;                     /* the key under `upstreams:` */
    size_t index;                   /* position in mg_config.upstreams */
    struct mg_target_conf *targets; /* at least one */
    size_t ntargets;
    uint32_t keepalive;          /* 64 idle pooled connections per target per worker */
    uint64_t connect_timeout_ms; /* 1s */
    uint64_t send_timeout_ms;    /* 10s */
    uint64_t read_timeout_ms;    /* 30s */
    uint64_t per_try_timeout_ms; /* null (0): a try is limited by the route deadline only */
    struct mg_retry_conf retry;
    struct mg_breaker_conf breaker;
    struct mg_bulkhead_conf bulkhead;
    struct mg_health_conf health_check;
    struct mg_upstream_tls_conf tls;
    /* DESIGN.md section 10.7 (config/resilience2.c). */
    bool honor_retry_after;      /* the section is present */
    uint64_t retry_after_max_ms; /* 30s */
    char *deadline_header;       /* NULL: no deadline propagation */
    struct mg_hedge_conf hedge;
    struct mg_outlier_conf outlier;
};

struct mg_plugin_conf {
    char *name;                   /* NULL when absent */
    struct mg_conf_value *config; /* NULL when absent; else a MG_VAL_MAP usually */
    int line, col;                /* position of the entry, for error messages */
};

enum mg_idem_store { MG_IDEM_STORE_MEMORY, MG_IDEM_STORE_REDIS };
enum mg_idem_on_error { MG_IDEM_REJECT, MG_IDEM_PASS };

struct mg_idempotency_conf {
    bool enabled;          /* true only when the section is present */
    char *header;          /* Idempotency-Key */
    uint64_t methods_mask; /* bit llhttp_method_t; default POST, PATCH */
    bool required;         /* false */
    uint64_t ttl_ms;       /* 24h */
    uint64_t lock_ttl_ms;  /* 60s */
    uint64_t max_body;     /* 1m */
    char **scope;          /* "header:NAME" entries; default none */
    size_t nscope;
    enum mg_idem_store store;             /* memory */
    enum mg_idem_on_error on_store_error; /* reject */
};

/* routes[].priority: who is refused first when a bulkhead queue is full. */
enum mg_priority { MG_PRIO_CRITICAL, MG_PRIO_DEFAULT, MG_PRIO_SHEDDABLE };

struct mg_route_conf {
    char *name;   /* required, unique */
    size_t index; /* position in mg_config.routes */
    char **hosts; /* lowercased; "*.example.org" wildcards; none = any */
    size_t nhosts;
    char **paths; /* prefixes starting with '/'; none = "/" */
    size_t npaths;
    uint64_t methods_mask;             /* bit (1 << llhttp_method_t); 0 = any method */
    bool strip_prefix;                 /* false */
    struct mg_upstream_conf *upstream; /* resolved, never NULL */
    uint64_t timeout_ms;               /* 15s; overall deadline */
    int priority;                      /* enum mg_priority; default */
    struct mg_plugin_conf balancer;    /* name "round_robin" by default */
    struct mg_plugin_conf *plugins;
    size_t nplugins;
    struct mg_idempotency_conf idempotency;
};

/* redis.sentinel: find the master through Redis Sentinel instead of a fixed
 * address, and follow its failovers. */
struct mg_sentinel_conf {
    bool enabled;                 /* true only when the section is present */
    char *master;                 /* required: the name the sentinels monitor */
    struct mg_address *addresses; /* required, at least one: asked in turn */
    size_t naddresses;
    char *password; /* NULL; the sentinels' own (requirepass of sentinel.conf) */
};

struct mg_redis_conf {
    bool enabled;              /* true only when the section is present */
    struct mg_address address; /* 127.0.0.1:6379; unused when sentinel.enabled */
    uint32_t db;               /* 0 */
    char *password;            /* NULL */
    uint64_t timeout_ms;       /* 250ms */
    uint32_t min_replicas_ack; /* 0; > 0: WAIT for that many replicas after storing a
                                  completed record (bounded by timeout_ms) */
    struct mg_sentinel_conf sentinel;
};

struct mg_router; /* router.h: precomputed match tables */

struct mg_config {
    atomic_int refs;
    char *path;       /* the file it was loaded from */
    uint64_t version; /* increases with each successful load */
    time_t loaded_at;

    struct mg_listen_conf *listen; /* required, at least one */
    size_t nlisten;
    uint32_t workers;               /* 0 = auto (one per core) */
    struct mg_address admin_listen; /* 127.0.0.1:9901 */
    char *pid_file;                 /* /tmp/moongate.pid */
    char **plugin_path;             /* absolute, resolved against the config file's dir */
    size_t nplugin_path;
    char *access_log;            /* "stderr", "off" or a path */
    uint64_t drain_timeout_ms;   /* 30s */
    uint64_t idempotency_memory; /* 64m: the embedded idempotency store's budget */
    struct mg_redis_conf redis;
    struct mg_client_conf client;

    struct mg_upstream_conf *upstreams;
    size_t nupstreams;
    struct mg_route_conf *routes; /* in file order */
    size_t nroutes;

    struct mg_router *router; /* built at load time from routes */
    void *mem;                /* private: every allocation of the snapshot */
};

#endif
