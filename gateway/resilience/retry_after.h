/*
 * Retry-After values (RFC 9110 section 10.2.3) as an upstream sends them with a
 * 429 or 503: delta-seconds or an HTTP-date (IMF-fixdate). Pure functions.
 */
#ifndef MG_RETRY_AFTER_H
#define MG_RETRY_AFTER_H

#include <stdbool.h>
#include <stdint.h>

#include "http/message.h"

/* The wait `v` asks for in ms, given the wall clock `now_s` (Unix seconds);
 * a date in the past is 0. False when `v` is neither form. */
bool mg_retry_after_parse(struct mg_slice v, int64_t now_s, uint64_t *ms);

#endif
