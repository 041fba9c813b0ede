/*
 * The resolver of service discovery (see resolver.h).
 *
 * Each DNS name to follow is a `source`: a host-name target (one address
 * lookup) or an upstream's SRV name (an SRV query, then one address lookup per
 * SRV target of the best priority). A source runs one pass at a time; the pass
 * fills `scratch`, and its end (finish) compares it with the last good set,
 * keeps the better of the two, and arms the source's timer for the next pass.
 *
 * Ownership: the resolver owns its sources, their sets and its handles (a
 * timer per source, the publish timer, the c-ares channel in dns.c); it holds
 * one reference on the base snapshot. It is bound to one loop at a time: a
 * private one while mg_discovery_load resolves, then the main thread's.
 */
#include "discovery/resolver.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/log.h"
#include "discovery/derive.h"
#include "discovery/dns.h"
#include "discovery/targetset.h"
#include "resilience/registry.h"

struct source {
    struct mg_discovery *d;
    size_t upstream;  /* index into base->upstreams */
    const char *name; /* host name or SRV name, in base memory */
    bool srv;
    bool required; /* discovery.required */
    uint16_t port; /* host-name target: its port and weight */
    uint32_t weight;
    struct mg_tset good;           /* the last good set (what the targets are) */
    bool resolved;                 /* good came from DNS (here or inherited) */
    unsigned failures;             /* consecutive failed passes */
    char last_error[96];           /* of the last failed pass */
    uint64_t next_ms;              /* delay to the next pass, from the last one's end */
    unsigned load_ok, load_failed; /* passes of mg_discovery_load, not counted yet */
    uv_timer_t timer;
    /* The pass in flight. */
    bool busy;
    struct mg_tset scratch;
    unsigned pending;  /* SRV: address lookups outstanding */
    unsigned answered; /* SRV: address lookups that succeeded */
    uint32_t min_ttl;  /* smallest TTL seen, s (UINT32_MAX: none) */
    int status;        /* first failure of the pass, or ARES_SUCCESS */
};

struct mg_discovery {
    struct mg_config *base; /* one reference */
    struct source *src;
    size_t nsrc;
    uv_loop_t *loop; /* bound to, or NULL */
    struct mg_dns *dns;
    uv_timer_t publish; /* coalesces changes found in one loop turn */
    unsigned open_handles;
    unsigned passes; /* passes in flight */
    bool closing;
    bool free_when_closed;
    bool changed;
    mg_discovery_cb *on_change;
    void *data;
};

/* One address lookup of an SRV target. */
struct srv_lookup {
    struct source *s;
    uint16_t port;
    uint32_t weight;
    char host[256]; /* the SRV target */
};

bool mg_discovery_needed(const struct mg_config *cfg)
{
    if (cfg->redis.enabled && !cfg->redis.sentinel.enabled && cfg->redis.host)
        return true;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        if (cfg->upstreams[u].dynamic)
            return true;
    return false;
}

static const char *what(const struct source *s)
{
    return s->srv ? "SRV name" : "host name";
}

/* The upstream a source serves, or "redis" for redis.address. */
static const char *owner(const struct source *s)
{
    return s->upstream == MG_DERIVED_REDIS ? "redis" : s->d->base->upstreams[s->upstream].name;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The registry is sized for the workers when they start: the passes of
 * mg_discovery_load are counted by mg_discovery_start. */
static void count(struct source *s, bool ok)
{
    if (!s->d->on_change) {
        s->load_ok += ok;
        s->load_failed += !ok;
        return;
    }
    if (s->upstream == MG_DERIVED_REDIS)
        return; /* logged; the store's own metrics show its state */
    struct mg_upstream_stats *us = mg_registry_upstream(owner(s));
    atomic_fetch_add_explicit(ok ? &us->dns_ok : &us->dns_failed, 1, memory_order_relaxed);
    atomic_store_explicit(&us->dns_last_ms, now_ms(), memory_order_relaxed);
    atomic_store_explicit(&us->dns_last_ok, ok, memory_order_relaxed);
}

static void start_pass(struct source *s);

static void on_timer(uv_timer_t *t)
{
    start_pass(t->data);
}

static void on_publish(uv_timer_t *t)
{
    struct mg_discovery *d = t->data;
    if (!d->changed || d->closing)
        return;
    d->changed = false;
    if (d->on_change)
        d->on_change(d, d->data);
}

static void log_change(const struct source *s, const struct mg_tset *from, const struct mg_tset *to)
{
    size_t added, removed;
    mg_tset_diff(from, to, &added, &removed);
    mg_info("upstream %s: %s %s now gives %zu target(s) (+%zu -%zu)", owner(s), what(s), s->name,
            to->n, added, removed);
}

/* The end of a pass: keep the new set if the pass succeeded, else the last
 * good one; schedule the next pass. */
static void finish(struct source *s)
{
    struct mg_discovery *d = s->d;
    const struct mg_resolver_conf *rc = &d->base->resolver;
    bool ok = s->status == ARES_SUCCESS && s->scratch.n > 0;
    uint64_t next;
    s->busy = false;
    d->passes--;
    if (d->closing) {
        mg_tset_clear(&s->scratch);
        return;
    }
    count(s, ok);
    if (ok) {
        mg_tset_sort(&s->scratch);
        if (!s->resolved || !mg_tset_equal(&s->good, &s->scratch)) {
            log_change(s, &s->good, &s->scratch);
            d->changed = true;
        }
        mg_tset_move(&s->good, &s->scratch);
        s->resolved = true;
        s->failures = 0;
        next = mg_tset_clamp_ttl_ms(s->min_ttl == UINT32_MAX ? 0 : s->min_ttl, rc->min_ttl_ms,
                                    rc->max_ttl_ms);
    } else {
        mg_tset_clear(&s->scratch);
        snprintf(s->last_error, sizeof s->last_error, "%s",
                 s->status == ARES_SUCCESS ? "no address" : ares_strerror(s->status));
        s->failures++;
        next = mg_tset_retry_ms(s->failures, rc->min_ttl_ms, rc->max_ttl_ms);
        /* Warned once per outage (the load reports its own); retries at debug. */
        if (d->on_change)
            MG_LOG(s->failures == 1 ? MG_LOG_WARN : MG_LOG_DEBUG,
                   "upstream %s: %s %s does not resolve (%s): %s, retry in %" PRIu64 " ms",
                   owner(s), what(s), s->name, s->last_error,
                   s->good.n ? "keeping the last good targets" : "no targets", next);
    }
    s->next_ms = next;
    if (d->on_change) {
        uv_timer_start(&s->timer, on_timer, next, 0);
        if (d->changed)
            uv_timer_start(&d->publish, on_publish, 0, 0);
    }
}

static void note_ttls(struct source *s, const struct ares_addrinfo *ai)
{
    for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next)
        if (n->ai_ttl >= 0 && (uint32_t)n->ai_ttl < s->min_ttl)
            s->min_ttl = (uint32_t)n->ai_ttl;
}

static void add_addresses(struct source *s, const struct ares_addrinfo *ai, const char *host,
                          uint16_t port, uint32_t weight)
{
    for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next)
        mg_tset_add(&s->scratch, n->ai_addr, port, weight, host);
    note_ttls(s, ai);
}

static void on_host(void *arg, int status, struct ares_addrinfo *ai)
{
    struct source *s = arg;
    s->status = status;
    if (ai) {
        if (!s->d->closing)
            add_addresses(s, ai, s->name, s->port, s->weight);
        ares_freeaddrinfo(ai);
    }
    finish(s);
}

static void on_srv_target(void *arg, int status, struct ares_addrinfo *ai)
{
    struct srv_lookup *l = arg;
    struct source *s = l->s;
    if (ai) {
        if (!s->d->closing)
            add_addresses(s, ai, l->host, l->port, l->weight);
        ares_freeaddrinfo(ai);
        s->answered++;
    } else if (s->status == ARES_SUCCESS) {
        s->status = status; /* remembered; the pass still counts what did resolve */
    }
    free(l);
    if (--s->pending == 0) {
        if (s->answered > 0)
            s->status = ARES_SUCCESS; /* a partial answer beats none */
        finish(s);
    }
}

/* RFC 2782: the lowest priority value is the one to use; the others are
 * backups that take over only when it is gone from DNS. */
static void on_srv(void *arg, int status, struct ares_srv_reply *srv)
{
    struct source *s = arg;
    unsigned short best = 0xffff;
    s->status = status;
    if (!srv || s->d->closing) {
        if (srv)
            ares_free_data(srv);
        if (status == ARES_SUCCESS)
            s->status = ARES_ENODATA;
        finish(s);
        return;
    }
    for (struct ares_srv_reply *r = srv; r; r = r->next)
        if (r->port != 0 && r->priority < best)
            best = r->priority;
    s->pending = 1; /* held while the lookups start: one may answer at once */
    for (struct ares_srv_reply *r = srv; r; r = r->next) {
        if (r->port == 0 || r->priority != best || strcmp(r->host, ".") == 0)
            continue;
        struct srv_lookup *l = malloc(sizeof *l);
        if (!l)
            mg_fatal("out of memory (srv lookup)");
        *l = (struct srv_lookup){s, r->port, r->weight ? r->weight : 1, ""};
        snprintf(l->host, sizeof l->host, "%s", r->host);
        s->pending++;
        mg_dns_lookup(s->d->dns, r->host, s->d->base->resolver.family, on_srv_target, l);
    }
    ares_free_data(srv);
    if (--s->pending == 0) {
        if (s->answered > 0)
            s->status = ARES_SUCCESS;
        else if (s->status == ARES_SUCCESS)
            s->status = ARES_ENODATA; /* no usable record */
        finish(s);
    }
}

static void start_pass(struct source *s)
{
    struct mg_discovery *d = s->d;
    if (s->busy || d->closing || !d->dns)
        return;
    s->busy = true;
    d->passes++;
    s->status = ARES_SUCCESS;
    s->min_ttl = UINT32_MAX;
    s->answered = 0;
    s->pending = 0;
    if (s->srv)
        mg_dns_srv(d->dns, s->name, on_srv, s);
    else
        mg_dns_lookup(d->dns, s->name, d->base->resolver.family, on_host, s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mg_discovery *d = h->data;
    if (--d->open_handles == 0 && d->free_when_closed) {
        for (size_t i = 0; i < d->nsrc; i++) {
            mg_tset_clear(&d->src[i].good);
            mg_tset_clear(&d->src[i].scratch);
        }
        free(d->src);
        mg_config_unref(d->base);
        free(d);
    }
}

static void on_dns_closed(void *data)
{
    on_handle_closed(data);
}

static int bind_loop(struct mg_discovery *d, uv_loop_t *loop, char *err, size_t errlen)
{
    d->dns = mg_dns_open(loop, &d->base->resolver, err, errlen);
    if (!d->dns)
        return -1;
    d->loop = loop;
    d->closing = false;
    d->open_handles = 2; /* the publish timer and the channel */
    uv_timer_init(loop, &d->publish);
    d->publish.data = d;
    for (size_t i = 0; i < d->nsrc; i++) {
        uv_timer_init(loop, &d->src[i].timer);
        d->src[i].timer.data = &d->src[i];
        d->open_handles++;
    }
    return 0;
}

/* Cancels the passes in flight and closes the handles; frees d afterwards
 * when free_when_closed. */
static void unbind_loop(struct mg_discovery *d)
{
    if (!d->loop)
        return;
    d->closing = true;
    /* The channel first: cancelled lookups call back (and finish) in here. */
    mg_dns_close(d->dns, on_dns_closed, &d->publish);
    d->dns = NULL;
    for (size_t i = 0; i < d->nsrc; i++) {
        d->src[i].timer.data = d;
        uv_close((uv_handle_t *)&d->src[i].timer, on_handle_closed);
    }
    uv_close((uv_handle_t *)&d->publish, on_handle_closed);
    d->loop = NULL;
}

static void add_source(struct mg_discovery *d, size_t u, const char *name, bool srv, uint16_t port,
                       uint32_t weight, bool required)
{
    d->src = realloc(d->src, (d->nsrc + 1) * sizeof *d->src);
    if (!d->src)
        mg_fatal("out of memory (discovery)");
    d->src[d->nsrc++] = (struct source){.upstream = u,
                                        .name = name,
                                        .srv = srv,
                                        .port = port,
                                        .weight = weight,
                                        .required = required};
}

static struct mg_discovery *discovery_new(struct mg_config *base)
{
    struct mg_discovery *d = calloc(1, sizeof *d);
    if (!d)
        mg_fatal("out of memory (discovery)");
    d->base = base;
    for (size_t u = 0; u < base->nupstreams; u++) {
        const struct mg_upstream_conf *up = &base->upstreams[u];
        if (up->discovery.type == MG_DISCOVERY_SRV) {
            add_source(d, u, up->discovery.name, true, 0, 0, up->discovery.required);
            continue; /* it replaces the targets */
        }
        for (size_t t = 0; t < up->ntargets; t++)
            if (up->targets[t].host)
                add_source(d, u, up->targets[t].host, false, up->targets[t].port,
                           up->targets[t].weight, false);
    }
    /* redis.address written as a name: its first address, followed like a
     * target's (it must resolve at load, as it had to before discovery). */
    if (base->redis.enabled && !base->redis.sentinel.enabled && base->redis.host)
        add_source(d, MG_DERIVED_REDIS, base->redis.host, false, base->redis.port, 1, true);
    for (size_t i = 0; i < d->nsrc; i++)
        d->src[i].d = d;
    return d;
}

/* What the previous resolver had for the same upstream and name stays
 * until DNS says otherwise (a reload while DNS is down keeps the targets). */
static void inherit(struct mg_discovery *d, const struct mg_discovery *prev)
{
    for (size_t i = 0; prev && i < d->nsrc; i++) {
        struct source *s = &d->src[i];
        const char *up = owner(s);
        for (size_t j = 0; j < prev->nsrc; j++) {
            const struct source *p = &prev->src[j];
            if (!p->resolved || p->srv != s->srv || p->port != s->port || p->weight != s->weight ||
                strcmp(p->name, s->name) != 0 || strcmp(owner(p), up) != 0)
                continue;
            s->good.v = malloc(p->good.n * sizeof *p->good.v);
            if (!s->good.v)
                mg_fatal("out of memory (discovery)");
            memcpy(s->good.v, p->good.v, p->good.n * sizeof *p->good.v);
            s->good.n = s->good.cap = p->good.n;
            s->resolved = true;
            break;
        }
    }
}

/* Every name once, on a private loop, until each pass has ended (the
 * channel's own timeout bounds it). */
static int resolve_all(struct mg_discovery *d, char *err, size_t errlen)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        snprintf(err, errlen, "discovery: cannot create a loop");
        return -1;
    }
    int rc = bind_loop(d, &loop, err, errlen);
    if (rc == 0) {
        for (size_t i = 0; i < d->nsrc; i++)
            start_pass(&d->src[i]);
        while (d->passes > 0)
            uv_run(&loop, UV_RUN_ONCE);
        unbind_loop(d);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}

static int report(struct mg_discovery *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->nsrc; i++) {
        struct source *s = &d->src[i];
        const char *up = owner(s);
        if (s->failures == 0)
            continue;
        if (s->required && !s->resolved) {
            if (s->upstream == MG_DERIVED_REDIS)
                snprintf(err, errlen, "%s: redis.address: cannot resolve '%s': %s", d->base->path,
                         s->name, s->last_error);
            else
                snprintf(err, errlen,
                         "%s: upstreams.%s.discovery: %s %s does not resolve (%s) and required is "
                         "true",
                         d->base->path, up, what(s), s->name, s->last_error);
            return -1;
        }
        mg_warn("%s: upstream %s: %s %s does not resolve (%s): %s", d->base->path, up, what(s),
                s->name, s->last_error,
                s->resolved ? "keeping the targets it had" : "503 no_targets until it does");
    }
    return 0;
}

static struct mg_derived_source *sources_view(struct mg_discovery *d)
{
    struct mg_derived_source *v = calloc(d->nsrc ? d->nsrc : 1, sizeof *v);
    if (!v)
        mg_fatal("out of memory (discovery)");
    for (size_t i = 0; i < d->nsrc; i++)
        v[i] = (struct mg_derived_source){d->src[i].upstream, d->src[i].name, &d->src[i].good};
    return v;
}

void mg_discovery_retry_publish(struct mg_discovery *d, uint64_t delay_ms)
{
    if (!d->loop || d->closing)
        return;
    d->changed = true;
    uv_timer_start(&d->publish, on_publish, delay_ms, 0);
}

struct mg_config *mg_discovery_snapshot(struct mg_discovery *d)
{
    struct mg_derived_source *v = sources_view(d);
    struct mg_config *cfg = mg_discovery_derive(d->base, v, d->nsrc);
    free(v);
    for (size_t u = 0; d->on_change && u < cfg->nupstreams; u++)
        if (cfg->upstreams[u].dynamic)
            atomic_store_explicit(&mg_registry_upstream(cfg->upstreams[u].name)->dns_targets,
                                  (uint32_t)cfg->upstreams[u].ntargets, memory_order_relaxed);
    return cfg;
}

struct mg_config *mg_discovery_load(struct mg_config *base, struct mg_discovery *prev,
                                    struct mg_discovery **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!mg_discovery_needed(base))
        return base;
    struct mg_discovery *d = discovery_new(base);
    inherit(d, prev);
    if (resolve_all(d, err, errlen) < 0 || report(d, err, errlen) < 0) {
        mg_discovery_free(d);
        return NULL;
    }
    *out = d;
    return mg_discovery_snapshot(d);
}

void mg_discovery_start(struct mg_discovery *d, uv_loop_t *loop, mg_discovery_cb *on_change,
                        void *data)
{
    char err[256];
    if (bind_loop(d, loop, err, sizeof err) < 0) {
        mg_error("service discovery stopped: %s", err);
        return;
    }
    d->on_change = on_change;
    d->data = data;
    for (size_t i = 0; i < d->nsrc; i++) {
        struct source *s = &d->src[i];
        for (; s->load_ok; s->load_ok--)
            count(s, true);
        for (; s->load_failed; s->load_failed--)
            count(s, false);
    }
    mg_config_unref(mg_discovery_snapshot(d)); /* moongate_upstream_targets now */
    /* The passes of mg_discovery_load said when to ask again. */
    for (size_t i = 0; i < d->nsrc; i++)
        uv_timer_start(&d->src[i].timer, on_timer, d->src[i].next_ms, 0);
}

void mg_discovery_free(struct mg_discovery *d)
{
    if (!d)
        return;
    if (d->loop) {
        d->free_when_closed = true;
        unbind_loop(d);
        return;
    }
    d->open_handles = 1;
    d->free_when_closed = true;
    on_handle_closed(&(uv_handle_t){.data = d});
}
