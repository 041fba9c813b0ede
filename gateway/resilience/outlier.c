/*
 * Outlier detection (see outlier.h).
 */
#include "resilience/outlier.h"

#define MG_OUTLIER_MAX       64   /* targets compared per upstream */
#define MG_OUTLIER_MIN_RATE  0.05 /* an error rate below this is never an outlier */
#define MG_OUTLIER_EARLY_DIV 5    /* early evaluations at most every interval / this */

void mg_outlier_record(struct mg_outlier_clock *clk, struct mg_target_stats *t, bool error,
                       uint64_t latency_us)
{
    atomic_fetch_add_explicit(&clk->samples, 1, memory_order_relaxed);
    struct mg_outlier_cell *o = &t->outlier;
    atomic_fetch_add_explicit(&o->requests, 1, memory_order_relaxed);
    if (error)
        atomic_fetch_add_explicit(&o->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&o->latency_us, latency_us, memory_order_relaxed);
}

struct delta {
    uint64_t req, err;  /* since the last evaluation */
    uint64_t lreq, lat; /* since the last full one (latency is judged there) */
};

static struct delta take(struct mg_outlier_cell *o, bool full)
{
    uint64_t r = atomic_load_explicit(&o->requests, memory_order_relaxed);
    uint64_t e = atomic_load_explicit(&o->errors, memory_order_relaxed);
    uint64_t l = atomic_load_explicit(&o->latency_us, memory_order_relaxed);
    struct delta d = {r - o->seen_requests, e - o->seen_errors, r - o->lat_seen_requests,
                      l - o->lat_seen_latency_us};
    o->seen_requests = r;
    o->seen_errors = e;
    if (full) {
        o->lat_seen_requests = r;
        o->lat_seen_latency_us = l;
    }
    return d;
}

static bool error_outlier(const struct delta *d, size_t n, size_t k,
                          const struct mg_outlier_conf *c)
{
    uint64_t req = 0, err = 0;
    for (size_t j = 0; j < n; j++) {
        if (j == k || d[j].req < c->min_requests)
            continue;
        req += d[j].req;
        err += d[j].err;
    }
    if (req == 0 || d[k].req < c->min_requests)
        return false; /* nobody to compare with, or too few to judge */
    double rate = (double)d[k].err / (double)d[k].req, others = (double)err / (double)req;
    return rate >= MG_OUTLIER_MIN_RATE && rate > c->error_factor * others;
}

/* Over a whole interval only: a second's mean latency is too easily skewed by
 * one stall of a target (or of the gateway's host) to take it out for it. */
static bool latency_outlier(const struct delta *d, size_t n, size_t k,
                            const struct mg_outlier_conf *c)
{
    uint64_t req = 0, lat = 0;
    for (size_t j = 0; j < n; j++) {
        if (j == k || d[j].lreq < c->min_requests)
            continue;
        req += d[j].lreq;
        lat += d[j].lat;
    }
    if (req == 0 || d[k].lreq < c->min_requests)
        return false;
    double mean = (double)d[k].lat / (double)d[k].lreq, others_mean = (double)lat / (double)req;
    return others_mean > 0 && mean > c->latency_factor * others_mean;
}

bool mg_outlier_due(struct mg_outlier_clock *clk, size_t n, const struct mg_outlier_conf *c,
                    uint64_t now_ms)
{
    if (now_ms >= atomic_load_explicit(&clk->full_ms, memory_order_relaxed))
        return true;
    /* Early (error rates only): every target could have served min_requests
     * since the last evaluation, and a fifth of the interval has passed (so a
     * busy upstream is judged about once a second by default, a quiet one
     * every interval). */
    uint64_t last = atomic_load_explicit(&clk->last_ms, memory_order_relaxed);
    return now_ms >= last + c->interval_ms / MG_OUTLIER_EARLY_DIV &&
           atomic_load_explicit(&clk->samples, memory_order_relaxed) >= n * c->min_requests;
}

static unsigned evaluate(struct mg_target_stats *const *ts, size_t n,
                         const struct mg_outlier_conf *c, uint64_t now_ms, bool full,
                         uint64_t *which)
{
    n = n < MG_OUTLIER_MAX ? n : MG_OUTLIER_MAX;
    struct delta d[MG_OUTLIER_MAX];
    size_t out = 0;
    for (size_t k = 0; k < n; k++) {
        d[k] = take(&ts[k]->outlier, full);
        if (atomic_load_explicit(&ts[k]->out_until, memory_order_relaxed) > now_ms)
            out++;
    }
    size_t allowed = n * c->max_ejection_percent / 100;
    unsigned ejected = 0;
    for (size_t k = 0; k < n; k++) {
        struct mg_outlier_cell *o = &ts[k]->outlier;
        bool errors = error_outlier(d, n, k, c);
        if (!errors && !(full && latency_outlier(d, n, k, c))) {
            if (d[k].req >= c->min_requests && full)
                o->ejections = 0; /* judged normal over a whole interval */
            continue;
        }
        if (out >= allowed)
            continue;
        unsigned shift = o->ejections < 10 ? o->ejections : 10;
        o->ejections++;
        uint64_t until = now_ms + (c->base_ejection_ms << shift);
        uint64_t cur = atomic_load_explicit(&ts[k]->out_until, memory_order_relaxed);
        while (cur < until &&
               !atomic_compare_exchange_weak_explicit(&ts[k]->out_until, &cur, until,
                                                      memory_order_relaxed, memory_order_relaxed)) {
        }
        out++;
        ejected++;
        if (which)
            *which |= 1ull << k;
    }
    return ejected;
}

/* Whether this evaluation is a full one, after taking the clock; false with
 * *go false when nothing is due. The caller holds clk->busy. */
static bool claim(struct mg_outlier_clock *clk, size_t n, const struct mg_outlier_conf *c,
                  uint64_t now_ms, bool *go)
{
    *go = false;
    if (!mg_outlier_due(clk, n, c, now_ms))
        return false;
    atomic_store_explicit(&clk->last_ms, now_ms, memory_order_relaxed);
    atomic_store_explicit(&clk->samples, 0, memory_order_relaxed); /* a racing add may be lost */
    uint64_t full_due = atomic_load_explicit(&clk->full_ms, memory_order_relaxed);
    bool full = now_ms >= full_due;
    if (full)
        atomic_store_explicit(&clk->full_ms, now_ms + c->interval_ms, memory_order_relaxed);
    *go = full_due != 0 && n >= 2; /* the first call only starts the clock */
    return full;
}

unsigned mg_outlier_maybe_eval(struct mg_outlier_clock *clk, struct mg_target_stats *const *ts,
                               size_t n, const struct mg_outlier_conf *c, uint64_t now_ms,
                               uint64_t *which)
{
    /* One evaluator at a time: another worker finding it taken skips (it was
     * due for both; the holder does it). */
    if (atomic_flag_test_and_set_explicit(&clk->busy, memory_order_acquire))
        return 0;
    bool go;
    bool full = claim(clk, n, c, now_ms, &go);
    unsigned ejected = go ? evaluate(ts, n, c, now_ms, full, which) : 0;
    atomic_flag_clear_explicit(&clk->busy, memory_order_release);
    return ejected;
}
