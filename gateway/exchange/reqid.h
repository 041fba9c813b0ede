/*
 * The request id of an exchange (x->request_id): the client's X-Request-Id when
 * it is valid, else 32 random hex digits from the worker's generator.
 */
#ifndef MG_EXCHANGE_REQID_H
#define MG_EXCHANGE_REQID_H

#include "exchange/exchange-t.h"

/* The client's id if valid (x->rid_idx), else a generated one. */
void mg_xreqid_make(struct mg_exchange *x);
/* A generated one (an error answered before the head was read has none). */
void mg_xreqid_generate(struct mg_exchange *x);

#endif
