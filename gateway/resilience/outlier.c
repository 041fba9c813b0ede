/*
 * Outlier detection (see outlier.h).
 */
#include "resilience/outlier.h"

#define MG_OUTLIER_MAX      64   /* targets compared per upstream */
#define MG_OUTLIER_MIN_RATE 0.05 /* an error rate below this is never an outlier */

void mg_outlier_record(struct mg_target_stats *t, bool error, uint64_t latency_us)
{
    struct mg_outlier_cell *o = &t->outlier;
    atomic_fetch_add_explicit(&o->requests, 1, memory_order_relaxed);
    if (error)
        atomic_fetch_add_explicit(&o->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&o->latency_us, latency_us, memory_order_relaxed);
}

struct delta {
    uint64_t req, err, lat;
};

static struct delta take(struct mg_outlier_cell *o)
{
    uint64_t r = atomic_load_explicit(&o->requests, memory_order_relaxed);
    uint64_t e = atomic_load_explicit(&o->errors, memory_order_relaxed);
    uint64_t l = atomic_load_explicit(&o->latency_us, memory_order_relaxed);
    struct delta d = {r - o->seen_requests, e - o->seen_errors, l - o->seen_latency_us};
    o->seen_requests = r;
    o->seen_errors = e;
    o->seen_latency_us = l;
    return d;
}

static bool is_outlier(const struct delta *d, size_t n, size_t k, const struct mg_outlier_conf *c)
{
    uint64_t req = 0, err = 0, lat = 0;
    for (size_t j = 0; j < n; j++) {
        if (j == k || d[j].req < c->min_requests)
            continue;
        req += d[j].req;
        err += d[j].err;
        lat += d[j].lat;
    }
    if (req == 0)
        return false; /* nobody to compare with */
    double rate = (double)d[k].err / (double)d[k].req, others = (double)err / (double)req;
    if (rate >= MG_OUTLIER_MIN_RATE && rate > c->error_factor * others)
        return true;
    double mean = (double)d[k].lat / (double)d[k].req, others_mean = (double)lat / (double)req;
    return others_mean > 0 && mean > c->latency_factor * others_mean;
}

unsigned mg_outlier_maybe_eval(_Atomic uint64_t *next_eval_ms, struct mg_target_stats *const *ts,
                               size_t n, const struct mg_outlier_conf *c, uint64_t now_ms)
{
    uint64_t due = atomic_load_explicit(next_eval_ms, memory_order_relaxed);
    if (now_ms < due ||
        !atomic_compare_exchange_strong_explicit(next_eval_ms, &due, now_ms + c->interval_ms,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return 0;
    if (due == 0 || n < 2)
        return 0; /* the first call only starts the clock */
    n = n < MG_OUTLIER_MAX ? n : MG_OUTLIER_MAX;
    struct delta d[MG_OUTLIER_MAX];
    size_t out = 0;
    for (size_t k = 0; k < n; k++) {
        d[k] = take(&ts[k]->outlier);
        if (atomic_load_explicit(&ts[k]->out_until, memory_order_relaxed) > now_ms)
            out++;
    }
    size_t allowed = n * c->max_ejection_percent / 100;
    unsigned ejected = 0;
    for (size_t k = 0; k < n; k++) {
        struct mg_outlier_cell *o = &ts[k]->outlier;
        if (d[k].req < c->min_requests)
            continue;
        if (!is_outlier(d, n, k, c)) {
            o->ejections = 0;
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
    }
    return ejected;
}
