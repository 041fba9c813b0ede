/*
 * Config keys of the second resilience round (DESIGN.md section 10.7) that the
 * generic field kinds cannot express on their own: the rows live in fields.c,
 * their parsers and checks here.
 */
#ifndef MG_CONFIG_RESILIENCE2_H
#define MG_CONFIG_RESILIENCE2_H

#include "config/parse.h"

/* timeouts.per_try: a duration, or null (absent) for none (stored as 0). */
int mg_conf_per_try(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
/* deadline_header: a header name, or null. */
int mg_conf_check_deadline_header(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
/* honor_retry_after: {max: 30s} */
extern const struct mg_conf_field mg_conf_retry_after_fields[];
/* hedge: {after, max} */
extern const struct mg_conf_field mg_conf_hedge_fields[];
int mg_conf_check_hedge(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
/* outlier_detection: {interval, error_factor, ...} */
extern const struct mg_conf_field mg_conf_outlier_fields[];
/* bulkhead.adaptive: {min_limit, max_limit, smoothing} */
extern const struct mg_conf_field mg_conf_adaptive_fields[];
int mg_conf_check_adaptive(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
/* routes[].priority names, in enum mg_priority order. */
extern const char *const mg_conf_priority_names[];

#endif
