/*
 * Outlier detection across the targets of one upstream (DESIGN.md section
 * 10.7; Envoy's success-rate and latency ejection, simplified): every
 * `interval` (or sooner on a busy upstream: mg_outlier_due), the targets that served at least
 * `min_requests` in it are compared with the others; one whose error rate exceeds `error_factor`
 * times the others' (and 5 %), or whose mean latency exceeds `latency_factor` times theirs, is
 * taken out of rotation (out_until) for base_ejection doubled by each consecutive ejection, never
 * more than max_ejection_percent of the targets at once. A target found normal again starts
 * doubling from 1.
 */
#ifndef MG_OUTLIER_H
#define MG_OUTLIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/registry-t.h"

/* One finished try of target t (counted for the upstream's clock too). */
void mg_outlier_record(struct mg_outlier_clock *clk, struct mg_target_stats *t, bool error,
                       uint64_t latency_us);
/* Whether an evaluation is due: a full one (error rates and latency, over
 * what happened since the last full one) every `interval`; between them, an
 * early one (error rates only, since the last evaluation) once interval / 5
 * has passed and the upstream's tries since the last reach n x min_requests,
 * so a target of a busy upstream turning bad is ejected within about 2 s by
 * default, whatever the phase of the interval. Cheap: three loads at most. */
bool mg_outlier_due(struct mg_outlier_clock *clk, size_t n, const struct mg_outlier_conf *c,
                    uint64_t now_ms);
/* Runs the evaluation when it is due (one caller wins, the others return at
 * once); the counters compared are those since the last one. ts: the
 * upstream's n targets. Returns how many targets it ejected; their bits
 * (1 << index) are set in *which unless it is NULL. */
unsigned mg_outlier_maybe_eval(struct mg_outlier_clock *clk, struct mg_target_stats *const *ts,
                               size_t n, const struct mg_outlier_conf *c, uint64_t now_ms,
                               uint64_t *which);

#endif
