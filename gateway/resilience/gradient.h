/*
 * Adaptive concurrency limit of one upstream, process-wide (DESIGN.md section
 * 10.7, `bulkhead: {adaptive: {min_limit, max_limit, smoothing}}`): a gradient
 * limiter in the style of Netflix concurrency-limits' Gradient2. Each response
 * head's latency updates a fast average and the baseline (the least latency
 * seen, drifting up slowly); the gradient baseline/fast (times a 1.5
 * tolerance, within [0.5, 1]) scales the limit, which also gains
 * sqrt(limit) of headroom, and the result is smoothed by `smoothing`. The limit
 * only moves while at least half of it is in use (an idle upstream says
 * nothing about its capacity). The bulkhead reads the published limit instead
 * of max_concurrent.
 */
#ifndef MG_GRADIENT_H
#define MG_GRADIENT_H

#include <stdint.h>

#include "config/config-t.h"
#include "resilience/bulkhead-t.h"
#include "resilience/gradient-t.h"

/* One response head after `rtt_us`, with `in_use` slots held. Publishes the
 * new limit into *limit. Skipped when another worker is updating. */
void mg_gradient_sample(struct mg_gradient *g, _Atomic uint32_t *limit,
                        const struct mg_adaptive_conf *c, uint64_t rtt_us, uint32_t in_use);

#endif
