/*
 * Request routing: host (exact or "*." wildcard), longest path prefix, methods.
 * The tables are built once per configuration snapshot and read without locks.
 */
#ifndef MG_ROUTER_H
#define MG_ROUTER_H

#include <stddef.h>

#include "config/config-t.h"

/* Builds the match tables for cfg->routes. Returns NULL on allocation failure. */
struct mg_router *mg_router_build(const struct mg_config *cfg);
void mg_router_free(struct mg_router *r);

/* Finds the route for a request. `host` is the raw Host header value (may carry a
 * ":port" and any case; NULL/0 when absent), `path` the request target path without
 * the query, in route form (mg_http_path_route_form, http/request.h: "/%61dmin" is
 * matched as "/admin"; configured paths are stored in that form). `method` is an llhttp_method_t.
 * Among matching routes the longest path prefix wins; on a tie, the earlier route in the file. A
 * prefix matches at a segment boundary only ("/orders" matches "/orders", "/orders/1", "/orders?x",
 * not "/ordersx"), except "/" and prefixes ending in '/', which match anything under
 * them. Returns NULL when nothing matches; on success, *prefix_len (if not NULL)
 * receives the length of the matched prefix in `path` (for strip_prefix; the
 * caller maps it back to the raw path with mg_http_path_raw_len). */
const struct mg_route_conf *mg_router_match(const struct mg_router *r, const char *host,
                                            size_t hostlen, const char *path, size_t pathlen,
                                            int method, size_t *prefix_len);

#endif
