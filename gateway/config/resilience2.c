/*
 * Parsers and checks of the section 10.7 keys (see resilience2.h).
 */
#include "config/resilience2.h"

#include <stddef.h>

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

const char *const mg_conf_priority_names[] = {"critical", "default", "sheddable", NULL};
