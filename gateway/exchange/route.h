/*
 * Which route a request takes: its host and path through the config's
 * router. Sets x->route, x->ups, x->prefix_len and x->plug_caps; never
 * x->state (exchange.c acts on the verdict).
 */
#ifndef MG_EXCHANGE_ROUTE_H
#define MG_EXCHANGE_ROUTE_H

#include "core/errors.h"
#include "exchange/exchange-t.h"

/* MG_ERR_NONE, or MG_ERR_NO_ROUTE when no route matches. */
enum mg_error mg_xroute(struct mg_exchange *x);

#endif
