/*
 * Smooth weighted round robin (see balancer.h). Each pick adds every candidate's
 * weight to its current value, takes the largest and subtracts the total from it:
 * with weights 5,1,1 the order is a a b a c a a, never a burst of five.
 */
#include "upstream/balancer.h"

#include "resilience/breaker.h"

bool mg_balancer_available(const struct mg_target_rt *t, const struct mg_breaker_conf *bc,
                           uint64_t now_ms)
{
    return !atomic_load_explicit(&t->stats->unhealthy, memory_order_relaxed) &&
           atomic_load_explicit(&t->stats->out_until, memory_order_relaxed) <= now_ms &&
           mg_breaker_available(&t->stats->breaker, bc, now_ms);
}

bool mg_balancer_fresh_exists(struct mg_upstream_rt *u, const struct mg_tried *tried,
                              uint64_t now_ms)
{
    const struct mg_upstream_conf *uc = u->conf;
    for (size_t i = 0; i < uc->ntargets; i++)
        if (!mg_tried_has(tried, i) && mg_balancer_available(&u->targets[i], &uc->breaker, now_ms))
            return true;
    return false;
}

bool mg_balancer_offered(struct mg_upstream_rt *u, size_t i, const struct mg_tried *tried,
                         bool fresh_exists, uint64_t now_ms)
{
    return (!fresh_exists || !mg_tried_has(tried, i)) &&
           mg_balancer_available(&u->targets[i], &u->conf->breaker, now_ms);
}

int mg_balancer_pick(struct mg_upstream_rt *u, const struct mg_tried *tried, uint64_t now_ms)
{
    const struct mg_upstream_conf *uc = u->conf;
    bool fresh = tried->n == 0 || mg_balancer_fresh_exists(u, tried, now_ms);
    int best = -1;
    int32_t total = 0;
    for (size_t i = 0; i < uc->ntargets; i++) {
        if (!mg_balancer_offered(u, i, tried, fresh, now_ms))
            continue;
        struct mg_target_rt *t = &u->targets[i];
        t->rr_current += (int32_t)t->conf->weight;
        total += (int32_t)t->conf->weight;
        if (best < 0 || t->rr_current > u->targets[best].rr_current)
            best = (int)i;
    }
    if (best >= 0)
        u->targets[best].rr_current -= total;
    return best;
}
