/*
 * Plugin phases of an exchange (see plugins.h). The ctx's inputs are slices of
 * the exchange's request head and response head, valid while a phase runs.
 */
#include "exchange/plugins.h"

#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "net/tls.h"
#include "upstream/balancer.h"
#include "worker.h"

static struct mg_lua_str lua_str(struct mg_slice s)
{
    return (struct mg_lua_str){s.p, s.len};
}

static struct mg_lua_str lua_cstr(const char *s)
{
    return (struct mg_lua_str){s, s ? strlen(s) : 0};
}

static const struct mg_lua_header *lua_headers(struct mg_arena *a, const struct mg_headers *h)
{
    struct mg_lua_header *v = mg_arena_alloc(a, sizeof *v * (h->n ? h->n : 1));
    for (uint32_t i = 0; i < h->n; i++)
        v[i] = (struct mg_lua_header){lua_str(h->v[i].name), lua_str(h->v[i].value)};
    return v;
}

bool mg_xplug_active(const struct mg_exchange *x, enum mg_lua_phase phase)
{
    return x->route && mg_lua_route_active(x->rt->lua, x->route->index, phase);
}

struct mg_lua_ctx *mg_xplug_ctx(struct mg_exchange *x)
{
    if (x->lua_ready)
        return &x->lua;
    x->lua_ready = true;
    mg_lua_ctx_init(&x->lua, &x->arena);
    const char *m = llhttp_method_name((llhttp_method_t)x->method);
    const char *q = memchr(x->url.p, '?', x->url.len);
    x->lua.method = (struct mg_lua_str){m, strlen(m)};
    x->lua.path = lua_str(x->path);
    x->lua.query = q ? (struct mg_lua_str){q + 1, (size_t)(x->url.p + x->url.len - q - 1)}
                     : (struct mg_lua_str){NULL, 0};
    x->lua.client_ip = (struct mg_lua_str){x->client_ip, strlen(x->client_ip)};
    x->lua.route = (struct mg_lua_str){x->route->name, strlen(x->route->name)};
    x->lua.request_id = (struct mg_lua_str){x->request_id, strlen(x->request_id)};
    x->lua.protocol = x->h2                ? (struct mg_lua_str){"h2", 2}
                      : x->http_minor == 0 ? (struct mg_lua_str){"http/1.0", 8}
                                           : (struct mg_lua_str){"http/1.1", 8};
    x->lua.req_headers = lua_headers(&x->arena, &x->req_hdrs);
    x->lua.n_req_headers = x->req_hdrs.n;
    /* The stream outlives the exchange, so its strings need no copy. */
    const struct mg_tls_info *tls = mg_tls_info(x->client);
    if (tls) {
        x->lua.tls_protocol = lua_cstr(tls->protocol);
        x->lua.tls_cipher = lua_cstr(tls->cipher);
        x->lua.tls_sni = lua_cstr(tls->sni);
        x->lua.tls_client_subject = lua_cstr(tls->client_subject);
    }
    return &x->lua;
}

enum mg_lua_result mg_xplug_access(struct mg_exchange *x)
{
    return mg_lua_run(x->rt->lua, x->route->index, MG_LUA_ACCESS, mg_xplug_ctx(x));
}

int mg_xplug_response(struct mg_exchange *x)
{
    struct mg_lua_ctx *l = mg_xplug_ctx(x);
    const char *addr = x->att.target->conf->address.text;
    l->status = x->status;
    l->resp_headers = lua_headers(&x->arena, &x->resp_hdrs);
    l->n_resp_headers = x->resp_hdrs.n;
    l->upstream_address = (struct mg_lua_str){addr, strlen(addr)};
    l->latency = (double)(uv_hrtime() - x->att.start_ns) / 1e9;
    return mg_lua_run(x->rt->lua, x->route->index, MG_LUA_RESPONSE, l) == MG_LUA_ERROR ? -1 : 0;
}

int mg_xplug_balance(struct mg_exchange *x, struct mg_upstream_rt *ur, uint64_t now_ms,
                     bool *raised)
{
    const struct mg_upstream_conf *uc = ur->conf;
    bool fresh = x->tried.n == 0 || mg_balancer_fresh_exists(ur, &x->tried, now_ms);
    for (size_t k = 0; k < uc->ntargets; k++)
        ur->lua_targets[k].available = mg_balancer_offered(ur, k, &x->tried, fresh, now_ms);
    *raised = false;
    int i = mg_lua_balance(x->rt->lua, x->route->index, mg_xplug_ctx(x), ur->lua_targets,
                           uc->ntargets, raised);
    if (i < 0 && !*raised)
        mg_debug("balancer of route %s gave no usable target: round robin instead", x->route->name);
    return *raised ? -1 : i;
}

void mg_xplug_finish(struct mg_exchange *x, int status, uint64_t now_ns)
{
    if (mg_xplug_active(x, MG_LUA_LOG)) {
        struct mg_lua_ctx *l = mg_xplug_ctx(x);
        l->status = status;
        l->latency = (double)(now_ns - x->started_ns) / 1e9;
        mg_lua_run(x->rt->lua, x->route->index, MG_LUA_LOG, l); /* errors: logged only */
    }
    if (x->lua_ready)
        mg_lua_ctx_done(x->rt->lua, &x->lua);
}
