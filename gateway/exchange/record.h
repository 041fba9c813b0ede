/*
 * Counting an exchange that ended and writing its access log line.
 */
#ifndef MG_EXCHANGE_RECORD_H
#define MG_EXCHANGE_RECORD_H

#include "exchange/exchange-t.h"

/* The exchange is over: answered with `status`, or abandoned when it is 0
 * (counted as 499, as nginx). Runs the log phase of its plugins. */
void mg_xrecord(struct mg_exchange *x, int status);

#endif
