/*
 * The header edits plugins make (ctx:set_header, ctx:set_response_header), as
 * the codecs that write heads use them: a field an edit names is not copied
 * from the message; the edits that set a value are written instead.
 */
#ifndef MG_LUA_EDITS_H
#define MG_LUA_EDITS_H

#include <stdbool.h>
#include <stddef.h>

#include "http/message.h"
#include "lua/ctx-t.h"

/* Does an edit in the list replace this field (a set or removal naming it)? */
bool mg_lua_edits_name(const struct mg_lua_edit *e, struct mg_slice name);
/* Bytes mg_lua_edits_put writes at most. */
size_t mg_lua_edits_size(const struct mg_lua_edit *e);
/* Writes "Name: value\r\n" for each edit that sets a value; returns the end. */
char *mg_lua_edits_put(char *o, const struct mg_lua_edit *e);

/* The request target towards the upstream: `t` (the route's, prefix cut),
 * with the path and query ctx:set_path() / ctx:set_query() chose, allocated
 * from the request's arena. c == NULL (no plugin ran) gives t. */
struct mg_slice mg_lua_target(const struct mg_lua_ctx *c, struct mg_slice t);

#endif
