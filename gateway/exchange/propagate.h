/*
 * Deadline propagation (DESIGN.md section 10.7, `deadline_header`): a client's
 * deadline header can only shorten the route's timeout, and is not forwarded
 * as sent; the upstream codec writes the remaining deadline in its place.
 */
#ifndef MG_EXCHANGE_PROPAGATE_H
#define MG_EXCHANGE_PROPAGATE_H

#include <stdint.h>

#include "exchange/exchange-t.h"

/* The route's overall timeout for this request, in ms: routes[].timeout, or
 * less when the client's deadline header (milliseconds) asks for less. */
uint64_t mg_xprop_timeout_ms(struct mg_exchange *x);

#endif
