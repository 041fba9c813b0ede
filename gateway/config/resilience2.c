/*
 * Parsers and checks of the section 10.7 keys (see resilience2.h).
 */
#include "config/resilience2.h"

#include <stddef.h>
#include <stdlib.h>

#include "config/config.h"
#include "http/message.h"

_Static_assert(sizeof(enum mg_priority) == sizeof(int), "MG_K_ENUM stores an int");

int mg_conf_per_try(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    uint64_t *ms = dst;
    const char *s;

    *ms = 0;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    if (mg_conf_scalar(ld, n, "a duration or null", &s) < 0)
        return -1;
    if (mg_parse_duration_ms(s, ms) < 0)
        return mg_conf_fail(ld, n, "invalid duration '%.64s' (expected e.g. 250ms, 10s, or null)",
                            s);
    if (*ms == 0)
        return mg_conf_fail(ld, n, "per_try must be at least 1ms (null: no per-try limit)");
    return 0;
}

int mg_conf_check_deadline_header(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const char *s = *(char **)dst;

    if (s == NULL)
        return 0;
    for (const char *p = s; *p; p++)
        if (!mg_http_tchar[(unsigned char)*p])
            return mg_conf_fail(ld, n, "invalid header name '%.64s'", s);
    return 0;
}

#define UP(m) offsetof(struct mg_upstream_conf, m)

const struct mg_conf_field mg_conf_retry_after_fields[] = {
    ROW("max", MG_K_DURATION, UP(retry_after_max_ms), "30s", .lo = 1),
    END,
};

/* hedge.after: "pNN" (or "pNN.N"), 50 <= NN < 100, or a duration >= 1ms. */
static int parse_hedge_after(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_hedge_conf *h = dst;
    const char *s;

    if (n == NULL)
        return 0; /* checked with the section: hedging off, or an error */
    if (mg_conf_scalar(ld, n, "a duration or a percentile", &s) < 0)
        return -1;
    if (s[0] == 'p') {
        char *end;
        double pct = strtod(s + 1, &end);
        if (end == s + 1 || *end != '\0' || !(pct >= 50 && pct < 100))
            return mg_conf_fail(ld, n, "invalid percentile '%.64s' (expected p50 to p99.9)", s);
        h->after_permille = (uint32_t)(pct * 10 + 0.5);
        h->after_ms = 0;
        return 0;
    }
    if (mg_parse_duration_ms(s, &h->after_ms) < 0 || h->after_ms == 0)
        return mg_conf_fail(ld, n, "invalid hedge delay '%.64s' (expected e.g. 50ms or p95)", s);
    return 0;
}

int mg_conf_check_hedge(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_hedge_conf *h = dst;

    if (h->enabled && !h->after_ms && !h->after_permille)
        return mg_conf_fail(ld, n,
                            "hedge needs 'after' (a duration like 50ms or a percentile "
                            "like p95)");
    return 0;
}

#define HDG(m) offsetof(struct mg_hedge_conf, m)

const struct mg_conf_field mg_conf_hedge_fields[] = {
    ROW("after", MG_K_CUSTOM, 0, NULL, .fn = parse_hedge_after),
    ROW("max", MG_K_UINT, HDG(max), "1", .lo = 1, .hi = 3),
    ROW("budget", MG_K_DOUBLE, HDG(budget), "5", .lo = 0, .hi = 100),
    END,
};

#define OUT(m) offsetof(struct mg_outlier_conf, m)

const struct mg_conf_field mg_conf_outlier_fields[] = {
    ROW("interval", MG_K_DURATION, OUT(interval_ms), "5s", .lo = 1),
    ROW("error_factor", MG_K_DOUBLE, OUT(error_factor), "2.0", .lo = 1, .hi = 1000),
    ROW("latency_factor", MG_K_DOUBLE, OUT(latency_factor), "3.0", .lo = 1, .hi = 1000),
    ROW("base_ejection", MG_K_DURATION, OUT(base_ejection_ms), "30s", .lo = 1),
    ROW("max_ejection_percent", MG_K_UINT, OUT(max_ejection_percent), "50", .hi = 100),
    ROW("min_requests", MG_K_UINT, OUT(min_requests), "50", .lo = 1),
    END,
};

#define ADP(m) offsetof(struct mg_adaptive_conf, m)

const struct mg_conf_field mg_conf_adaptive_fields[] = {
    ROW("min_limit", MG_K_UINT, ADP(min_limit), "4", .lo = 1, .hi = (1u << 21) - 1),
    ROW("max_limit", MG_K_UINT, ADP(max_limit), "512", .lo = 1, .hi = (1u << 21) - 1),
    ROW("smoothing", MG_K_DOUBLE, ADP(smoothing), "0.2", .lo = 0.01, .hi = 1),
    END,
};

int mg_conf_check_adaptive(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_adaptive_conf *a = dst;

    if (a->enabled && a->min_limit > a->max_limit)
        return mg_conf_fail(ld, n, "min_limit must not exceed max_limit");
    return 0;
}

const char *const mg_conf_priority_names[] = {"critical", "default", "sheddable", NULL};
