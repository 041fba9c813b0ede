/*
 * A worker's runtime: what one worker needs of one config snapshot (its
 * upstreams' and targets' pools and balancer state, its plugin VM, its Redis
 * store, the snapshot's metrics). A reload makes a new one and retires the old;
 * exchanges hold the runtime they started on (a worker-local count, no atomics),
 * so requests in flight finish on the config they started with, and a retired
 * runtime is freed when its last exchange ends. Building one opens no socket
 * (but a Redis store, when a route uses one), so tests can make one.
 */
#include "runtime.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/log.h"
#include "idempotency/store.h"
#include "idempotency/store_redis.h"
#include "loopctx.h"
#include "lua/http_client.h"
#include "lua/metrics_hook.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "obs/metrics.h"
#include "resilience/registry.h"
#include "tls/context.h"
#include "upstream/pool.h"

static bool uses_redis(const struct mg_config *cfg)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].idempotency.enabled &&
            cfg->routes[i].idempotency.store == MG_IDEM_STORE_REDIS)
            return true;
    return false;
}

static void last_dropped(struct mg_hold *h);

/* The Redis store lives with the runtime: exchanges hold the runtime they
 * started on, so a reload (perhaps to another Redis) never pulls the store
 * from under an operation in flight. */
struct mg_runtime *mg_runtime_new(struct mg_loopctx *ctx, struct mg_config *cfg,
                                  struct mg_metrics *metrics, struct mg_lua *lua,
                                  struct mg_lua_metrics *lua_metrics)
{
    struct mg_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        mg_fatal("out of memory (runtime)");
    mg_config_ref(cfg);
    rt->cfg = cfg;
    if (metrics)
        mg_metrics_ref(metrics);
    rt->metrics = metrics;
    rt->lua = lua;
    rt->lua_metrics = lua_metrics;
    rt->hold = (struct mg_hold){.n = 1, .last_dropped = last_dropped};
    if (cfg->redis.enabled && uses_redis(cfg))
        rt->idem_redis = mg_idem_redis_open(&ctx->loop, &cfg->redis);
    rt->ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof *rt->ups);
    if (!rt->ups)
        mg_fatal("out of memory (upstream runtime)");
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct mg_upstream_conf *uc = &cfg->upstreams[i];
        struct mg_upstream_rt *ur = &rt->ups[i];
        ur->conf = uc;
        ur->stats = mg_registry_upstream(uc->name);
        ur->targets = calloc(uc->ntargets ? uc->ntargets : 1, sizeof *ur->targets);
        if (!ur->targets)
            mg_fatal("out of memory (target runtime)");
        ur->lua_targets = calloc(uc->ntargets ? uc->ntargets : 1, sizeof *ur->lua_targets);
        if (!ur->lua_targets)
            mg_fatal("out of memory (balancer view)");
        for (size_t j = 0; j < uc->ntargets; j++) {
            ur->targets[j].conf = &uc->targets[j];
            ur->targets[j].stats = mg_registry_target(uc->name, uc->targets[j].address.text);
            ur->targets[j].owner = &rt->hold;
            ur->targets[j].pool_limit = uc->keepalive;
            if (uc->tls.enabled) {
                ur->targets[j].tls = &uc->tls;
                /* A discovered target's address is an IP: the name it had in DNS. */
                const char *dns_name = uc->targets[j].name;
                ur->targets[j].tls_name = mg_tls_upstream_name(
                    &uc->tls, dns_name ? &(struct mg_address){.text = (char *)dns_name}
                                       : &uc->targets[j].address);
            }
            ur->lua_targets[j] = (struct mg_lua_target){.address = uc->targets[j].address.text,
                                                        .weight = uc->targets[j].weight,
                                                        .stats = ur->targets[j].stats};
        }
    }
    mg_lua_http_bind(lua, ctx, rt->ups);
    mg_lua_start(lua, &ctx->loop); /* init_worker; timers run on this loop */
    return rt;
}

void mg_runtime_close_idle(struct mg_runtime *rt)
{
    for (size_t i = 0; i < rt->cfg->nupstreams; i++)
        for (size_t j = 0; j < rt->ups[i].conf->ntargets; j++)
            mg_upconn_close_idle(&rt->ups[i].targets[j]);
}

static void runtime_free(struct mg_runtime *rt)
{
    mg_runtime_close_idle(rt);
    mg_idem_client_close(rt->idem_redis);
    mg_lua_free(rt->lua);
    mg_lua_metrics_free(rt->lua_metrics);
    for (size_t i = 0; i < rt->cfg->nupstreams; i++) {
        for (size_t j = 0; j < rt->ups[i].conf->ntargets; j++) {
            free(rt->ups[i].targets[j].tls_name);
            SSL_SESSION_free(rt->ups[i].targets[j].tls_session);
        }
        free(rt->ups[i].targets);
        free(rt->ups[i].lua_targets);
    }
    free(rt->ups);
    if (rt->metrics)
        mg_metrics_unref(rt->metrics);
    mg_config_unref(rt->cfg);
    free(rt);
}

static void last_dropped(struct mg_hold *h)
{
    runtime_free((struct mg_runtime *)((char *)h - offsetof(struct mg_runtime, hold)));
}

struct mg_runtime *mg_runtime_hold(struct mg_loopctx *ctx)
{
    mg_hold_take(&ctx->rt->hold);
    return ctx->rt;
}

void mg_runtime_release(struct mg_loopctx *ctx, struct mg_runtime *rt)
{
    (void)ctx;
    mg_hold_drop(&rt->hold);
}

static struct mg_target_rt *find_same_target(struct mg_runtime *rt, const char *upstream,
                                             const struct mg_address *addr)
{
    for (size_t i = 0; i < rt->cfg->nupstreams; i++) {
        struct mg_upstream_rt *ur = &rt->ups[i];
        if (strcmp(ur->conf->name, upstream) != 0)
            continue;
        for (size_t j = 0; j < ur->conf->ntargets; j++) {
            const struct mg_address *a = &ur->targets[j].conf->address;
            if (a->addrlen == addr->addrlen && memcmp(&a->addr, &addr->addr, a->addrlen) == 0)
                return &ur->targets[j];
        }
    }
    return NULL;
}

/* Idle connections to targets that stay in the new config move to its pools, so a
 * reload under load costs no reconnects; the rest close when the old one retires. */
void mg_runtime_carry_over(struct mg_runtime *from, struct mg_runtime *to)
{
    for (size_t i = 0; i < from->cfg->nupstreams; i++) {
        struct mg_upstream_rt *ur = &from->ups[i];
        for (size_t j = 0; j < ur->conf->ntargets; j++) {
            struct mg_target_rt *old = &ur->targets[j];
            struct mg_target_rt *now =
                old->idle ? find_same_target(to, ur->conf->name, &old->conf->address) : NULL;
            if (now)
                mg_upconn_move_idle(old, now);
        }
    }
}

void mg_runtime_retire(struct mg_runtime *rt)
{
    rt->hold.retired = true;
    mg_lua_retire(rt->lua); /* its timers stop now */
    /* Idle pooled connections to the old snapshot's targets close now; leased ones
     * close when their exchange ends. */
    mg_runtime_close_idle(rt);
    mg_runtime_release(NULL, rt);
}
