/*
 * Header field lists built from llhttp's callbacks, in an arena: both codecs
 * (conn/h1server.c for requests, upstream/h1client.c for responses) parse a
 * whole copied head, so names and values are slices of that copy, and a name or
 * value llhttp delivers in two pieces is contiguous there.
 */
#ifndef MG_HTTP_FIELDS_H
#define MG_HTTP_FIELDS_H

#include <stddef.h>

#include "core/arena.h"
#include "http/message.h"

/* Most fields a head may carry: past it the head is refused (431 / 502). */
#define MG_MAX_FIELDS 100

void mg_fields_init(struct mg_arena *a, struct mg_headers *h);
/* A piece of a field name (on_header_field). -1 past MG_MAX_FIELDS. */
int mg_fields_name(struct mg_arena *a, struct mg_headers *h, const char *p, size_t len);
/* A piece of the last field's value (on_header_value). -1 before any name. */
int mg_fields_value(struct mg_headers *h, const char *p, size_t len);
/* The last field's value is complete (an empty one points after its name). */
void mg_fields_value_done(struct mg_headers *h);

#endif
