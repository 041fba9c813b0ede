/*
 * Outlier detection across the targets of one upstream (DESIGN.md section
 * 10.7; Envoy's success-rate and latency ejection, simplified): every
 * `interval`, the targets that served at least `min_requests` in it are
 * compared with the others; one whose error rate exceeds `error_factor` times
 * the others' (and 5 %), or whose mean latency exceeds `latency_factor` times
 * theirs, is taken out of rotation (out_until) for base_ejection doubled by
 * each consecutive ejection, never more than max_ejection_percent of the
 * targets at once. A target found normal again starts doubling from 1.
 */
#ifndef MG_OUTLIER_H
#define MG_OUTLIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/registry-t.h"

/* One finished try of target t. */
void mg_outlier_record(struct mg_target_stats *t, bool error, uint64_t latency_us);
/* Runs the evaluation when `interval` has passed since the last one (one caller
 * wins, the others return at once). ts: the upstream's n targets. Returns how
 * many targets it ejected. */
unsigned mg_outlier_maybe_eval(_Atomic uint64_t *next_eval_ms, struct mg_target_stats *const *ts,
                               size_t n, const struct mg_outlier_conf *c, uint64_t now_ms);

#endif
