/*
 * What the exchange waits for on the current try's connection (x->att): its
 * timer (send or read timeout, cut to timeouts.per_try), whether it is read,
 * what a read error or a timeout of it means. Bookkeeping only: reads
 * x->state, never assigns it (exchange.c acts on what happened).
 */
#ifndef MG_EXCHANGE_UPWAIT_H
#define MG_EXCHANGE_UPWAIT_H

#include <stdbool.h>
#include <sys/types.h>

#include "exchange/exchange-t.h"

/* Arms the connection's timer for what the exchange waits on now (FORWARD
 * only). `progress`: the upstream just moved, restart it. */
void mg_xup_sync_timer(struct mg_exchange *x, bool progress);
/* Reads the connection while the response has room (FORWARD, TUNNEL). */
void mg_xup_update_reading(struct mg_exchange *x);
/* Forgets what an earlier try's response left behind. */
void mg_xup_reset_response(struct mg_exchange *x);
/* The connection reported nread (< 0: it broke or closed): recorded for the
 * response reader. */
void mg_xup_note_read(struct mg_exchange *x, ssize_t nread);
/* Which limit the connection's timer was: for the log and the error. */
const char *mg_xup_timeout_what(const struct mg_exchange *x);

#endif
