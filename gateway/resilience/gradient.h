/*
 * Adaptive concurrency limit of one upstream, process-wide (DESIGN.md section
 * 10.7, `bulkhead: {adaptive: {min_limit, max_limit, smoothing}}`): a gradient
 * limiter in the style of Netflix concurrency-limits' Gradient2 inside its
 * WindowedLimit. Each response head's latency updates the baseline (the least
 * latency seen, drifting up slowly) and the current window; once per window
 * (at least MG_GRADIENT_WINDOW_MIN samples and the longer of 100 ms and two
 * baselines) the window's average latency moves the limit: the gradient
 * baseline/average (times a 1.5 tolerance, within [0.5, 1]) scales it, it
 * gains sqrt(limit) of headroom, and the result is smoothed by `smoothing`.
 * Moving once per window matters: moved on every response, the limit grew
 * with throughput faster than the latency it caused came back, then collapsed
 * to min_limit, and swung so every few seconds. The limit only moves when at
 * least half of it was in use during the window (an idle upstream says
 * nothing about its capacity). The bulkhead reads the published limit instead
 * of max_concurrent.
 */
#ifndef MG_GRADIENT_H
#define MG_GRADIENT_H

#include <stdint.h>

#include "config/config-t.h"
#include "resilience/bulkhead-t.h"
#include "resilience/gradient-t.h"

#define MG_GRADIENT_WINDOW_MIN    10     /* samples in a window */
#define MG_GRADIENT_WINDOW_MIN_US 100000 /* and at least this long */

/* One response head after `rtt_us`, with `in_use` slots held, at monotonic
 * time `now_us`. Publishes the limit into *limit. Skipped when another worker
 * is updating. */
void mg_gradient_sample(struct mg_gradient *g, _Atomic uint32_t *limit,
                        const struct mg_adaptive_conf *c, uint64_t rtt_us, uint32_t in_use,
                        uint64_t now_us);

#endif
