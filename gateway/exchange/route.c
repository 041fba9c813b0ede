/* Routing a request (see route.h). */
#include "exchange/route.h"

#include <string.h>

#include "http/request.h"
#include "lua/vm.h"
#include "router.h"
#include "runtime.h"

/* The path as the router sees it: "/%61dmin" is "/admin" to every upstream
 * (RFC 3986 section 6.2.2.2), so it must take the /admin route. Only a path
 * with a '%' pays for the copy; x->path stays as received and is forwarded. */
static struct mg_slice route_path(struct mg_exchange *x)
{
    if (memchr(x->path.p, '%', x->path.len) == NULL)
        return x->path;
    char *p = mg_arena_alloc(&x->arena, x->path.len);
    return (struct mg_slice){p, mg_http_path_route_form(x->path, p)};
}

enum mg_error mg_xroute(struct mg_exchange *x)
{
    struct mg_slice host = mg_x_request_host(x), path = route_path(x);
    x->route = mg_router_match(x->rt->cfg->router, host.p, host.len, path.p, path.len, x->method,
                               &x->prefix_len);
    if (x->route && path.p != x->path.p)
        x->prefix_len = mg_http_path_raw_len(x->path, x->prefix_len);
    x->ups = x->route ? x->route->upstream : NULL;
    x->plug_caps = x->route ? mg_lua_route_caps(x->rt->lua, x->route->index) : 0;
    return x->route ? MG_ERR_NONE : MG_ERR_NO_ROUTE;
}
