/*
 * Metrics store, generations and the Prometheus renderer (see metrics.h).
 *
 * Ownership: the store owns its entities; an entity is referenced by every
 * generation that names it (entity->refs, under store->mu) and is freed with
 * the last one. A generation owns its pointer arrays (one block, m->mem) and
 * holds one reference on its config snapshot and one on the store.
 *
 * Invariants: an entity's cell arrays never move while any generation names
 * it, so worker shards can keep raw pointers; each per-worker cell array is
 * 64-byte aligned and padded to a multiple of 64 bytes, so two workers never
 * write the same cache line. Gauges are stored as uint64_t that wrap and are
 * read as int64_t after summing, so a shard may go "negative" on its own.
 *
 * Render cost is proportional to (entities x cells x workers); it runs on the
 * admin thread and never takes a lock that a worker could wait for.
 */
#include "obs/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config/config.h"
#include "core/log.h"
#include "obs/textbuf.h"

#include "obs/metrics-int.h"

unsigned mg_metrics__nbounds;
uint64_t mg_metrics__bounds_ns[MG_METRICS_NBOUNDS];
char mg_metrics__bounds_text[MG_METRICS_NBUCKETS][24];

/* Sets the process-wide bounds from the config (seconds, increasing, checked
 * at load). Before any worker counts: mg_metrics_new runs on the main thread
 * before the workers start. */
static void set_bounds(const struct mg_config *cfg)
{
    unsigned n = 0;

    for (size_t i = 0; cfg && i < cfg->nduration_buckets && n < MG_METRICS_NBOUNDS; i++, n++) {
        mg_metrics__bounds_ns[n] = mg_metrics_ns(cfg->duration_buckets[i]);
        snprintf(mg_metrics__bounds_text[n], sizeof(mg_metrics__bounds_text[n]), "%.17g",
                 cfg->duration_buckets[i]);
        /* %.17g of 0.1 is 0.10000000000000001: use the shortest text that
         * reads back as the same double, without an exponent when %g would
         * write one for a short number ("1e+01" for 10). */
        for (int prec = 1; prec <= 17; prec++) {
            char t[24];
            snprintf(t, sizeof(t), "%.*g", prec, cfg->duration_buckets[i]);
            if (strtod(t, NULL) == cfg->duration_buckets[i] && strchr(t, 'e') == NULL) {
                memcpy(mg_metrics__bounds_text[n], t, sizeof(t));
                break;
            }
        }
    }
    snprintf(mg_metrics__bounds_text[n], sizeof(mg_metrics__bounds_text[n]), "+Inf");
    mg_metrics__nbounds = n;
}

unsigned mg_metrics_bounds(const uint64_t **bounds_ns)
{
    *bounds_ns = mg_metrics__bounds_ns;
    return mg_metrics__nbounds;
}

const char *const mg_metrics__outcome_names[MG_OUTCOME__COUNT] = {"success", "failure", "timeout",
                                                                  "connect_failure", "reset"};
const char *const mg_metrics__idem_names[MG_IDEM_RESULT__COUNT] = {
    "new",         "replayed",    "conflict",    "mismatch",
    "key_missing", "key_invalid", "store_error", "replay_unavailable"};
const char *const mg_metrics__phase_names[MG_PLUGIN_PHASE__COUNT] = {"init", "access", "balance",
                                                                     "response", "log"};
const char *const mg_metrics__tls_hs_names[MG_TLS_HS__COUNT] = {"ok", "failed", "timeout",
                                                                "resumed"};
const char *const mg_metrics__side_names[MG_CONN_SIDE__COUNT] = {"client", "upstream"};
const char *const mg_metrics__state_names[MG_CONN_STATE__COUNT] = {"active", "idle"};

const char *mg_metrics_outcome_name(enum mg_upstream_outcome o)
{
    return (unsigned)o < MG_OUTCOME__COUNT ? mg_metrics__outcome_names[o] : "?";
}

const char *mg_metrics_idem_result_name(enum mg_idem_metric r)
{
    return (unsigned)r < MG_IDEM_RESULT__COUNT ? mg_metrics__idem_names[r] : "?";
}

const char *mg_metrics_phase_name(enum mg_plugin_phase p)
{
    return (unsigned)p < MG_PLUGIN_PHASE__COUNT ? mg_metrics__phase_names[p] : "?";
}

void *mg_metrics__xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        mg_fatal("out of memory (metrics)");
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");

    if (p == NULL)
        mg_fatal("out of memory (metrics)");
    return p;
}

/* ------------------------------------------------------------ entities */

static uint32_t key_hash(enum entity_kind kind, const char *name, const char *name2)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;

    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* separator no name byte can produce */
    for (const char *s = name2 ? name2 : ""; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static size_t kind_cells(enum entity_kind kind)
{
    switch (kind) {
    case ENT_GLOBAL:
        return MG_MG_CELLS;
    case ENT_ROUTE:
        return MG_MR_CELLS;
    case ENT_UPSTREAM:
        return MG_MU_CELLS;
    case ENT_TARGET:
        return MG_MT_CELLS;
    case ENT_PLUGIN:
        return MG_MP_CELLS;
    case ENT_LISTENER:
        return MG_ML_CELLS;
    }
    return 0;
}

static void entity_free(struct mg_metrics_entity *e, unsigned nworkers)
{
    for (unsigned w = 0; w < nworkers; w++)
        free(e->cells[w]);
    free(e->name);
    free(e->name2);
    free(e);
}

/* Finds or creates the entity (kind, name, name2) and takes a reference on it.
 * Caller holds st->mu. */
static struct mg_metrics_entity *acquire(struct mg_metrics_store *st, enum entity_kind kind,
                                         const char *name, const char *name2)
{
    uint32_t h = key_hash(kind, name, name2);
    struct mg_metrics_entity *e;

    for (e = st->entities; e != NULL; e = e->next) {
        if (e->hash == h && e->kind == kind && strcmp(e->name, name) == 0 &&
            strcmp(e->name2 ? e->name2 : "", name2 ? name2 : "") == 0) {
            e->refs++;
            return e;
        }
    }
    e = mg_metrics__xcalloc(1, sizeof(*e) + st->nworkers * sizeof(e->cells[0]));
    e->kind = kind;
    e->refs = 1;
    atomic_init(&e->registered, false);
    e->hash = h;
    e->name = xstrdup(name);
    e->name2 = name2 ? xstrdup(name2) : NULL;
    e->ncells = kind_cells(kind);
    size_t bytes = (e->ncells * sizeof(uint64_t) + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    for (unsigned w = 0; w < st->nworkers; w++) {
        e->cells[w] = aligned_alloc(CACHE_LINE, bytes);
        if (e->cells[w] == NULL)
            mg_fatal("out of memory (metrics cells)");
        for (size_t i = 0; i < e->ncells; i++)
            atomic_init(&e->cells[w][i], 0);
    }
    e->next = st->entities;
    st->entities = e;
    return e;
}

/* Drops a reference; caller holds st->mu. */
static void release(struct mg_metrics_store *st, struct mg_metrics_entity *e)
{
    if (--e->refs > 0)
        return;
    for (struct mg_metrics_entity **pp = &st->entities; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    entity_free(e, st->nworkers);
}

/* --------------------------------------------------------- generations */

/* Distinct plugin and balancer names of cfg, in order of first mention. Returns
 * the count; names[] (capacity `cap`) points into cfg. */
static size_t collect_plugins(const struct mg_config *cfg, const char **names, size_t cap)
{
    size_t n = 0;

    for (size_t r = 0; r < cfg->nroutes; r++) {
        const struct mg_route_conf *rt = &cfg->routes[r];
        for (size_t p = 0; p <= rt->nplugins; p++) {
            const char *name = p < rt->nplugins ? rt->plugins[p].name : rt->balancer.name;
            size_t i;
            if (name == NULL)
                continue;
            for (i = 0; i < n && strcmp(names[i], name) != 0; i++)
                ;
            if (i == n && n < cap)
                names[n++] = name;
        }
    }
    return n;
}

static size_t max_plugins(const struct mg_config *cfg)
{
    size_t n = 0;

    for (size_t r = 0; r < cfg->nroutes; r++)
        n += cfg->routes[r].nplugins + 1;
    return n;
}

/* Lays out the generation's arrays in one block. */
static void alloc_arrays(struct mg_metrics *m, size_t maxplug)
{
    size_t nw = m->nworkers, nr = m->nroutes + 1, nu = m->nupstreams, nt = m->ntargets;
    size_t nl = m->nlisteners;
    size_t ptrs = nr + nu + nt + maxplug + nl;         /* entity pointers */
    size_t cells = nw * (nr + nu + nt + maxplug + nl); /* shard cell pointers */
    char *p =
        mg_metrics__xcalloc(1, nw * sizeof(struct mg_metrics_shard) +
                                   (ptrs + cells) * sizeof(void *) + nu * sizeof(size_t) + nt);

    m->mem = p;
    m->shards = (struct mg_metrics_shard *)p;
    p += nw * sizeof(struct mg_metrics_shard);
    m->routes = (struct mg_metrics_entity **)p;
    p += nr * sizeof(void *);
    m->upstreams = (struct mg_metrics_entity **)p;
    p += nu * sizeof(void *);
    m->targets = (struct mg_metrics_entity **)p;
    p += nt * sizeof(void *);
    m->plugins = (struct mg_metrics_entity **)p;
    p += maxplug * sizeof(void *);
    m->listeners = (struct mg_metrics_entity **)p;
    p += nl * sizeof(void *);
    for (size_t w = 0; w < nw; w++) {
        struct mg_metrics_shard *s = &m->shards[w];
        s->route = (_Atomic uint64_t **)p;
        p += nr * sizeof(void *);
        s->upstream = (_Atomic uint64_t **)p;
        p += nu * sizeof(void *);
        s->target = (_Atomic uint64_t **)p;
        p += nt * sizeof(void *);
        s->plugin = (_Atomic uint64_t **)p;
        p += maxplug * sizeof(void *);
        s->listener = (_Atomic uint64_t **)p;
        p += nl * sizeof(void *);
    }
    m->target_base = (size_t *)p;
    p += nu * sizeof(size_t);
    m->target_dup = (unsigned char *)p;
}

/* Resolves every entity of cfg in the store (creating the new ones). */
static void bind_entities(struct mg_metrics *m, const char **plugin_names)
{
    struct mg_metrics_store *st = m->store;
    const struct mg_config *cfg = m->cfg;
    size_t t = 0;

    uv_mutex_lock(&st->mu);
    st->ngenerations++;
    m->global = acquire(st, ENT_GLOBAL, "", NULL);
    m->routes[0] = acquire(st, ENT_ROUTE, "", NULL);
    for (size_t r = 0; r < cfg->nroutes; r++)
        m->routes[r + 1] = acquire(st, ENT_ROUTE, cfg->routes[r].name, NULL);
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct mg_upstream_conf *up = &cfg->upstreams[u];
        m->upstreams[u] = acquire(st, ENT_UPSTREAM, up->name, NULL);
        m->target_base[u] = t;
        for (size_t i = 0; i < up->ntargets; i++, t++) {
            m->targets[t] = acquire(st, ENT_TARGET, up->name, up->targets[i].address.text);
            for (size_t j = m->target_base[u]; j < t; j++)
                if (m->targets[j] == m->targets[t])
                    m->target_dup[t] = 1; /* listed twice: render it once */
        }
    }
    for (size_t p = 0; p < m->nplugins; p++)
        m->plugins[p] = acquire(st, ENT_PLUGIN, plugin_names[p], NULL);
    for (size_t l = 0; l < m->nlisteners; l++)
        m->listeners[l] = acquire(st, ENT_LISTENER, cfg->listen[l].address.text, NULL);
    uv_mutex_unlock(&st->mu);

    for (unsigned w = 0; w < m->nworkers; w++) {
        struct mg_metrics_shard *s = &m->shards[w];
        s->global = m->global->cells[w];
        for (size_t r = 0; r <= m->nroutes; r++)
            s->route[r] = m->routes[r]->cells[w];
        for (size_t u = 0; u < m->nupstreams; u++)
            s->upstream[u] = m->upstreams[u]->cells[w];
        for (size_t i = 0; i < m->ntargets; i++)
            s->target[i] = m->targets[i]->cells[w];
        for (size_t p = 0; p < m->nplugins; p++)
            s->plugin[p] = m->plugins[p]->cells[w];
        for (size_t l = 0; l < m->nlisteners; l++)
            s->listener[l] = m->listeners[l]->cells[w];
        s->target_base = m->target_base;
    }
}

static struct mg_metrics *generation_new(struct mg_metrics_store *st, struct mg_config *cfg)
{
    struct mg_metrics *m = mg_metrics__xcalloc(1, sizeof(*m));
    size_t maxplug = max_plugins(cfg);
    const char **plugin_names = mg_metrics__xcalloc(maxplug, sizeof(char *));

    atomic_init(&m->refs, 1);
    m->nworkers = st->nworkers;
    m->store = st;
    m->cfg = cfg;
    mg_config_ref(cfg);
    m->nroutes = cfg->nroutes;
    m->nupstreams = cfg->nupstreams;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        m->ntargets += cfg->upstreams[u].ntargets;
    m->nplugins = collect_plugins(cfg, plugin_names, maxplug);
    m->nlisteners = cfg->nlisten;
    alloc_arrays(m, maxplug);
    bind_entities(m, plugin_names);
    free(plugin_names);
    return m;
}

struct mg_metrics *mg_metrics_new(struct mg_config *cfg, unsigned nworkers)
{
    struct mg_metrics_store *st = mg_metrics__xcalloc(1, sizeof(*st));

    if (uv_mutex_init(&st->mu) != 0)
        mg_fatal("uv_mutex_init failed (metrics)");
    st->nworkers = nworkers ? nworkers : 1;
    set_bounds(cfg);
    atomic_init(&st->reloads[0], 0);
    atomic_init(&st->reloads[1], 0);
    return generation_new(st, cfg);
}

struct mg_metrics *mg_metrics_next(struct mg_metrics *prev, struct mg_config *cfg)
{
    bool same = cfg->nduration_buckets == mg_metrics__nbounds;

    for (size_t i = 0; same && i < cfg->nduration_buckets; i++)
        same = mg_metrics_ns(cfg->duration_buckets[i]) == mg_metrics__bounds_ns[i];
    if (!same)
        mg_warn("config reload: a new `metrics.duration_buckets` takes effect at the next "
                "restart");
    return generation_new(prev->store, cfg);
}

void mg_metrics_ref(struct mg_metrics *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void mg_metrics_unref(struct mg_metrics *m)
{
    struct mg_metrics_store *st;
    bool last_generation;

    if (m == NULL || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    st = m->store;
    uv_mutex_lock(&st->mu);
    release(st, m->global);
    for (size_t r = 0; r <= m->nroutes; r++)
        release(st, m->routes[r]);
    for (size_t u = 0; u < m->nupstreams; u++)
        release(st, m->upstreams[u]);
    for (size_t t = 0; t < m->ntargets; t++)
        release(st, m->targets[t]);
    for (size_t p = 0; p < m->nplugins; p++)
        release(st, m->plugins[p]);
    for (size_t l = 0; l < m->nlisteners; l++)
        release(st, m->listeners[l]);
    last_generation = --st->ngenerations == 0;
    uv_mutex_unlock(&st->mu);
    if (last_generation) {
        MG_ASSERT(st->entities == NULL);
        uv_mutex_destroy(&st->mu);
        free(st);
    }
    mg_config_unref(m->cfg);
    free(m->mem);
    free(m);
}

int mg_metrics_plugin_index(const struct mg_metrics *m, const char *name)
{
    if (m == NULL || name == NULL)
        return -1;
    for (size_t p = 0; p < m->nplugins; p++)
        if (strcmp(m->plugins[p]->name, name) == 0)
            return (int)p;
    return -1;
}

void mg_metrics_plugin_register(struct mg_metrics *m, int plugin)
{
    if (m && plugin >= 0 && (size_t)plugin < m->nplugins)
        atomic_store_explicit(&m->plugins[plugin]->registered, true, memory_order_relaxed);
}

void mg_metrics_config_reload(struct mg_metrics *m, bool ok)
{
    if (m)
        atomic_fetch_add_explicit(&m->store->reloads[ok ? 0 : 1], 1, memory_order_relaxed);
}

/* ---------------------------------------------------------- counting */

static inline void observe(_Atomic uint64_t *hist, uint64_t ns)
{
    unsigned b = 0;

    while (b < mg_metrics__nbounds && ns > mg_metrics__bounds_ns[b])
        b++;
    mg_metrics_cell_add(&hist[b], 1);
    mg_metrics_cell_add(&hist[MG_MH_SUM], ns);
}

void mg_metrics_request_done(struct mg_metrics *m, unsigned worker, int route, int status,
                             uint64_t duration_ns)
{
    _Atomic uint64_t *c;

    if (m == NULL)
        return;
    c = mg_metrics_route_cells(m, worker, route);
    if (status >= 100 && status <= 599)
        mg_metrics_cell_add(&c[MG_MR_CODE + (status - 100)], 1);
    else
        mg_metrics_cell_add(&c[MG_MR_CODE_OTHER], 1);
    observe(&c[MG_MR_HIST], duration_ns);
}

void mg_metrics_upstream_response(struct mg_metrics *m, unsigned worker, size_t upstream,
                                  uint64_t duration_ns)
{
    if (m != NULL && upstream < m->nupstreams)
        observe(&m->shards[worker].upstream[upstream][MG_MU_RESP_HIST], duration_ns);
}

void mg_metrics_plugin_observe(_Atomic uint64_t *cells, enum mg_plugin_phase phase,
                               uint64_t duration_ns, bool error)
{
    _Atomic uint64_t *c = cells + (size_t)phase * MG_MP_PHASE_CELLS;
    observe(c, duration_ns);
    if (error)
        mg_metrics_cell_add(&c[MG_MH_CELLS], 1);
}

void mg_metrics_plugin_done(struct mg_metrics *m, unsigned worker, int plugin,
                            enum mg_plugin_phase phase, uint64_t duration_ns, bool error)
{
    if (m == NULL || plugin < 0 || (size_t)plugin >= m->nplugins ||
        (unsigned)phase >= MG_PLUGIN_PHASE__COUNT)
        return;
    mg_metrics_plugin_observe(m->shards[worker].plugin[plugin], phase, duration_ns, error);
}

void mg_metrics_plugin_io(struct mg_metrics *m, unsigned worker, int plugin, unsigned kind,
                          unsigned result, uint64_t wait_ns)
{
    if (m == NULL || plugin < 0 || (size_t)plugin >= m->nplugins || kind >= MG_PLUGIN_IO_KINDS ||
        result >= MG_PLUGIN_IO_RESULTS)
        return;
    _Atomic uint64_t *c = m->shards[worker].plugin[plugin];
    mg_metrics_cell_add(&c[MG_MP_IO + kind * MG_PLUGIN_IO_RESULTS + result], 1);
    observe(&c[MG_MP_IO_WAIT + (size_t)kind * MG_MH_CELLS], wait_ns);
}

void mg_metrics_tls_handshake(struct mg_metrics *m, unsigned worker, size_t listener,
                              enum mg_tls_handshake_result r, uint64_t duration_ns)
{
    if (m == NULL || listener >= m->nlisteners || (unsigned)r >= MG_TLS_HS__COUNT)
        return;
    _Atomic uint64_t *c = m->shards[worker].listener[listener];
    mg_metrics_cell_add(&c[MG_ML_RESULT + r], 1);
    if (r == MG_TLS_HS_OK || r == MG_TLS_HS_RESUMED)
        observe(&c[MG_ML_HIST], duration_ns);
}

int mg_metrics_listener_index(const struct mg_metrics *m, const char *address)
{
    for (size_t l = 0; m && address && l < m->nlisteners; l++)
        if (strcmp(m->listeners[l]->name, address) == 0)
            return (int)l;
    return -1;
}

/* ---------------------------------------------------------- reading totals */

/* out[0..n) = cells [first, first + n) of `e` summed over every worker. */
static void sum_cells(const struct mg_metrics *m, const struct mg_metrics_entity *e, size_t first,
                      size_t n, uint64_t *out)
{
    memset(out, 0, n * sizeof(*out));
    for (unsigned w = 0; w < m->nworkers; w++) {
        const _Atomic uint64_t *c = e->cells[w] + first;
        for (size_t i = 0; i < n; i++)
            out[i] += atomic_load_explicit(&c[i], memory_order_relaxed);
    }
}

void mg_metrics_route_totals(const struct mg_metrics *m, int route,
                             struct mg_metrics_route_totals *out)
{
    const struct mg_metrics_entity *e = m->routes[route + 1];
    uint64_t codes[MG_MR_CODE_OTHER + 1], hist[MG_MH_CELLS], in_flight;

    /* Only the cells shown are read: the idempotency cells are skipped. */
    sum_cells(m, e, MG_MR_CODE, MG_MR_CODE_OTHER + 1, codes);
    sum_cells(m, e, MG_MR_HIST, MG_MH_CELLS, hist);
    sum_cells(m, e, MG_MR_IN_FLIGHT, 1, &in_flight);
    sum_cells(m, e, MG_MR_ERROR, MG_ERR__COUNT, out->errors);
    out->requests = out->status_5xx = 0;
    for (size_t i = 0; i <= MG_MR_CODE_OTHER; i++)
        out->requests += codes[i];
    for (size_t i = 500 - 100; i <= 599 - 100; i++)
        out->status_5xx += codes[MG_MR_CODE + i];
    memcpy(out->hist, hist, sizeof(out->hist));
    out->sum_ns = hist[MG_MH_SUM];
    out->in_flight = (int64_t)in_flight;
}

void mg_metrics_target_totals(const struct mg_metrics *m, size_t upstream, size_t target,
                              uint64_t out[MG_OUTCOME__COUNT])
{
    sum_cells(m, m->targets[m->target_base[upstream] + target], MG_MT_OUTCOME, MG_OUTCOME__COUNT,
              out);
}

uint64_t mg_metrics_retries_total(const struct mg_metrics *m, size_t upstream)
{
    uint64_t v;

    sum_cells(m, m->upstreams[upstream], MG_MU_RETRIES, 1, &v);
    return v;
}

size_t mg_metrics_nplugins(const struct mg_metrics *m)
{
    return m->nplugins;
}

void mg_metrics_plugin_totals(const struct mg_metrics *m, size_t plugin,
                              struct mg_metrics_plugin_totals *out)
{
    const struct mg_metrics_entity *e = m->plugins[plugin];
    uint64_t c[MG_MP_IO];

    sum_cells(m, e, 0, MG_MP_IO, c);
    out->name = e->name;
    out->registered = atomic_load_explicit(&e->registered, memory_order_relaxed);
    for (unsigned ph = 0; ph < MG_PLUGIN_PHASE__COUNT; ph++) {
        const uint64_t *h = c + ph * MG_MP_PHASE_CELLS;
        out->phase[ph].calls = 0;
        for (unsigned b = 0; b < MG_METRICS_NBUCKETS; b++)
            out->phase[ph].calls += h[b];
        out->phase[ph].sum_ns = h[MG_MH_SUM];
        out->phase[ph].errors = h[MG_MH_CELLS];
    }
}

int64_t mg_metrics_connections(const struct mg_metrics *m, enum mg_conn_side side,
                               enum mg_conn_state state)
{
    uint64_t v;

    sum_cells(m, m->global, MG_MG_CONN + side * MG_CONN_STATE__COUNT + state, 1, &v);
    return (int64_t)v;
}

void mg_metrics_reloads(const struct mg_metrics *m, uint64_t out[2])
{
    for (unsigned k = 0; k < 2; k++)
        out[k] = atomic_load_explicit(&m->store->reloads[k], memory_order_relaxed);
}
