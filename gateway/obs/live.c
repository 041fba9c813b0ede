/*
 * The live dashboard's sampling ring and its JSON (see live.h).
 *
 * Every sample gets a sequence number `seq` (1, 2, ...). Point arrays are rings
 * indexed by seq % MG_LIVE_POINTS; the latency window keeps the cumulative
 * histogram of the last LAT_SPAN + 1 samples (seq % (LAT_SPAN + 1)), so p50 and
 * p99 at a point come from the requests of the 10 s ending there rather than
 * from one noisy second; per-minute counts come from cumulative "marks" taken
 * every MARK_EVERY samples, the oldest of which is 60-70 s old.
 *
 * Ownership: the history owns its arrays (one struct gen per adopted config
 * generation) and holds one reference on that generation's metrics and
 * config, so its names and indices stay valid between samples. The journal
 * is the only state another thread touches, under `journal_mu`.
 */
#include "obs/live.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "obs/textbuf.h"
#include "resilience/breaker.h"

#ifndef MG_VERSION
#define MG_VERSION "dev"
#endif

#define LAT_SPAN    10 /* samples in the p50/p99 window */
#define MARK_EVERY  10 /* samples between two per-minute marks */
#define MARKS       7  /* the oldest is 60-70 samples old */
#define JOURNAL     8  /* reloads remembered */
#define JOURNAL_ERR 512

/* One second of one route. Latencies are NAN when no request ended in the
 * window (shown as a gap, not as 0 ms). */
struct point {
    float rps;      /* requests answered per second */
    float eps;      /* error responses per second: gateway errors and upstream 5xx */
    float p50, p99; /* milliseconds, over the LAT_SPAN samples ending here */
    int32_t in_flight;
};

struct route {
    char *name; /* "" for requests that matched no route */
    uint64_t requests, errors;
    uint64_t err_now[MG_ERR__COUNT + 1]; /* by mg_error; [MG_ERR__COUNT] = upstream 5xx */
    uint64_t err_mark[MARKS][MG_ERR__COUNT + 1];
    uint64_t lat[LAT_SPAN + 1][MG_METRICS_NBUCKETS]; /* cumulative */
    struct point pt[MG_LIVE_POINTS];
};

struct target {
    uint64_t now[MG_OUTCOME__COUNT];
    uint64_t mark[MARKS][MG_OUTCOME__COUNT];
};

enum { UP_REJECTED, UP_RETRIES, UP__COUNT };

struct upstream {
    uint64_t now[UP__COUNT];
    uint64_t mark[MARKS][UP__COUNT];
};

/* The arrays for one config generation; nroutes + 1 routes ([0] = no route). */
struct gen {
    struct mg_config *cfg;
    struct mg_metrics *m;
    size_t nroutes, ntargets, nupstreams;
    struct route *routes;
    struct upstream *upstreams;
    struct target *targets; /* flat, in config order */
    size_t *target_base;    /* nupstreams */
};

struct reload_entry {
    int64_t at_ms;
    bool ok;
    uint64_t version;
    char error[JOURNAL_ERR];
};

struct mg_live {
    uint64_t seq;       /* samples taken; the newest point is seq */
    int64_t last_ms;    /* time of sample seq */
    int64_t started_ms; /* first sample: uptime of the history */
    uint64_t start_hr;  /* uv_hrtime() at creation: process uptime */
    struct gen *gen;    /* NULL until the first sample */

    uv_mutex_t journal_mu;
    struct reload_entry journal[JOURNAL]; /* ring; journal_mu */
    unsigned journal_n;                   /* entries ever written; journal_mu */
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        mg_fatal("out of memory (live)");
    return p;
}

/* ------------------------------------------------------------ lifecycle */

struct mg_live *mg_live_new(void)
{
    struct mg_live *l = xcalloc(1, sizeof(*l));

    if (uv_mutex_init(&l->journal_mu) != 0)
        mg_fatal("cannot create the live journal mutex");
    l->start_hr = uv_hrtime();
    return l;
}

static void gen_free(struct gen *g)
{
    if (g == NULL)
        return;
    for (size_t r = 0; r <= g->nroutes; r++)
        free(g->routes[r].name);
    free(g->routes);
    free(g->upstreams);
    free(g->targets);
    free(g->target_base);
    mg_metrics_unref(g->m);
    mg_config_unref(g->cfg);
    free(g);
}

void mg_live_free(struct mg_live *l)
{
    if (l == NULL)
        return;
    gen_free(l->gen);
    uv_mutex_destroy(&l->journal_mu);
    free(l);
}

/* ------------------------------------------------------------- sampling */

/* Error responses by name, and the 5xx that the gateway did not make itself
 * (an upstream's own 5xx), in the last slot. */
static void route_errors(const struct mg_metrics_route_totals *t, uint64_t out[MG_ERR__COUNT + 1],
                         uint64_t *total)
{
    uint64_t own_5xx = 0;

    *total = 0;
    for (int e = MG_ERR_NONE + 1; e < MG_ERR__COUNT; e++) {
        out[e] = t->errors[e];
        *total += t->errors[e];
        if (mg_error_status(e) >= 500)
            own_5xx += t->errors[e];
    }
    out[0] = 0;
    out[MG_ERR__COUNT] = t->status_5xx > own_5xx ? t->status_5xx - own_5xx : 0;
    *total += out[MG_ERR__COUNT];
}

/* Fills a route that has no history yet, so that its first deltas are 0. */
static void route_prime(struct route *rt, const struct mg_metrics_route_totals *t)
{
    route_errors(t, rt->err_now, &rt->errors);
    rt->requests = t->requests;
    for (unsigned i = 0; i < MARKS; i++)
        memcpy(rt->err_mark[i], rt->err_now, sizeof(rt->err_now));
    for (unsigned i = 0; i <= LAT_SPAN; i++)
        memcpy(rt->lat[i], t->hist, sizeof(t->hist));
    for (unsigned i = 0; i < MG_LIVE_POINTS; i++)
        rt->pt[i] = (struct point){0, 0, NAN, NAN, 0};
}

/* Upper bound of histogram bucket b in milliseconds (+Inf, and the unused
 * buckets after it, are reported as the last finite bound, as
 * histogram_quantile does). */
static unsigned nbounds(void)
{
    const uint64_t *ns;

    return mg_metrics_bounds(&ns);
}

static double bound_ms(unsigned b)
{
    const uint64_t *ns;
    unsigned n = mg_metrics_bounds(&ns);

    if (n == 0)
        return 0;
    return (double)ns[b < n ? b : n - 1] / 1e6;
}

/* The q-quantile of a non-cumulative histogram, interpolated linearly inside
 * its bucket; NAN when it is empty. */
static double quantile(const uint64_t *h, double q)
{
    uint64_t n = 0, cum = 0;

    for (unsigned b = 0; b < MG_METRICS_NBUCKETS; b++)
        n += h[b];
    if (n == 0)
        return NAN;
    double rank = q * (double)n;
    for (unsigned b = 0; b < MG_METRICS_NBUCKETS; b++) {
        if (h[b] == 0 || (double)(cum + h[b]) < rank) {
            cum += h[b];
            continue;
        }
        if (b >= nbounds())
            return bound_ms(b);
        double lo = b ? bound_ms(b - 1) : 0;
        return lo + (bound_ms(b) - lo) * ((rank - (double)cum) / (double)h[b]);
    }
    return bound_ms(MG_METRICS_NBUCKETS - 1);
}

static void route_sample(struct route *rt, const struct mg_metrics_route_totals *t, uint64_t seq,
                         double secs)
{
    uint64_t errs[MG_ERR__COUNT + 1], nerr, window[MG_METRICS_NBUCKETS];
    struct point *p = &rt->pt[seq % MG_LIVE_POINTS];
    const uint64_t *old = rt->lat[(seq + 1) % (LAT_SPAN + 1)];

    route_errors(t, errs, &nerr);
    /* A counter never goes back; a reset (a route gone and back) reads as 0. */
    p->rps = t->requests >= rt->requests ? (float)((double)(t->requests - rt->requests) / secs) : 0;
    p->eps = nerr >= rt->errors ? (float)((double)(nerr - rt->errors) / secs) : 0;
    p->in_flight = (int32_t)t->in_flight;
    memcpy(rt->lat[seq % (LAT_SPAN + 1)], t->hist, sizeof(t->hist));
    for (unsigned b = 0; b < MG_METRICS_NBUCKETS; b++)
        window[b] = t->hist[b] >= old[b] ? t->hist[b] - old[b] : 0;
    p->p50 = (float)quantile(window, 0.5);
    p->p99 = (float)quantile(window, 0.99);
    rt->requests = t->requests;
    rt->errors = nerr;
    memcpy(rt->err_now, errs, sizeof(errs));
    if (seq % MARK_EVERY == 0)
        memcpy(rt->err_mark[(seq / MARK_EVERY) % MARKS], errs, sizeof(errs));
}

/* Builds the arrays for m's generation, carrying over by name what `old`
 * knew and priming the rest with the current totals. */
static struct gen *gen_new(struct mg_config *cfg, struct mg_metrics *m,
                           const struct mg_obs_hooks *hooks, const struct gen *old)
{
    struct gen *g = xcalloc(1, sizeof(*g));

    g->cfg = cfg;
    g->m = m;
    mg_config_ref(cfg);
    mg_metrics_ref(m);
    g->nroutes = cfg->nroutes;
    g->nupstreams = cfg->nupstreams;
    g->routes = xcalloc(g->nroutes + 1, sizeof(*g->routes));
    g->upstreams = xcalloc(g->nupstreams, sizeof(*g->upstreams));
    g->target_base = xcalloc(g->nupstreams, sizeof(size_t));
    for (size_t u = 0; u < g->nupstreams; u++) {
        g->target_base[u] = g->ntargets;
        g->ntargets += cfg->upstreams[u].ntargets;
    }
    g->targets = xcalloc(g->ntargets, sizeof(*g->targets));

    for (size_t r = 0; r <= g->nroutes; r++) {
        const char *name = r ? cfg->routes[r - 1].name : "";
        struct route *rt = &g->routes[r];
        size_t o = old ? old->nroutes + 1 : 0;
        while (o > 0 && strcmp(old->routes[o - 1].name, name) != 0)
            o--;
        if (o > 0) {
            *rt = old->routes[o - 1];
        } else {
            struct mg_metrics_route_totals t;
            mg_metrics_route_totals(m, (int)r - 1, &t);
            route_prime(rt, &t);
        }
        rt->name = strdup(name);
        if (rt->name == NULL)
            mg_fatal("out of memory (live)");
    }
    for (size_t u = 0; u < g->nupstreams; u++) {
        const struct mg_upstream_conf *up = &cfg->upstreams[u];
        size_t ou = old ? old->nupstreams : 0;
        while (ou > 0 && strcmp(old->cfg->upstreams[ou - 1].name, up->name) != 0)
            ou--;
        if (ou > 0) {
            g->upstreams[u] = old->upstreams[ou - 1];
        } else {
            struct mg_upstream_snapshot s = {0};
            if (hooks && hooks->upstream_stats)
                hooks->upstream_stats(hooks->ud, cfg, u, &s);
            uint64_t v[UP__COUNT] = {s.bulkhead_rejected, mg_metrics_retries_total(m, u)};
            memcpy(g->upstreams[u].now, v, sizeof(v));
            for (unsigned i = 0; i < MARKS; i++)
                memcpy(g->upstreams[u].mark[i], v, sizeof(v));
        }
        for (size_t t = 0; t < up->ntargets; t++) {
            struct target *tg = &g->targets[g->target_base[u] + t];
            const struct mg_target_conf *oc = NULL;
            size_t ot = 0;
            if (ou > 0) {
                const struct mg_upstream_conf *oup = &old->cfg->upstreams[ou - 1];
                for (ot = 0; ot < oup->ntargets; ot++) {
                    if (strcmp(oup->targets[ot].address.text, up->targets[t].address.text) == 0) {
                        oc = &oup->targets[ot];
                        break;
                    }
                }
            }
            if (oc) {
                *tg = old->targets[old->target_base[ou - 1] + ot];
                continue;
            }
            mg_metrics_target_totals(m, u, t, tg->now);
            for (unsigned i = 0; i < MARKS; i++)
                memcpy(tg->mark[i], tg->now, sizeof(tg->now));
        }
    }
    return g;
}

void mg_live_sample(struct mg_live *l, struct mg_config *cfg, struct mg_metrics *m,
                    const struct mg_obs_hooks *hooks, int64_t now_ms)
{
    struct gen *g;
    double secs;

    if (m == NULL)
        return;
    if (l->gen == NULL || l->gen->m != m) {
        g = gen_new(cfg, m, hooks, l->gen);
        gen_free(l->gen);
        l->gen = g;
    }
    g = l->gen;
    /* The timer may fire late on a busy machine; rates use the real interval. */
    secs = l->seq ? (double)(now_ms - l->last_ms) / 1000.0 : 1.0;
    if (!(secs > 0.05))
        secs = 0.05;
    if (l->seq == 0)
        l->started_ms = now_ms;
    l->seq++;
    l->last_ms = now_ms;
    bool mark = l->seq % MARK_EVERY == 0;
    unsigned slot = (unsigned)((l->seq / MARK_EVERY) % MARKS);

    for (size_t r = 0; r <= g->nroutes; r++) {
        struct mg_metrics_route_totals t;
        mg_metrics_route_totals(m, (int)r - 1, &t);
        route_sample(&g->routes[r], &t, l->seq, secs);
    }
    for (size_t u = 0; u < g->nupstreams; u++) {
        struct upstream *us = &g->upstreams[u];
        struct mg_upstream_snapshot s = {0};
        if (hooks && hooks->upstream_stats)
            hooks->upstream_stats(hooks->ud, g->cfg, u, &s);
        us->now[UP_REJECTED] = s.bulkhead_rejected;
        us->now[UP_RETRIES] = mg_metrics_retries_total(m, u);
        if (mark)
            memcpy(us->mark[slot], us->now, sizeof(us->now));
        for (size_t t = 0; t < g->cfg->upstreams[u].ntargets; t++) {
            struct target *tg = &g->targets[g->target_base[u] + t];
            mg_metrics_target_totals(m, u, t, tg->now);
            if (mark)
                memcpy(tg->mark[slot], tg->now, sizeof(tg->now));
        }
    }
}

void mg_live_reload(struct mg_live *l, bool ok, uint64_t version, const char *error, int64_t now_ms)
{
    uv_mutex_lock(&l->journal_mu);
    struct reload_entry *e = &l->journal[l->journal_n % JOURNAL];
    e->at_ms = now_ms;
    e->ok = ok;
    e->version = version;
    snprintf(e->error, sizeof(e->error), "%s", error ? error : "");
    l->journal_n++;
    uv_mutex_unlock(&l->journal_mu);
}

/* ------------------------------------------------------------ rendering */

static void json_num(struct mg_textbuf *b, double v)
{
    if (!isfinite(v))
        mg_textbuf_puts(b, "null");
    else if (v == floor(v) && fabs(v) < 1e15)
        mg_textbuf_printf(b, "%.0f", v);
    else
        mg_textbuf_printf(b, "%.4g", v);
}

static void json_name(struct mg_textbuf *b, const char *key, const char *s)
{
    mg_textbuf_printf(b, "\"%s\":", key);
    mg_textbuf_json_str(b, s, strlen(s));
}

/* The oldest per-minute mark: the counts since it are "the last minute". */
static unsigned oldest_mark(uint64_t seq)
{
    return (unsigned)((seq / MARK_EVERY + 1) % MARKS);
}

static void render_series(struct mg_textbuf *b, const char *key, const struct route *rt,
                          uint64_t from, uint64_t to, int field)
{
    mg_textbuf_printf(b, ",\"%s\":[", key);
    for (uint64_t s = from; s <= to; s++) {
        const struct point *p = &rt->pt[s % MG_LIVE_POINTS];
        double v = field == 0   ? p->rps
                   : field == 1 ? p->eps
                   : field == 2 ? p->p50
                   : field == 3 ? p->p99
                                : p->in_flight;
        if (s != from)
            mg_textbuf_putc(b, ',');
        json_num(b, v);
    }
    mg_textbuf_putc(b, ']');
}

static void render_routes(struct mg_live *l, uint64_t from, struct mg_textbuf *b)
{
    const struct gen *g = l->gen;
    static const char *const series[] = {"rps", "eps", "p50", "p99", "in_flight"};
    unsigned om = oldest_mark(l->seq);

    mg_textbuf_puts(b, ",\"routes\":[");
    for (size_t r = 0; g && r <= g->nroutes; r++) {
        const struct route *rt = &g->routes[r];
        const struct mg_route_conf *rc = r ? &g->cfg->routes[r - 1] : NULL;
        if (r)
            mg_textbuf_putc(b, ',');
        mg_textbuf_putc(b, '{');
        json_name(b, "name", rt->name);
        mg_textbuf_puts(b, ",\"upstream\":");
        if (rc && rc->upstream)
            mg_textbuf_json_str(b, rc->upstream->name, strlen(rc->upstream->name));
        else
            mg_textbuf_puts(b, "null");
        mg_textbuf_printf(b, ",\"requests\":%" PRIu64 ",\"errors\":%" PRIu64, rt->requests,
                          rt->errors);
        for (int f = 0; f < 5; f++)
            render_series(b, series[f], rt, from, l->seq, f);
        mg_textbuf_puts(b, ",\"errors_1m\":{");
        bool first = true;
        for (int e = MG_ERR_NONE + 1; e <= MG_ERR__COUNT; e++) {
            uint64_t d = rt->err_now[e] - rt->err_mark[om][e];
            if (d == 0 || rt->err_now[e] < rt->err_mark[om][e])
                continue;
            mg_textbuf_printf(b, "%s\"%s\":%" PRIu64, first ? "" : ",",
                              e == MG_ERR__COUNT ? "upstream_5xx" : mg_error_name(e), d);
            first = false;
        }
        mg_textbuf_puts(b, "}}");
    }
    mg_textbuf_putc(b, ']');
}

static uint64_t since_mark(uint64_t now, uint64_t mark)
{
    return now >= mark ? now - mark : 0;
}

static void render_targets(const struct mg_live *l, size_t u, const struct mg_obs_hooks *hooks,
                           struct mg_textbuf *b)
{
    const struct gen *g = l->gen;
    const struct mg_upstream_conf *up = &g->cfg->upstreams[u];
    unsigned om = oldest_mark(l->seq);

    mg_textbuf_puts(b, ",\"targets\":[");
    for (size_t t = 0; t < up->ntargets; t++) {
        struct mg_target_snapshot s = {.circuit = MG_CIRCUIT_CLOSED, .health = MG_HEALTH_UNKNOWN};
        const struct target *tg = &g->targets[g->target_base[u] + t];
        uint64_t ok = since_mark(tg->now[MG_OUTCOME_SUCCESS], tg->mark[om][MG_OUTCOME_SUCCESS]);
        uint64_t bad = 0;
        if (hooks && hooks->target_stats)
            hooks->target_stats(hooks->ud, g->cfg, u, t, &s);
        for (unsigned o = MG_OUTCOME_SUCCESS + 1; o < MG_OUTCOME__COUNT; o++)
            bad += since_mark(tg->now[o], tg->mark[om][o]);
        if (t)
            mg_textbuf_putc(b, ',');
        mg_textbuf_putc(b, '{');
        json_name(b, "address", up->targets[t].address.text);
        mg_textbuf_printf(b, ",\"state\":\"%s\",\"retry_in_ms\":%" PRIu64,
                          mg_breaker_state_name(s.circuit),
                          s.circuit == MG_CIRCUIT_CLOSED ? 0 : s.retry_after_ms);
        mg_textbuf_printf(b, ",\"health\":\"%s\",\"in_flight\":%" PRIu32 ",\"ewma_ms\":",
                          s.health == MG_HEALTH_HEALTHY     ? "healthy"
                          : s.health == MG_HEALTH_UNHEALTHY ? "unhealthy"
                                                            : "unknown",
                          s.in_flight);
        json_num(b, s.ewma * 1000.0);
        mg_textbuf_printf(b,
                          ",\"attempts_1m\":%" PRIu64 ",\"failures_1m\":%" PRIu64
                          ",\"consecutive\":%" PRIu32 ",\"failures\":%" PRIu64 "}",
                          ok + bad, bad, s.consecutive, s.failures);
    }
    mg_textbuf_putc(b, ']');
}

static void render_upstreams(const struct mg_live *l, const struct mg_obs_hooks *hooks,
                             struct mg_textbuf *b)
{
    const struct gen *g = l->gen;
    unsigned om = oldest_mark(l->seq);

    mg_textbuf_puts(b, ",\"upstreams\":[");
    for (size_t u = 0; g && u < g->nupstreams; u++) {
        const struct mg_upstream_conf *up = &g->cfg->upstreams[u];
        const struct upstream *us = &g->upstreams[u];
        struct mg_upstream_snapshot s = {0};
        if (hooks && hooks->upstream_stats)
            hooks->upstream_stats(hooks->ud, g->cfg, u, &s);
        if (u)
            mg_textbuf_putc(b, ',');
        mg_textbuf_putc(b, '{');
        json_name(b, "name", up->name);
        mg_textbuf_printf(
            b,
            ",\"bulkhead\":{\"in_use\":%" PRId64 ",\"max\":%" PRIu32 ",\"queued\":%" PRId64
            ",\"max_queue\":%" PRIu32 ",\"rejected\":%" PRIu64 ",\"rejected_1m\":%" PRIu64 "}",
            s.bulkhead_in_use, s.bulkhead_limit, s.bulkhead_queued, up->bulkhead.max_queue,
            s.bulkhead_rejected, since_mark(us->now[UP_REJECTED], us->mark[om][UP_REJECTED]));
        /* The budget as retry.c applies it: ratio of first tries + a floor, over 10 s. */
        double allowed = up->retry.budget_ratio * (double)s.budget_requests +
                         (double)up->retry.budget_min_per_second * 10.0;
        mg_textbuf_printf(b,
                          ",\"retry\":{\"retries_10s\":%" PRIu64 ",\"requests_10s\":%" PRIu64
                          ",\"budget_10s\":",
                          s.budget_retries, s.budget_requests);
        json_num(b, floor(allowed));
        mg_textbuf_printf(b, ",\"retries_1m\":%" PRIu64 "}",
                          since_mark(us->now[UP_RETRIES], us->mark[om][UP_RETRIES]));
        render_targets(l, u, hooks, b);
        mg_textbuf_putc(b, '}');
    }
    mg_textbuf_putc(b, ']');
}

static void render_plugins(const struct mg_live *l, struct mg_textbuf *b)
{
    const struct gen *g = l->gen;
    size_t n = g ? mg_metrics_nplugins(g->m) : 0;
    bool first = true;

    mg_textbuf_puts(b, ",\"plugins\":[");
    for (size_t p = 0; p < n; p++) {
        struct mg_metrics_plugin_totals t;
        mg_metrics_plugin_totals(g->m, p, &t);
        if (!t.registered)
            continue;
        mg_textbuf_puts(b, first ? "{" : ",{");
        first = false;
        json_name(b, "name", t.name);
        mg_textbuf_puts(b, ",\"phases\":{");
        bool pfirst = true;
        for (unsigned ph = 0; ph < MG_PLUGIN_PHASE__COUNT; ph++) {
            if (t.phase[ph].calls == 0 && t.phase[ph].errors == 0)
                continue;
            mg_textbuf_printf(
                b, "%s\"%s\":{\"calls\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"total_ms\":",
                pfirst ? "" : ",", mg_metrics_phase_name(ph), t.phase[ph].calls,
                t.phase[ph].errors);
            json_num(b, (double)t.phase[ph].sum_ns / 1e6);
            mg_textbuf_puts(b, ",\"mean_ms\":");
            json_num(b, (double)t.phase[ph].sum_ns / 1e6 / (double)t.phase[ph].calls);
            mg_textbuf_putc(b, '}');
            pfirst = false;
        }
        mg_textbuf_puts(b, "}}");
    }
    mg_textbuf_putc(b, ']');
}

/* Resident set size in bytes, from /proc/self/statm (Linux); 0 elsewhere. */
static uint64_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void render_process(struct mg_live *l, const struct mg_config *cfg, int64_t now_ms,
                           struct mg_textbuf *b)
{
    const struct gen *g = l->gen;
    uint64_t reloads[2] = {0, 0};
    static const char *const sides[] = {"client", "upstream"};

    mg_textbuf_puts(b, ",\"process\":{");
    json_name(b, "moongate", MG_VERSION);
    mg_textbuf_printf(b, ",\"config_version\":%" PRIu64 ",\"config_loaded_at\":%lld", cfg->version,
                      (long long)cfg->loaded_at);
    mg_textbuf_putc(b, ',');
    json_name(b, "config_path", cfg->path ? cfg->path : "");
    mg_textbuf_printf(b, ",\"uptime_s\":%.0f,\"rss_bytes\":%" PRIu64 ",\"workers\":%u",
                      (double)(uv_hrtime() - l->start_hr) / 1e9, rss_bytes(),
                      g ? g->m->nworkers : 0);
    mg_textbuf_puts(b, ",\"connections\":{");
    for (unsigned s = 0; s < MG_CONN_SIDE__COUNT; s++) {
        int64_t active = g ? mg_metrics_connections(g->m, s, MG_CONN_STATE_ACTIVE) : 0;
        int64_t idle = g ? mg_metrics_connections(g->m, s, MG_CONN_STATE_IDLE) : 0;
        mg_textbuf_printf(b, "%s\"%s\":{\"active\":%" PRId64 ",\"idle\":%" PRId64 "}", s ? "," : "",
                          sides[s], active, idle);
    }
    if (g)
        mg_metrics_reloads(g->m, reloads);
    mg_textbuf_printf(b, "},\"reloads_ok\":%" PRIu64 ",\"reloads_failed\":%" PRIu64, reloads[0],
                      reloads[1]);
    mg_textbuf_puts(b, ",\"reloads\":[");
    uv_mutex_lock(&l->journal_mu);
    unsigned n = l->journal_n < JOURNAL ? l->journal_n : JOURNAL;
    for (unsigned i = 0; i < n; i++) {
        /* newest first */
        const struct reload_entry *e = &l->journal[(l->journal_n - 1 - i) % JOURNAL];
        mg_textbuf_printf(b, "%s{\"at\":%lld,\"ok\":%s,\"version\":%" PRIu64 ",\"error\":",
                          i ? "," : "", (long long)e->at_ms, e->ok ? "true" : "false", e->version);
        if (e->ok)
            mg_textbuf_puts(b, "null");
        else
            mg_textbuf_json_str(b, e->error, strlen(e->error));
        mg_textbuf_putc(b, '}');
    }
    uv_mutex_unlock(&l->journal_mu);
    mg_textbuf_puts(b, "]}");
}

void mg_live_render(struct mg_live *l, const struct mg_config *cfg,
                    const struct mg_obs_hooks *hooks, uint64_t since, int64_t now_ms,
                    struct mg_textbuf *out)
{
    uint64_t kept = l->seq < MG_LIVE_POINTS ? l->seq : MG_LIVE_POINTS;
    uint64_t from = l->seq - kept + 1; /* oldest point kept */

    if (since >= from && since <= l->seq)
        from = since + 1; /* only what the client has not seen */
    mg_textbuf_printf(out,
                      "{\"seq\":%" PRIu64 ",\"from\":%" PRIu64 ",\"interval_ms\":%d,\"now\":%lld"
                      ",\"sampled_at\":%lld,\"history_points\":%d",
                      l->seq, from, MG_LIVE_INTERVAL_MS, (long long)now_ms, (long long)l->last_ms,
                      MG_LIVE_POINTS);
    render_process(l, cfg, now_ms, out);
    render_routes(l, from, out);
    render_upstreams(l, hooks, out);
    render_plugins(l, out);
    mg_textbuf_puts(out, "}\n");
}
