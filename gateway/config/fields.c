/*
 * The configuration schema of DESIGN section 3 as data: one table per section,
 * each row {key, kind, offsetof(...), default, ...} with the default in file
 * syntax on the same row (STYLE convention 9), plus the few parsers and checks a
 * generic kind cannot express (named upstreams, routes, targets, retry.on,
 * plugin entries, hosts, paths). `listen` and the TLS sections are in tls.c.
 *
 * Invariant: the tables are read in row order, so a row may rely on rows above
 * it (routes resolve `upstream` against upstreams, idempotency `store: redis`
 * checks the redis section). All memory comes from mg_conf_alloc (the snapshot).
 */
#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "config/accesslog_fields.h"
#include "config/config.h"
#include "config/parse.h"
#include "core/log.h"
#include "config/resilience2.h"
#include "http/message.h"
#include "http/request.h"

#define MAX_WORKERS 1024

_Static_assert(sizeof(enum mg_idem_store) == sizeof(int), "MG_K_ENUM stores an int");
_Static_assert(sizeof(enum mg_idem_on_error) == sizeof(int), "MG_K_ENUM stores an int");

/* ---- validators and custom parsers ---- */

static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (!mg_http_tchar[(unsigned char)*s])
            return false;
    }
    return true;
}

static int check_header(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    if (!is_token(*(char **)dst))
        return mg_conf_fail(ld, n, "invalid header name '%.64s'", *(char **)dst);
    return 0;
}

static int check_abs_path(struct mg_conf_ld *ld, yaml_node_t *n, const char *p)
{
    if (p[0] != '/')
        return mg_conf_fail(ld, n, "path '%.64s' must start with '/'", p);
    for (; *p; p++) {
        if (*p == '?' || *p == '#' || (unsigned char)*p <= ' ' || *p == 0x7f)
            return mg_conf_fail(ld, n, "path must not contain '?', '#', spaces or controls");
    }
    return 0;
}

static int check_health_path(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    return check_abs_path(ld, n, *(char **)dst);
}

/* Runs `check` on each item of the string list `dst` read from sequence `seq`. */
static int each_item(struct mg_conf_ld *ld, yaml_node_t *seq, char **items,
                     int (*check)(struct mg_conf_ld *, yaml_node_t *, char *))
{
    size_t cnt;

    if (mg_conf_seq(ld, seq, &cnt) < 0)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        size_t at = mg_conf_push_index(ld, i);
        if (check(ld, mg_conf_seq_item(ld, seq, i), items[i]) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

/* A route path is kept in the form requests are matched in (router.h): written
 * "/%61dmin", it is the "/admin" route. */
static int check_path(struct mg_conf_ld *ld, yaml_node_t *n, char *p)
{
    if (check_abs_path(ld, n, p) < 0)
        return -1;
    p[mg_http_path_route_form((struct mg_slice){p, strlen(p)}, p)] = '\0';
    return 0;
}

static int check_paths(struct mg_conf_ld *ld, yaml_node_t *seq, void *dst)
{
    return each_item(ld, seq, *(char ***)dst, check_path);
}

/* Lowercases a host in place and checks "name", "*.name" or "[v6]". */
static int check_host(struct mg_conf_ld *ld, yaml_node_t *n, char *h)
{
    const char *name = h;
    size_t len = strlen(h);

    for (char *p = h; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (h[0] == '[') {
        if (len < 3 || h[len - 1] != ']' || strspn(h + 1, "0123456789abcdef:.") != len - 2)
            return mg_conf_fail(ld, n, "invalid IPv6 host '%.64s'", h);
        return 0;
    }
    if (h[0] == '*') {
        if (h[1] != '.' || h[2] == '\0')
            return mg_conf_fail(ld, n, "a wildcard host must look like '*.example.org'");
        name = h + 2;
    }
    if (strchr(name, ':') != NULL)
        return mg_conf_fail(ld, n, "host '%.64s' must not carry a port", h);
    if (strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != strlen(name))
        return mg_conf_fail(ld, n, "invalid host '%.64s'", h);
    return 0;
}

static int check_hosts(struct mg_conf_ld *ld, yaml_node_t *seq, void *dst)
{
    return each_item(ld, seq, *(char ***)dst, check_host);
}

static int check_scope_item(struct mg_conf_ld *ld, yaml_node_t *n, char *s)
{
    if (strncmp(s, "header:", 7) != 0 || !is_token(s + 7))
        return mg_conf_fail(ld, n, "invalid scope '%.64s' (expected header:NAME)", s);
    return 0;
}

static int check_scope(struct mg_conf_ld *ld, yaml_node_t *seq, void *dst)
{
    return each_item(ld, seq, *(char ***)dst, check_scope_item);
}

static int check_store(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    if (*(int *)dst == MG_IDEM_STORE_REDIS && !ld->cfg->redis.enabled)
        return mg_conf_fail(ld, n, "store 'redis' needs the top-level 'redis' section");
    return 0;
}

/* redis.sentinel replaces redis.address: with both written, which one the
 * gateway would use is a guess the operator should not have to make. */
static int check_redis(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_redis_conf *r = dst;
    size_t len;

    if (!r->sentinel.enabled || mg_conf_child(ld, n, "address") == NULL)
        return 0;
    len = mg_conf_push_key(ld, "sentinel");
    mg_conf_fail(ld, mg_conf_child(ld, n, "sentinel"),
                 "'sentinel' replaces 'address': give only one of them");
    mg_conf_pop(ld, len);
    return -1;
}

void mg_conf_normalize(char *path)
{
    const char *p = path;
    size_t o = 0;

    while (*p) {
        const char *seg;
        size_t len;
        p += strspn(p, "/");
        seg = p;
        len = strcspn(p, "/");
        p += len;
        if (len == 0 || (len == 1 && seg[0] == '.'))
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (o > 0 && path[--o] != '/')
                ;
            continue;
        }
        path[o++] = '/';
        memmove(path + o, seg, len);
        o += len;
    }
    if (o == 0)
        path[o++] = '/';
    path[o] = '\0';
}

/* Paths in the file are relative to the file, not to the cwd, so the same file
 * means the same thing whatever directory moongate starts from. */
char *mg_conf_resolve_path(struct mg_conf_ld *ld, yaml_node_t *at, const char *p)
{
    const char *file = mg_conf_file_of(ld, at); /* an included file: its own dir */
    const char *slash = strrchr(file, '/');
    int dirlen = slash ? (int)(slash - file) : 0;
    char cwd[PATH_MAX] = "";
    size_t len;
    char *abs;

    if (p[0] != '/' && file[0] != '/' && getcwd(cwd, sizeof(cwd)) == NULL) {
        mg_conf_fail(ld, at, "cannot resolve relative paths: getcwd failed");
        return NULL;
    }
    len = strlen(cwd) + (size_t)dirlen + strlen(p) + 3;
    abs = mg_conf_alloc(ld, len);
    if (p[0] == '/')
        snprintf(abs, len, "%s", p);
    else
        snprintf(abs, len, "%s/%.*s/%s", cwd, dirlen, file, p);
    mg_conf_normalize(abs);
    return abs;
}

static int resolve_plugin_path(struct mg_conf_ld *ld, yaml_node_t *seq, void *dst)
{
    char **paths = *(char ***)dst;
    size_t cnt;

    if (mg_conf_seq(ld, seq, &cnt) < 0)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        if ((paths[i] = mg_conf_resolve_path(ld, mg_conf_seq_item(ld, seq, i), paths[i])) == NULL)
            return -1;
    }
    return 0;
}

static int parse_workers(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    uint32_t *workers = dst;
    const char *s;
    uint64_t v;

    *workers = 0; /* auto: one per core */
    if (n == NULL)
        return 0;
    if (mg_conf_scalar(ld, n, "an integer or auto", &s) < 0)
        return -1;
    if (strcmp(s, "auto") == 0)
        return 0;
    if (mg_conf_parse_uint(s, &v) < 0 || v < 1 || v > MAX_WORKERS)
        return mg_conf_fail(ld, n, "invalid workers '%.64s' (expected auto or 1..%d)", s,
                            MAX_WORKERS);
    *workers = (uint32_t)v;
    return 0;
}

/* retry.on: failure names and status codes in one list. `dst` is the retry conf. */
static int parse_retry_on(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } names[] = {{"connect_failure", MG_RETRY_ON_CONNECT_FAILURE},
                 {"reset", MG_RETRY_ON_RESET},
                 {"timeout", MG_RETRY_ON_TIMEOUT}};
    static const uint16_t def_statuses[] = {502, 503, 504};
    struct mg_retry_conf *r = dst;
    size_t cnt;

    if (n == NULL) {
        r->on_mask = MG_RETRY_ON_CONNECT_FAILURE | MG_RETRY_ON_RESET | MG_RETRY_ON_TIMEOUT;
        r->n_on_statuses = 3;
        r->on_statuses = mg_conf_alloc(ld, sizeof(def_statuses));
        memcpy(r->on_statuses, def_statuses, sizeof(def_statuses));
        return 0;
    }
    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    r->on_mask = 0;
    r->n_on_statuses = 0;
    r->on_statuses = mg_conf_alloc(ld, cnt * sizeof(uint16_t));
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i), k;
        const char *s;
        int status;
        if (mg_conf_scalar(ld, item, "a failure name or status code", &s) < 0)
            return -1;
        for (k = 0; k < sizeof(names) / sizeof(names[0]) && strcmp(s, names[k].name); k++)
            ;
        if (k < sizeof(names) / sizeof(names[0]))
            r->on_mask |= names[k].bit;
        else if ((status = mg_conf_status(s)) >= 0)
            r->on_statuses[r->n_on_statuses++] = (uint16_t)status;
        else
            return mg_conf_fail(ld, item,
                                "invalid retry condition '%.64s' (expected connect_failure, "
                                "reset, timeout or a status code 100..599)",
                                s);
        mg_conf_pop(ld, at);
    }
    return 0;
}

/* Cross-field checks; the error points at the later key when it was written. */
static int check_order(struct mg_conf_ld *ld, yaml_node_t *map, const char *lo_key, uint64_t lo,
                       const char *hi_key, uint64_t hi)
{
    yaml_node_t *at = mg_conf_child(ld, map, hi_key);
    size_t len;

    if (hi >= lo)
        return 0;
    len = mg_conf_push_key(ld, at ? hi_key : lo_key);
    mg_conf_fail(ld, at ? at : mg_conf_child(ld, map, lo_key),
                 "%s (%llums) must not be less than %s (%llums)", hi_key, (unsigned long long)hi,
                 lo_key, (unsigned long long)lo);
    mg_conf_pop(ld, len);
    return -1;
}

static int check_backoff(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_retry_conf *r = dst;

    return check_order(ld, n, "base", r->backoff_base_ms, "max", r->backoff_max_ms);
}

static int check_breaker(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_breaker_conf *b = dst;

    return check_order(ld, n, "open_for", b->open_for_ms, "max_open_for", b->max_open_for_ms);
}

/* Stored as ids (config/accesslog_fields.h) so the request path never compares
 * strings. */
static int check_access_log_fields(struct mg_conf_ld *ld, yaml_node_t *seq, void *dst)
{
    char **names = *(char ***)dst;
    size_t cnt = ld->cfg->naccess_log_fields;
    uint8_t *ids = mg_conf_alloc(ld, cnt ? cnt : 1);

    if (cnt == 0)
        return mg_conf_fail(ld, seq, "needs at least one item");

    for (size_t i = 0; i < cnt; i++) {
        int id = mg_access_field_id(names[i]);
        size_t at = mg_conf_push_index(ld, i);
        if (id < 0)
            return mg_conf_fail(ld, mg_conf_seq_item(ld, seq, i),
                                "unknown access log field '%.64s' (expected one of: %s)", names[i],
                                mg_access_field_names());
        for (size_t j = 0; j < i; j++)
            if (ids[j] == (uint8_t)id)
                return mg_conf_fail(ld, mg_conf_seq_item(ld, seq, i),
                                    "field '%.64s' is listed twice", names[i]);
        ids[i] = (uint8_t)id;
        mg_conf_pop(ld, at);
    }
    ld->cfg->access_log_field_ids = ids;
    return 0;
}

static int skip_include(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    (void)ld, (void)n, (void)dst;
    return 0;
}

/* ---- tables ---- */

#define CFG(m) offsetof(struct mg_config, m)
#define CLI(m) offsetof(struct mg_client_conf, m)
#define RDS(m) offsetof(struct mg_redis_conf, m)
#define SNT(m) offsetof(struct mg_sentinel_conf, m)
#define UP(m)  offsetof(struct mg_upstream_conf, m)
#define TGT(m) offsetof(struct mg_target_conf, m)
#define RTY(m) offsetof(struct mg_retry_conf, m)
#define BRK(m) offsetof(struct mg_breaker_conf, m)
#define BLK(m) offsetof(struct mg_bulkhead_conf, m)
#define HLT(m) offsetof(struct mg_health_conf, m)
#define RT(m)  offsetof(struct mg_route_conf, m)
#define PLG(m) offsetof(struct mg_plugin_conf, m)
#define IDM(m) offsetof(struct mg_idempotency_conf, m)

static const char *const store_names[] = {"memory", "redis", NULL};
static const char *const on_error_names[] = {"reject", "pass", NULL};

static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
_Static_assert(MG_LOG_DEBUG == 0 && MG_LOG_ERROR == 3, "log_level_names follows mg_log_level");

static const struct mg_conf_field log_fields[] = {
    ROW("level", MG_K_ENUM, offsetof(struct mg_log_conf, level), "info", .sub = log_level_names),
    ROW("format", MG_K_ENUM, offsetof(struct mg_log_conf, format), "text", .sub = log_format_names),
    END,
};

#define MAX_BUCKETS 30 /* MG_METRICS_NBOUNDS */

static const char default_buckets[] = "0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 "
                                      "0.25 0.5 1 2.5 5 10 30";

/* Bounds of one bucket list: from the file, or the default. */
static int parse_buckets(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_config *cfg = ld->cfg;
    double *b = mg_conf_alloc(ld, MAX_BUCKETS * sizeof(*b));
    size_t cnt = 0;

    (void)dst;
    if (n == NULL) {
        char buf[32];
        for (const char *p = default_buckets; *p; cnt++) {
            size_t len = strcspn(p, " ");
            snprintf(buf, sizeof(buf), "%.*s", (int)len, p);
            mg_conf_parse_double(buf, &b[cnt]);
            p += len + strspn(p + len, " ");
        }
    } else {
        if (mg_conf_seq(ld, n, &cnt) < 0)
            return -1;
        if (cnt == 0 || cnt > MAX_BUCKETS)
            return mg_conf_fail(ld, n, "needs 1 to %d bounds", MAX_BUCKETS);
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *item = mg_conf_seq_item(ld, n, i);
            size_t at = mg_conf_push_index(ld, i);
            const char *s;
            if (mg_conf_scalar(ld, item, "a number of seconds", &s) < 0)
                return -1;
            if (mg_conf_parse_double(s, &b[i]) < 0 || !(b[i] > 0) || b[i] > 1e9)
                return mg_conf_fail(ld, item, "invalid bound '%.64s' (seconds, > 0)", s);
            if (i > 0 && !(b[i] > b[i - 1]))
                return mg_conf_fail(ld, item, "bounds must increase");
            mg_conf_pop(ld, at);
        }
    }
    cfg->duration_buckets = b;
    cfg->nduration_buckets = cnt;
    return 0;
}

static const struct mg_conf_field metrics_fields[] = {
    ROW("duration_buckets", MG_K_CUSTOM, 0, NULL, .fn = parse_buckets),
    END,
};

static const struct mg_conf_field admin_fields[] = {
    ROW("listen", MG_K_ADDRESS, CFG(admin_listen), "127.0.0.1:9901"),
    /* Bearer token for everything but /healthz and /ready (DESIGN 10.6). */
    ROW("token", MG_K_STRING, CFG(admin_token), NULL, .flags = MG_CF_NULLABLE),
    ROW("token_file", MG_K_CUSTOM, CFG(admin_token), NULL, .fn = mg_conf_secret_file),
    END,
};

static const struct mg_conf_field sentinel_fields[] = {
    ROW("master", MG_K_STRING, SNT(master), NULL, .flags = MG_CF_REQUIRED),
    ROW("addresses", MG_K_ADDRLIST, SNT(addresses), NULL, .flags = MG_CF_REQUIRED | MG_CF_NONEMPTY,
        .off2 = SNT(naddresses)),
    ROW("password", MG_K_STRING, SNT(password), NULL, .flags = MG_CF_NULLABLE),
    ROW("password_file", MG_K_CUSTOM, SNT(password), NULL, .fn = mg_conf_secret_file),
    END,
};

/* Custom only because the section is optional while two of its keys are
 * required: absent, it must not be read with its defaults. */
static int parse_sentinel(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_sentinel_conf *sc = dst;

    if (n == NULL)
        return 0; /* redis.address is used */
    if (mg_conf_section(ld, n, sentinel_fields, sc) < 0)
        return -1;
    sc->enabled = true;
    return 0;
}

static const struct mg_conf_field redis_fields[] = {
    ROW("address", MG_K_CUSTOM, 0, NULL, .fn = mg_conf_redis_address), /* 127.0.0.1:6379 */
    ROW("sentinel", MG_K_CUSTOM, RDS(sentinel), NULL, .fn = parse_sentinel),
    ROW("db", MG_K_UINT, RDS(db), "0", .hi = INT32_MAX),
    ROW("password", MG_K_STRING, RDS(password), NULL, .flags = MG_CF_NULLABLE),
    ROW("password_file", MG_K_CUSTOM, RDS(password), NULL, .fn = mg_conf_secret_file),
    ROW("timeout", MG_K_DURATION, RDS(timeout_ms), "250ms", .lo = 1),
    /* Bounded so a typo cannot make every completion wait for replicas that
     * will never exist; Redis itself accepts any count. */
    ROW("min_replicas_ack", MG_K_UINT, RDS(min_replicas_ack), "0", .hi = 100),
    END,
};

static const struct mg_conf_field client_fields[] = {
    ROW("header_timeout", MG_K_DURATION, CLI(header_timeout_ms), "10s", .lo = 1),
    ROW("body_timeout", MG_K_DURATION, CLI(body_timeout_ms), "30s", .lo = 1),
    ROW("keepalive_timeout", MG_K_DURATION, CLI(keepalive_timeout_ms), "75s"), /* 0: no reuse */
    ROW("max_header_size", MG_K_SIZE, CLI(max_header_size), "16k", .lo = 1),
    ROW("max_body_size", MG_K_SIZE, CLI(max_body_size), "10m"),
    ROW("max_connections", MG_K_UINT, CLI(max_connections), "10000", .lo = 1),
    END,
};

static const struct mg_conf_field target_fields[] = {
    ROW("address", MG_K_CUSTOM, 0, NULL, .flags = MG_CF_REQUIRED, .fn = mg_conf_target_address),
    ROW("weight", MG_K_UINT, TGT(weight), "1", .lo = 1, .hi = 1000000),
    END,
};

static const struct mg_conf_field timeouts_fields[] = {
    ROW("connect", MG_K_DURATION, UP(connect_timeout_ms), "1s", .lo = 1),
    ROW("send", MG_K_DURATION, UP(send_timeout_ms), "10s", .lo = 1),
    ROW("read", MG_K_DURATION, UP(read_timeout_ms), "30s", .lo = 1),
    ROW("per_try", MG_K_CUSTOM, UP(per_try_timeout_ms), NULL, .fn = mg_conf_per_try), /* null */
    END,
};

static const struct mg_conf_field backoff_fields[] = {
    ROW("base", MG_K_DURATION, RTY(backoff_base_ms), "25ms"),
    ROW("max", MG_K_DURATION, RTY(backoff_max_ms), "250ms"),
    END,
};

static const struct mg_conf_field budget_fields[] = {
    ROW("ratio", MG_K_DOUBLE, RTY(budget_ratio), "0.2", .lo = 0, .hi = 1),
    ROW("min_per_second", MG_K_UINT, RTY(budget_min_per_second), "10"),
    END,
};

static const struct mg_conf_field retry_fields[] = {
    ROW("max_retries", MG_K_UINT, RTY(max_retries), "2", .lo = 0, .hi = 10),
    ROW("on", MG_K_CUSTOM, 0, NULL, .fn = parse_retry_on), /* default: see parse_retry_on */
    ROW("backoff", MG_K_SECTION, 0, NULL, .sub = backoff_fields, .fn = check_backoff),
    ROW("budget", MG_K_SECTION, 0, NULL, .sub = budget_fields),
    END,
};

static const struct mg_conf_field breaker_fields[] = {
    ROW("consecutive_failures", MG_K_UINT, BRK(consecutive_failures), "5", .lo = 1),
    ROW("failure_rate", MG_K_DOUBLE, BRK(failure_rate), "0.5", .lo = 0, .hi = 1),
    ROW("window", MG_K_DURATION, BRK(window_ms), "10s", .lo = 1),
    ROW("min_requests", MG_K_UINT, BRK(min_requests), "20", .lo = 1),
    ROW("open_for", MG_K_DURATION, BRK(open_for_ms), "10s", .lo = 1),
    ROW("max_open_for", MG_K_DURATION, BRK(max_open_for_ms), "5m", .lo = 1),
    ROW("half_open_requests", MG_K_UINT, BRK(half_open_requests), "1", .lo = 1),
    ROW("failure_statuses", MG_K_STATUSES, BRK(failure_statuses), "502 503 504",
        .off2 = BRK(n_failure_statuses)),
    END,
};

static const struct mg_conf_field bulkhead_fields[] = {
    ROW("max_concurrent", MG_K_UINT, BLK(max_concurrent), "256", .lo = 1),
    ROW("max_queue", MG_K_UINT, BLK(max_queue), "128"),
    ROW("queue_timeout", MG_K_DURATION, BLK(queue_timeout_ms), "1s"),
    ROW("adaptive", MG_K_SECTION, BLK(adaptive), NULL, .flags = MG_CF_ENABLE,
        .off2 = offsetof(struct mg_adaptive_conf, enabled), .sub = mg_conf_adaptive_fields,
        .fn = mg_conf_check_adaptive),
    END,
};

static const struct mg_conf_field health_fields[] = {
    ROW("path", MG_K_STRING, HLT(path), "/healthz", .fn = check_health_path),
    ROW("interval", MG_K_DURATION, HLT(interval_ms), "5s", .lo = 1),
    ROW("timeout", MG_K_DURATION, HLT(timeout_ms), "1s", .lo = 1),
    ROW("healthy_after", MG_K_UINT, HLT(healthy_after), "2", .lo = 1),
    ROW("unhealthy_after", MG_K_UINT, HLT(unhealthy_after), "3", .lo = 1),
    END,
};

static int parse_targets(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

static const struct mg_conf_field upstream_fields[] = {
    /* Required unless `discovery` is given: mg_conf_check_upstream_targets. */
    ROW("targets", MG_K_CUSTOM, 0, NULL, .fn = parse_targets),
    ROW("keepalive", MG_K_UINT, UP(keepalive), "64", .hi = 65535),
    ROW("timeouts", MG_K_SECTION, 0, NULL, .sub = timeouts_fields),
    ROW("retry", MG_K_SECTION, UP(retry), NULL, .sub = retry_fields),
    ROW("circuit_breaker", MG_K_SECTION, UP(breaker), NULL, .sub = breaker_fields,
        .fn = check_breaker),
    ROW("bulkhead", MG_K_SECTION, UP(bulkhead), NULL, .sub = bulkhead_fields),
    ROW("health_check", MG_K_SECTION, UP(health_check), NULL, .flags = MG_CF_ENABLE,
        .off2 = HLT(enabled), .sub = health_fields),
    ROW("tls", MG_K_SECTION, UP(tls), NULL, .sub = mg_conf_upstream_tls_fields,
        .fn = mg_conf_check_upstream_tls), /* context: built by parse_upstreams */
    ROW("discovery", MG_K_CUSTOM, UP(discovery), NULL, .fn = mg_conf_discovery),
    ROW("honor_retry_after", MG_K_SECTION, 0, NULL, .flags = MG_CF_ENABLE,
        .off2 = UP(honor_retry_after), .sub = mg_conf_retry_after_fields),
    ROW("deadline_header", MG_K_STRING, UP(deadline_header), NULL, .flags = MG_CF_NULLABLE,
        .fn = mg_conf_check_deadline_header),
    ROW("hedge", MG_K_SECTION, UP(hedge), NULL, .flags = MG_CF_ENABLE,
        .off2 = offsetof(struct mg_hedge_conf, enabled), .sub = mg_conf_hedge_fields,
        .fn = mg_conf_check_hedge),
    ROW("outlier_detection", MG_K_SECTION, UP(outlier), NULL, .flags = MG_CF_ENABLE,
        .off2 = offsetof(struct mg_outlier_conf, enabled), .sub = mg_conf_outlier_fields),
    END,
};

static int check_plugin_name(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
static int parse_plugin_config(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

static const struct mg_conf_field balancer_fields[] = {
    ROW("name", MG_K_STRING, PLG(name), "round_robin", .fn = check_plugin_name),
    ROW("config", MG_K_CUSTOM, PLG(config), NULL, .fn = parse_plugin_config),
    END,
};

static const struct mg_conf_field plugin_fields[] = {
    ROW("name", MG_K_STRING, PLG(name), NULL, .flags = MG_CF_REQUIRED, .fn = check_plugin_name),
    ROW("config", MG_K_CUSTOM, PLG(config), NULL, .fn = parse_plugin_config),
    ROW("enabled", MG_K_BOOL, PLG(enabled), "true"),
    END,
};

static const struct mg_conf_field match_fields[] = {
    ROW("hosts", MG_K_STRLIST, RT(hosts), NULL, .off2 = RT(nhosts), .fn = check_hosts),
    ROW("paths", MG_K_STRLIST, RT(paths), NULL, .off2 = RT(npaths), .fn = check_paths),
    ROW("methods", MG_K_METHODS, RT(methods_mask), NULL), /* none: any method */
    END,
};

static const struct mg_conf_field idempotency_fields[] = {
    ROW("header", MG_K_STRING, IDM(header), "Idempotency-Key", .fn = check_header),
    ROW("methods", MG_K_METHODS, IDM(methods_mask), "POST PATCH", .flags = MG_CF_NONEMPTY),
    ROW("required", MG_K_BOOL, IDM(required), "false"),
    ROW("ttl", MG_K_DURATION, IDM(ttl_ms), "24h", .lo = 1),
    ROW("lock_ttl", MG_K_DURATION, IDM(lock_ttl_ms), "60s", .lo = 1),
    ROW("max_body", MG_K_SIZE, IDM(max_body), "1m"),
    ROW("scope", MG_K_STRLIST, IDM(scope), NULL, .off2 = IDM(nscope), .fn = check_scope),
    ROW("store", MG_K_ENUM, IDM(store), "memory", .sub = store_names, .fn = check_store),
    ROW("on_store_error", MG_K_ENUM, IDM(on_store_error), "reject", .sub = on_error_names),
    END,
};

static int parse_route_upstream(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
static int parse_plugins(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

static const struct mg_conf_field route_fields[] = {
    ROW("name", MG_K_STRING, RT(name), NULL, .flags = MG_CF_REQUIRED),
    ROW("match", MG_K_SECTION, 0, NULL, .sub = match_fields),
    ROW("strip_prefix", MG_K_BOOL, RT(strip_prefix), "false"),
    ROW("upstream", MG_K_CUSTOM, RT(upstream), NULL, .flags = MG_CF_REQUIRED,
        .fn = parse_route_upstream),
    ROW("timeout", MG_K_DURATION, RT(timeout_ms), "15s", .lo = 1),
    ROW("priority", MG_K_ENUM, RT(priority), "default", .sub = mg_conf_priority_names),
    ROW("balancer", MG_K_SECTION, RT(balancer), NULL, .sub = balancer_fields),
    ROW("plugins", MG_K_CUSTOM, 0, NULL, .fn = parse_plugins),
    ROW("idempotency", MG_K_SECTION, RT(idempotency), NULL, .flags = MG_CF_ENABLE,
        .off2 = IDM(enabled), .sub = idempotency_fields),
    END,
};

static int parse_upstreams(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
static int parse_routes(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
static int parse_global_plugins(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

const struct mg_conf_field mg_conf_root_fields[] = {
    ROW("listen", MG_K_CUSTOM, 0, NULL, .flags = MG_CF_REQUIRED, .fn = mg_conf_listen),
    ROW("workers", MG_K_CUSTOM, CFG(workers), NULL, .fn = parse_workers), /* default auto */
    /* Followed before the tables run (include.c); the row only admits the key. */
    ROW("include", MG_K_CUSTOM, 0, NULL, .fn = skip_include),
    ROW("admin", MG_K_SECTION, 0, NULL, .flags = MG_CF_ENABLE, .off2 = CFG(admin_enabled),
        .sub = admin_fields),
    /* No default here: it depends on the user (process/pidfile.h). */
    ROW("pid_file", MG_K_STRING, CFG(pid_file), NULL),
    ROW("shutdown_delay", MG_K_DURATION, CFG(shutdown_delay_ms), "0s"),
    ROW("watch_config", MG_K_BOOL, CFG(watch_config), "false"),
    ROW("plugin_path", MG_K_STRLIST, CFG(plugin_path), NULL, .off2 = CFG(nplugin_path),
        .fn = resolve_plugin_path),
    ROW("access_log", MG_K_STRING, CFG(access_log), "stderr"), /* stderr | off | a path */
    ROW("access_log_fields", MG_K_STRLIST, CFG(access_log_fields), NULL,
        .off2 = CFG(naccess_log_fields), .fn = check_access_log_fields),
    ROW("log", MG_K_SECTION, CFG(log), NULL, .sub = log_fields),
    ROW("metrics", MG_K_SECTION, 0, NULL, .sub = metrics_fields),
    ROW("drain_timeout", MG_K_DURATION, CFG(drain_timeout_ms), "30s"),
    /* Not in DESIGN.md: the memory store needs a bound and operators a knob. */
    ROW("idempotency_memory", MG_K_SIZE, CFG(idempotency_memory), "64m", .lo = 4096),
    ROW("redis", MG_K_SECTION, CFG(redis), NULL, .flags = MG_CF_ENABLE, .off2 = RDS(enabled),
        .sub = redis_fields, .fn = check_redis),
    ROW("client", MG_K_SECTION, CFG(client), NULL, .sub = client_fields),
    ROW("forwarded", MG_K_SECTION, CFG(forwarded), NULL, .sub = mg_conf_forwarded_fields),
    ROW("resolver", MG_K_SECTION, CFG(resolver), NULL, .sub = mg_conf_resolver_fields,
        .fn = mg_conf_check_resolver),
    ROW("shared_dicts", MG_K_CUSTOM, CFG(shared_dicts), NULL, .fn = mg_conf_shared_dicts),
    ROW("http2", MG_K_SECTION, CFG(http2), NULL, .sub = mg_conf_http2_fields),
    ROW("upstreams", MG_K_CUSTOM, 0, NULL, .flags = MG_CF_REQUIRED, .fn = parse_upstreams),
    ROW("routes", MG_K_CUSTOM, 0, NULL, .flags = MG_CF_REQUIRED, .fn = parse_routes),
    ROW("plugins", MG_K_CUSTOM, 0, NULL, .fn = parse_global_plugins),
    END,
};

/* ---- sections that are lists or named maps ---- */

static int parse_targets(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_upstream_conf *up = dst;
    size_t cnt;

    if (n == NULL)
        return 0; /* discovery gives them (checked with the whole upstream) */
    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one target");
    up->targets = mg_conf_alloc(ld, cnt * sizeof(*up->targets));
    up->ntargets = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        if (item->type != YAML_MAPPING_NODE)
            return mg_conf_fail(ld, item, "expected a mapping like {address: \"host:port\"}");
        if (mg_conf_section(ld, item, target_fields, &up->targets[i]) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(up->targets[j].address.text, up->targets[i].address.text) == 0) {
                mg_conf_push_key(ld, "address");
                return mg_conf_fail(ld, mg_conf_child(ld, item, "address"),
                                    "duplicate target '%.100s'", up->targets[i].address.text);
            }
        }
        mg_conf_pop(ld, at);
    }
    return 0;
}

static int parse_upstreams(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_config *cfg = dst;
    size_t cnt;

    if (mg_conf_map(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one upstream");
    cfg->upstreams = mg_conf_alloc(ld, cnt * sizeof(*cfg->upstreams));
    cfg->nupstreams = cnt;
    for (size_t i = 0; i < cnt; i++) {
        struct mg_upstream_conf *up = &cfg->upstreams[i];
        yaml_node_t *key = mg_conf_pair_key(ld, n, i), *val = mg_conf_pair_value(ld, n, i);
        size_t at = mg_conf_push_key(ld, (const char *)key->data.scalar.value);
        up->name = mg_conf_strdup(ld, (const char *)key->data.scalar.value);
        up->index = i;
        if (up->name[0] == '\0')
            return mg_conf_fail(ld, key, "upstream name must not be empty");
        if (val->type != YAML_MAPPING_NODE)
            return mg_conf_fail(ld, val, "expected a mapping with targets");
        if (mg_conf_section(ld, val, upstream_fields, up) < 0 ||
            mg_conf_upstream_tls_build(ld, val, &up->tls) < 0 ||
            mg_conf_check_upstream_targets(ld, val, up) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

static int parse_route_upstream(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_upstream_conf **up = dst;
    const struct mg_config *cfg = ld->cfg;
    const char *name;

    if (mg_conf_scalar(ld, n, "an upstream name", &name) < 0)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        if (strcmp(cfg->upstreams[i].name, name) == 0) {
            *up = &cfg->upstreams[i];
            return 0;
        }
    }
    return mg_conf_fail(ld, n, "unknown upstream '%.64s'", name);
}

static int check_plugin_name(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const char *name = *(char **)dst;

    /* The name becomes a file name (NAME.lua): no '/', no "..". */
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            strlen(name) ||
        strlen(name) > 64)
        return mg_conf_fail(ld, n, "invalid plugin name '%.64s' (letters, digits, '_', '-')", name);
    return 0;
}

static int parse_plugin_config(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_conf_value **out = dst;

    *out = NULL;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return mg_conf_fail(ld, n, "expected a mapping");
    *out = mg_conf_alloc(ld, sizeof(**out));
    return mg_conf_value(ld, n, *out);
}

static int parse_plugin_list(struct mg_conf_ld *ld, yaml_node_t *n, struct mg_plugin_conf **list,
                             size_t *count)
{
    size_t cnt;

    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    *list = cnt ? mg_conf_alloc(ld, cnt * sizeof(**list)) : NULL;
    *count = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        if (item->type != YAML_MAPPING_NODE)
            return mg_conf_fail(ld, item, "expected a mapping like {name: NAME, config: {}}");
        if (mg_conf_section(ld, item, plugin_fields, &(*list)[i]) < 0)
            return -1;
        (*list)[i].line = (int)item->start_mark.line + 1;
        (*list)[i].col = (int)item->start_mark.column + 1;
        (*list)[i].file = mg_conf_strdup(ld, mg_conf_file_of(ld, item));
        mg_conf_pop(ld, at);
    }
    return 0;
}

static int parse_plugins(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_route_conf *rt = dst;
    return parse_plugin_list(ld, n, &rt->plugins, &rt->nplugins);
}

static int parse_global_plugins(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_config *cfg = dst;
    return parse_plugin_list(ld, n, &cfg->plugins, &cfg->nplugins);
}

static int parse_route(struct mg_conf_ld *ld, yaml_node_t *item, struct mg_route_conf *rts,
                       size_t i)
{
    struct mg_route_conf *rt = &rts[i];
    yaml_node_t *bal;

    if (item->type != YAML_MAPPING_NODE)
        return mg_conf_fail(ld, item, "expected a mapping with name and upstream");
    if (mg_conf_section(ld, item, route_fields, rt) < 0)
        return -1;
    rt->index = i;
    bal = mg_conf_child(ld, item, "balancer");
    rt->balancer.line = (int)(bal ? bal : item)->start_mark.line + 1;
    rt->balancer.col = (int)(bal ? bal : item)->start_mark.column + 1;
    rt->balancer.file = mg_conf_strdup(ld, mg_conf_file_of(ld, bal ? bal : item));
    for (size_t j = 0; j < i; j++) {
        if (strcmp(rts[j].name, rt->name) == 0) {
            mg_conf_push_key(ld, "name");
            return mg_conf_fail(ld, mg_conf_child(ld, item, "name"), "duplicate route name '%.64s'",
                                rt->name);
        }
    }
    return 0;
}

static int parse_routes(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_config *cfg = dst;
    size_t cnt;

    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one route");
    cfg->routes = mg_conf_alloc(ld, cnt * sizeof(*cfg->routes));
    cfg->nroutes = cnt;
    for (size_t i = 0; i < cnt; i++) {
        size_t at = mg_conf_push_index(ld, i);
        if (parse_route(ld, mg_conf_seq_item(ld, n, i), cfg->routes, i) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}
