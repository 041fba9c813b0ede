/*
 * The upstream HTTP/1.1 codec: writes an exchange's request to a leased
 * connection and decodes the response from it, one try (struct mg_attempt) at a
 * time. It is the only code that knows HTTP/1 framing towards upstreams; it
 * decides nothing about retries, plugins or the client: what it reads it
 * returns as a verdict (enum mg_resp_event) for the exchange to act on.
 */
#ifndef MG_UPSTREAM_H1CLIENT_H
#define MG_UPSTREAM_H1CLIENT_H

#include "exchange/exchange-t.h"

/* The pool and this codec as the exchange's upstream side. */
extern const struct mg_upstream_ops mg_h1client_ops;

#endif
