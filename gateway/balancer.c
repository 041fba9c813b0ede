/*
 * Smooth weighted round robin (see balancer.h). Each pick adds every candidate's
 * weight to its current value, takes the largest and subtracts the total from it:
 * with weights 5,1,1 the order is a a b a c a a, never a burst of five.
 */
#include "balancer.h"

#include "resilience/breaker.h"

bool mg_balancer_available(const struct mg_target_rt *t, const struct mg_breaker_conf *bc,
                           uint64_t now_ms)
{
    return !atomic_load_explicit(&t->stats->unhealthy, memory_order_relaxed) &&
           mg_breaker_available(&t->stats->breaker, bc, now_ms);
}

int mg_balancer_pick(struct mg_upstream_rt *u, uint64_t tried, uint64_t now_ms)
{
    const struct mg_upstream_conf *uc = u->conf;
    uint64_t avail = 0;
    for (size_t i = 0; i < uc->ntargets && i < 64; i++)
        if (mg_balancer_available(&u->targets[i], &uc->breaker, now_ms))
            avail |= 1ull << i;
    uint64_t fresh = avail & ~tried;
    uint64_t pool = fresh ? fresh : avail;
    if (!pool)
        return -1;
    int best = -1;
    int32_t total = 0;
    for (size_t i = 0; i < uc->ntargets && i < 64; i++) {
        if (!(pool & (1ull << i)))
            continue;
        struct mg_target_rt *t = &u->targets[i];
        t->rr_current += (int32_t)t->conf->weight;
        total += (int32_t)t->conf->weight;
        if (best < 0 || t->rr_current > u->targets[best].rr_current)
            best = (int)i;
    }
    u->targets[best].rr_current -= total;
    return best;
}
