/*
 * Derived snapshots (see derive.h). The derived snapshot's own memory is a
 * short list of malloc'd blocks in cfg->mem; `release` frees them, the router,
 * and drops the base reference.
 */
#include "discovery/derive.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/log.h"
#include "router.h"

struct derived_mem {
    void **blocks;
    size_t n, cap;
};

static void *own(struct derived_mem *m, size_t size)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->blocks = realloc(m->blocks, m->cap * sizeof *m->blocks);
        if (!m->blocks)
            mg_fatal("out of memory (derived config)");
    }
    void *p = calloc(1, size ? size : 1);
    if (!p)
        mg_fatal("out of memory (derived config)");
    return m->blocks[m->n++] = p;
}

static void release(struct mg_config *cfg)
{
    struct derived_mem *m = cfg->mem;
    mg_router_free(cfg->router);
    for (size_t i = 0; i < m->n; i++)
        free(m->blocks[i]);
    free(m->blocks);
    free(m);
    mg_config_unref(cfg->base);
    free(cfg);
}

static size_t count_targets(const struct mg_upstream_conf *bu, size_t u,
                            const struct mg_derived_source *src, size_t n)
{
    size_t cnt = 0;
    for (size_t i = 0; i < bu->ntargets; i++)
        cnt += bu->targets[i].host == NULL;
    for (size_t i = 0; i < n; i++)
        if (src[i].upstream == u)
            cnt += src[i].set->n;
    return cnt;
}

static bool listed(const struct mg_upstream_conf *up, const char *text)
{
    for (size_t i = 0; i < up->ntargets; i++)
        if (strcmp(up->targets[i].address.text, text) == 0)
            return true;
    return false;
}

static void fill_targets(struct derived_mem *m, struct mg_upstream_conf *up, size_t u,
                         const struct mg_derived_source *src, size_t n)
{
    const struct mg_target_conf *bt = up->targets;
    size_t nbt = up->ntargets;
    up->targets = own(m, count_targets(up, u, src, n) * sizeof *up->targets);
    up->ntargets = 0;
    if (up->discovery.type == MG_DISCOVERY_NONE) /* discovery replaces literal targets */
        for (size_t i = 0; i < nbt; i++)
            if (bt[i].host == NULL)
                up->targets[up->ntargets++] = bt[i];
    for (size_t s = 0; s < n; s++) {
        if (src[s].upstream != u)
            continue;
        for (size_t i = 0; i < src[s].set->n; i++) {
            const struct mg_tset_entry *e = &src[s].set->v[i];
            if (listed(up, e->text))
                continue;
            struct mg_target_conf *t = &up->targets[up->ntargets++];
            char *text = own(m, strlen(e->text) + 1);
            memcpy(text, e->text, strlen(e->text) + 1);
            t->address = (struct mg_address){.text = text, .addr = e->addr, .addrlen = e->addrlen};
            t->weight = e->weight;
            t->source = src[s].name;
            if (e->host[0]) {
                char *host = own(m, strlen(e->host) + 1);
                memcpy(host, e->host, strlen(e->host) + 1);
                t->name = host;
            }
        }
    }
}

struct mg_config *mg_discovery_derive(struct mg_config *base, const struct mg_derived_source *src,
                                      size_t n)
{
    struct mg_config *cfg = malloc(sizeof *cfg);
    struct derived_mem *m = calloc(1, sizeof *m);
    if (!cfg || !m)
        mg_fatal("out of memory (derived config)");
    memcpy(cfg, base, sizeof *cfg);
    atomic_init(&cfg->refs, 1);
    mg_config_ref(base);
    cfg->base = base;
    cfg->release = release;
    cfg->mem = m;
    cfg->upstreams = own(m, base->nupstreams * sizeof *cfg->upstreams);
    for (size_t u = 0; u < base->nupstreams; u++) {
        cfg->upstreams[u] = base->upstreams[u];
        if (base->upstreams[u].dynamic)
            fill_targets(m, &cfg->upstreams[u], u, src, n);
    }
    cfg->routes = own(m, base->nroutes * sizeof *cfg->routes);
    for (size_t r = 0; r < base->nroutes; r++) {
        cfg->routes[r] = base->routes[r];
        cfg->routes[r].upstream = &cfg->upstreams[base->routes[r].upstream->index];
    }
    for (size_t s = 0; s < n; s++)
        if (src[s].upstream == MG_DERIVED_REDIS && src[s].set->n > 0) {
            cfg->redis.address.addr = src[s].set->v[0].addr;
            cfg->redis.address.addrlen = src[s].set->v[0].addrlen;
        }
    cfg->router = mg_router_build(cfg);
    if (!cfg->router)
        mg_fatal("out of memory (derived router)");
    return cfg;
}
