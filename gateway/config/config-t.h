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

#include "net/cidr-t.h"

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

/* http2 (DESIGN.md section 10.2): for listeners with http2: true. */
struct mg_http2_conf {
    uint32_t max_concurrent_streams; /* 128 */
    uint64_t initial_window_size;    /* 64k */
    uint64_t max_frame_size;         /* 16k */
    uint64_t idle_timeout_ms;        /* 75s */
    uint32_t max_resets_per_second;  /* 100 */
};

struct mg_target_conf {
    struct mg_address address; /* addrlen 0 while `host` is a name not resolved yet */
    uint32_t weight;           /* 1 */
    char *host;                /* a host name to follow in DNS (discovery/), or NULL */
    uint16_t port;             /* with `host` */
    const char *source;        /* discovered: the name it came from (/status), else NULL */
    const char *name;          /* discovered: its address's DNS name (TLS SNI), else NULL */
};

/* `resolver` (DESIGN.md section 10.5): how discovery/ asks DNS. */
enum mg_family { MG_FAMILY_ANY, MG_FAMILY_IPV4, MG_FAMILY_IPV6 };

struct mg_resolver_conf {
    char **servers; /* "ip:port" entries; none = system (/etc/resolv.conf) */
    size_t nservers;
    uint64_t min_ttl_ms;   /* 1s */
    uint64_t max_ttl_ms;   /* 5m */
    uint64_t timeout_ms;   /* 2s: one query, all tries */
    enum mg_family family; /* any */
};

/* upstreams.X.discovery */
enum mg_discovery_type { MG_DISCOVERY_NONE, MG_DISCOVERY_SRV };

struct mg_discovery_conf {
    enum mg_discovery_type type; /* NONE when the section is absent */
    char *name;                  /* the SRV name, e.g. _http._tcp.orders.default.svc */
    bool required;               /* false: a name that does not resolve is a warning */
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
    bool http2;                    /* the listener's http2: ALPN offers h2 first */
};

/* One entry of `listen`: a plain "host:port", or a mapping with options. */
struct mg_listen_conf {
    struct mg_address address;
    bool http2;              /* false; true: h2 by ALPN (TLS) or prior knowledge (plain) */
    bool proxy_protocol;     /* false; true: every connection starts with a PROXY v1/v2 header */
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

/* hedge: {after: p95 | DURATION, max: 1, budget: 5}; off when absent. */
struct mg_hedge_conf {
    bool enabled;
    uint64_t after_ms;       /* a fixed delay, or 0 when after_permille is used */
    uint32_t after_permille; /* pNN of recent response-head latency (950 = p95) */
    uint32_t max;            /* extra tries at most per request: 1 */
    double budget;           /* hedges in % of requests over 10 s (+ 1/s): 5 */
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
    struct mg_discovery_conf discovery;
    bool dynamic; /* targets follow DNS: a host name among them, or discovery */
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
    const char *file;             /* the file it is in (an included one, perhaps) */
    bool enabled;                 /* plugins lists: true; false in a route turns a global off */
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
    char *host;                /* address as a host name, followed in DNS (discovery/), or NULL */
    uint16_t port;             /* with `host` */
    uint32_t db;               /* 0 */
    char *password;            /* NULL */
    uint64_t timeout_ms;       /* 250ms */
    uint32_t min_replicas_ack; /* 0; > 0: WAIT for that many replicas after storing a
                                  completed record (bounded by timeout_ms) */
    struct mg_sentinel_conf sentinel;
};

/* forwarded.x_forwarded_for (DESIGN.md section 10.8). */
enum mg_xff_mode {
    MG_XFF_APPEND,  /* the client's list, then the connection's address */
    MG_XFF_REPLACE, /* only the real client address */
    MG_XFF_OFF,     /* the client's header passes untouched (none added) */
};

/* forwarded (DESIGN.md section 10.8): whose forwarding headers are believed,
 * and what is sent upstream. */
struct mg_forwarded_conf {
    struct mg_cidr *trusted_proxies; /* none by default: X-Forwarded-For is never believed */
    size_t ntrusted_proxies;
    enum mg_xff_mode x_forwarded_for; /* append */
    bool forwarded_header;            /* false; true: also send RFC 7239 Forwarded */
};

enum mg_log_format { MG_LOG_FORMAT_TEXT, MG_LOG_FORMAT_JSON };

struct mg_log_conf {
    int level;  /* enum mg_log_level (core/log.h): info */
    int format; /* enum mg_log_format: text */
};

struct mg_router; /* router.h: precomputed match tables */

/* shared_dicts: {NAME: SIZE} (DESIGN.md section 10.3). */
struct mg_shdict_conf {
    char *name;
    uint64_t bytes; /* budget of keys, values and entry overhead */
};
struct mg_shdicts_conf {
    struct mg_shdict_conf *v;
    size_t n;
};

struct mg_config {
    atomic_int refs;
    char *path;       /* the file it was loaded from */
    uint64_t version; /* increases with each successful load */
    time_t loaded_at;

    struct mg_listen_conf *listen; /* required, at least one */
    size_t nlisten;
    uint32_t workers;               /* 0 = auto (one per core) */
    bool admin_enabled;             /* the file has an `admin` section */
    struct mg_address admin_listen; /* 127.0.0.1:9901 */
    char *pid_file;                 /* NULL: the default of process/pidfile.h */
    uint64_t shutdown_delay_ms;     /* 0s: serving after SIGTERM with /ready failing */
    bool watch_config;              /* reload when the file changes */
    char *admin_token;              /* NULL: no Authorization required on admin */
    char **plugin_path;             /* absolute, resolved against the config file's dir */
    size_t nplugin_path;
    char *access_log;         /* "stderr", "off" or a path */
    char **access_log_fields; /* names, in line order; default: DESIGN 10.8 */
    size_t naccess_log_fields;
    uint8_t *access_log_field_ids; /* enum mg_access_field; NULL: the default list */
    struct mg_log_conf log;
    double *duration_buckets; /* metrics.duration_buckets, seconds, increasing */
    size_t nduration_buckets;
    uint64_t drain_timeout_ms;   /* 30s */
    uint64_t idempotency_memory; /* 64m: the embedded idempotency store's budget */
    struct mg_redis_conf redis;
    struct mg_client_conf client;
    struct mg_forwarded_conf forwarded;
    struct mg_resolver_conf resolver;
    struct mg_shdicts_conf shared_dicts;
    struct mg_http2_conf http2;

    struct mg_upstream_conf *upstreams;
    size_t nupstreams;
    struct mg_route_conf *routes; /* in file order */
    size_t nroutes;
    struct mg_plugin_conf *plugins; /* top-level `plugins:`: on every route (DESIGN 10.4) */
    size_t nplugins;

    struct mg_router *router; /* built at load time from routes */
    void *mem;                /* private: every allocation of the snapshot */
    /* A snapshot derived by discovery/ (the file's one with the targets DNS
     * gave): it borrows everything but its upstreams, routes and router from
     * `base` (one reference held), and `release` frees what it owns. */
    struct mg_config *base;
    void (*release)(struct mg_config *cfg);
};

#endif
