/*
 * Gradient limiter (see gradient.h).
 */
#include "resilience/gradient.h"

#include <math.h>

#define BASELINE_DRIFT 6000.0 /* samples for the baseline to follow a lasting rise */
#define TOLERANCE      1.5    /* latency may grow this much before the limit shrinks */

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The window is over: its average latency moves the limit once. */
static void close_window(struct mg_gradient *g, const struct mg_adaptive_conf *c)
{
    double avg = g->win_sum_us / g->win_n;
    g->short_rtt = avg;
    if ((double)g->win_in_use >= g->limit / 2) {
        double gradient = clampd(TOLERANCE * g->long_rtt / avg, 0.5, 1.0);
        double next = g->limit * gradient + sqrt(g->limit);
        next = g->limit * (1 - c->smoothing) + next * c->smoothing;
        g->limit = clampd(next, c->min_limit, c->max_limit);
    }
}

static void start_window(struct mg_gradient *g, uint64_t now_us)
{
    g->win_start_us = now_us;
    g->win_sum_us = 0;
    g->win_n = 0;
    g->win_in_use = 0;
}

void mg_gradient_sample(struct mg_gradient *g, _Atomic uint32_t *limit,
                        const struct mg_adaptive_conf *c, uint64_t rtt_us, uint32_t in_use,
                        uint64_t now_us)
{
    if (atomic_flag_test_and_set_explicit(&g->busy, memory_order_acquire))
        return;
    double rtt = rtt_us ? (double)rtt_us : 1.0;
    if (g->samples++ == 0) {
        g->long_rtt = g->short_rtt = rtt;
        g->limit = clampd((double)c->min_limit * 5, c->min_limit, c->max_limit);
        start_window(g, now_us);
    } else {
        /* The baseline is the least latency seen, drifting up slowly so an
         * upstream that became slower for good is re-measured. */
        if (rtt < g->long_rtt)
            g->long_rtt = rtt;
        else
            g->long_rtt += (rtt - g->long_rtt) / BASELINE_DRIFT;
        g->win_sum_us += rtt;
        g->win_n++;
        if (in_use > g->win_in_use)
            g->win_in_use = in_use;
        uint64_t span = (uint64_t)(2 * g->long_rtt);
        if (span < MG_GRADIENT_WINDOW_MIN_US)
            span = MG_GRADIENT_WINDOW_MIN_US;
        if (g->win_n >= MG_GRADIENT_WINDOW_MIN && now_us - g->win_start_us >= span) {
            close_window(g, c);
            start_window(g, now_us);
        }
    }
    atomic_store_explicit(limit, (uint32_t)(g->limit + 0.5), memory_order_relaxed);
    atomic_flag_clear_explicit(&g->busy, memory_order_release);
}
