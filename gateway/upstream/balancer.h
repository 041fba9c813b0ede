/*
 * The C balancer: smooth weighted round robin (nginx's), over the targets that
 * are available (breaker not open, health checks passing). The Lua balancer
 * plugins (routes[].balancer) replace this choice for routes that name one.
 */
#ifndef MG_BALANCER_H
#define MG_BALANCER_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime-t.h"
#include "upstream/balancer-t.h"

/* Is target t offered to balancers now? Reads process-wide atomics only. */
bool mg_balancer_available(const struct mg_target_rt *t, const struct mg_breaker_conf *bc,
                           uint64_t now_ms);

/* Whether target i is offered for this try: available, and not yet tried unless
 * every available target was (a retry may go back to a target rather than fail).
 * `fresh_exists` comes from mg_balancer_fresh_exists for the same moment. */
bool mg_balancer_offered(struct mg_upstream_rt *u, size_t i, const struct mg_tried *tried,
                         bool fresh_exists, uint64_t now_ms);
/* Is some available target not yet tried? */
bool mg_balancer_fresh_exists(struct mg_upstream_rt *u, const struct mg_tried *tried,
                              uint64_t now_ms);

/* Picks an offered target of u (any number of them). Returns its index, or -1
 * when none is available. Updates u's round-robin state (worker-local). */
int mg_balancer_pick(struct mg_upstream_rt *u, const struct mg_tried *tried, uint64_t now_ms);

#endif
