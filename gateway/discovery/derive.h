/*
 * Derived snapshots: the file's snapshot with the targets DNS gave. Only the
 * upstreams (with new target arrays), the routes (pointing at them) and the
 * router are new; everything else is borrowed from the base, which the
 * derived snapshot holds a reference on. Workers, the admin thread, metrics
 * and health checks take a derived snapshot exactly like a loaded one, so a
 * change of targets travels the reload path: targets that stay keep their
 * registry state (breaker, EWMA, in-flight) and idle connections, new ones
 * start fresh, and removed ones finish their requests on the runtime those
 * started on.
 */
#ifndef MG_DISCOVERY_DERIVE_H
#define MG_DISCOVERY_DERIVE_H

#include <stddef.h>

#include "config/config-t.h"
#include "discovery/targetset.h"

#define MG_DERIVED_REDIS ((size_t)-1) /* a source for redis.address, not an upstream */

/* What one name gave, for upstream number `upstream` of the base. */
struct mg_derived_source {
    size_t upstream;
    const char *name; /* in base memory: shown as the targets' source */
    const struct mg_tset *set;
};

/* An upstream that follows DNS gets its literal targets (in file order), then
 * the sources' addresses (in the order given; an address already there is not
 * repeated). Others keep theirs. A MG_DERIVED_REDIS source with an address
 * gives redis.address its first one. Returns a snapshot with one reference. */
struct mg_config *mg_discovery_derive(struct mg_config *base, const struct mg_derived_source *src,
                                      size_t n);

#endif
