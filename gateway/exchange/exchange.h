/*
 * The exchange state machine (see exchange-t.h for the states). A downstream
 * codec drives it through mg_exchange_hooks; the pieces of the exchange layer
 * (attempts, the idempotency phase) report to it with mg_exchange_run.
 */
#ifndef MG_EXCHANGE_H
#define MG_EXCHANGE_H

#include "exchange/exchange-t.h"

struct mg_accesslog;

/* The hooks a downstream codec uses (see struct mg_exchange_hooks). */
extern const struct mg_exchange_hooks mg_exchange_hooks;

/* Where exchanges log (process-wide; set before the workers start). */
void mg_exchange_set_accesslog(struct mg_accesslog *l);

/* Something the exchange waits for happened: run the state machine. */
void mg_exchange_run(struct mg_exchange *x);

/* The upstream side the exchanges of this process use (the HTTP/1 client
 * codec over the pools); tests put fakes here. */
void mg_exchange_set_upstream(const struct mg_upstream_ops *ops);

/* The printable name of a state (traces, asserts). */
const char *mg_exchange_state_name(enum mg_x_state s);

#endif
