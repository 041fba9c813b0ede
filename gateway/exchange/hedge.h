/*
 * Hedged requests (DESIGN.md section 10.7, "The Tail at Scale"): when the
 * current try of a safe request has no response head after `hedge.after`, one
 * more try goes to a target not tried yet; the first complete response head
 * wins. The hedge is a second struct mg_attempt (x->hedge) that this file owns
 * until its head arrives; the winner is always x->att afterwards, so the rest
 * of the exchange never sees two tries. State changes stay in exchange.c: this
 * file only moves attempts and reports through x->hedge_head and
 * mg_exchange_run.
 */
#ifndef MG_EXCHANGE_HEDGE_H
#define MG_EXCHANGE_HEDGE_H

#include <stdbool.h>

#include "exchange/exchange-t.h"

/* The current try started forwarding: arms the hedge delay when the route's
 * upstream hedges and this request may be hedged. */
void mg_hedge_arm(struct mg_exchange *x);
/* The current try's response head came first: a hedge in flight lost. */
void mg_hedge_settle(struct mg_exchange *x);
/* The current try failed (connect error, reset, timeout, a status that would
 * be retried) while a hedge is in flight: the hedge becomes x->att, before its
 * head (counted as won), and true is returned; the exchange then waits for it
 * (x->att.ready: forwarding, else connecting). False: no hedge to wait for. */
bool mg_hedge_take_over(struct mg_exchange *x);
/* The current try ends (retry, failure, end, close): the hedge delay stops and a
 * hedge in flight is cancelled (its connection closed, never pooled). */
void mg_hedge_cancel(struct mg_exchange *x);

#endif
