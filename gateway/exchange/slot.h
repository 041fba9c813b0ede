/*
 * The exchange's bulkhead slot and its place in the wait queue (the
 * admission of resilience/admission.c, per exchange). Verdicts and
 * bookkeeping only: exchange.c turns them into state changes.
 */
#ifndef MG_EXCHANGE_SLOT_H
#define MG_EXCHANGE_SLOT_H

#include <stdbool.h>

#include "exchange/exchange-t.h"
#include "resilience/admission.h"

/* Asks for a slot with the route's priority: MG_ADMIT_ACQUIRED (x->slot_held
 * set), MG_ADMIT_QUEUED (x->waiter is in the queue) or a refusal. */
enum mg_admit mg_xslot_enter(struct mg_exchange *x);
/* The queue timeout fired: true when a grant was on its way after all
 * (x->slot_held set), false when the exchange left the queue without one. */
bool mg_xslot_timeout(struct mg_exchange *x);
/* Gives the slot back, if held. */
void mg_xslot_release(struct mg_exchange *x);
/* Leaves the queue without a slot (client gone, deadline); the queue timer stops. */
void mg_xslot_leave(struct mg_exchange *x);
/* Stops waiting in QUEUED (leaves the queue) or BACKOFF (the timer stops);
 * nothing in other states. */
void mg_xslot_stop_waiting(struct mg_exchange *x);

#endif
