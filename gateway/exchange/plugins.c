/*
 * Plugin phases of an exchange (see plugins.h). The ctx's inputs are slices of
 * the exchange's request head and response head, valid while a phase runs.
 */
#include "exchange/plugins.h"

#include <stddef.h>
#include <string.h>

#include "config/config-t.h"
#include "http/body.h"
#include "core/log.h"
#include "exchange/exchange.h"
#include "lua/task.h"
#include "net/tls.h"
#include "upstream/balancer.h"
#include "loopctx.h"

static struct mg_lua_str lua_str(struct mg_slice s)
{
    return (struct mg_lua_str){s.p, s.len};
}

static struct mg_lua_str lua_cstr(const char *s)
{
    return (struct mg_lua_str){s, s ? strlen(s) : 0};
}

/* The exchange's own header array serves as the plugins' view, without a
 * copy: struct mg_header starts with the two slices of struct mg_lua_header. */
_Static_assert(offsetof(struct mg_header, name) == offsetof(struct mg_lua_header, name) &&
                   offsetof(struct mg_header, value) == offsetof(struct mg_lua_header, value) &&
                   offsetof(struct mg_slice, p) == offsetof(struct mg_lua_str, p) &&
                   offsetof(struct mg_slice, len) == offsetof(struct mg_lua_str, len) &&
                   sizeof(struct mg_slice) == sizeof(struct mg_lua_str) &&
                   sizeof(struct mg_header) < 65536,
               "struct mg_header begins like struct mg_lua_header");

static const struct mg_lua_header *lua_headers(const struct mg_headers *h)
{
    return (const struct mg_lua_header *)h->v;
}

/* x->plug_caps: the route's phases, read once when it was routed. */
bool mg_xplug_active(const struct mg_exchange *x, enum mg_lua_phase phase)
{
    return x->route && (x->plug_caps & (1u << phase));
}

static bool waits(const struct mg_exchange *x, enum mg_lua_phase phase)
{
    return x->plug_caps & ((1u << phase) << MG_LUA_CAPS_WAITS_SHIFT);
}

/* The request inputs of the ctx, set when a plugin first looks at the request
 * (ctx.c calls it through ctx->fill): an empty plugin or a balancer that
 * reads only its targets makes no view of the request at all. */
static void fill_request(struct mg_lua_ctx *l, void *data)
{
    struct mg_exchange *x = data;
    const char *m = llhttp_method_name((llhttp_method_t)x->method);
    const char *q = memchr(x->url.p, '?', x->url.len);
    l->method = (struct mg_lua_str){m, strlen(m)};
    l->path = lua_str(x->path);
    l->query = q ? (struct mg_lua_str){q + 1, (size_t)(x->url.p + x->url.len - q - 1)}
                 : (struct mg_lua_str){NULL, 0};
    l->client_ip = (struct mg_lua_str){mg_x_client_ip(x), strlen(mg_x_client_ip(x))};
    l->route = (struct mg_lua_str){x->route->name, strlen(x->route->name)};
    l->request_id = (struct mg_lua_str){x->request_id, strlen(x->request_id)};
    l->protocol = x->h2                ? (struct mg_lua_str){"h2", 2}
                  : x->http_minor == 0 ? (struct mg_lua_str){"http/1.0", 8}
                                       : (struct mg_lua_str){"http/1.1", 8};
    l->req_headers = lua_headers(&x->req_hdrs);
    l->n_req_headers = x->req_hdrs.n;
    l->req_header_stride = sizeof(struct mg_header);
    /* The stream outlives the exchange, so its strings need no copy. */
    const struct mg_tls_info *tls = mg_tls_info(x->client);
    /* Every request input is set here: mg_lua_ctx_init_lazy() leaves them. */
    struct mg_lua_str none = {NULL, 0};
    l->tls_protocol = tls ? lua_cstr(tls->protocol) : none;
    l->tls_cipher = tls ? lua_cstr(tls->cipher) : none;
    l->tls_sni = tls ? lua_cstr(tls->sni) : none;
    l->tls_client_subject = tls ? lua_cstr(tls->client_subject) : none;
}

struct mg_lua_ctx *mg_xplug_ctx(struct mg_exchange *x)
{
    if (x->lua_ready)
        return &x->lua;
    x->lua_ready = true;
    mg_lua_ctx_init_lazy(&x->lua, &x->arena, fill_request, x);
    return &x->lua;
}

/* The waited-for I/O completed: the state machine resumes the phase. */
static void on_plugin_io(struct mg_lua_task *t)
{
    mg_exchange_run(t->data);
}

/* A caps bit first: only routes with P.body ask the VM. */
size_t mg_xplug_body_max(const struct mg_exchange *x)
{
    return x->route && (x->plug_caps & MG_LUA_CAPS_BODY)
               ? mg_lua_route_body_max(x->rt->lua, x->route->index)
               : 0;
}

int mg_xplug_body_data(struct mg_exchange *x, const char *p, size_t n)
{
    if (mg_arena_append(&x->arena, &x->body_copy, &x->body_copy_len, &x->body_copy_cap, p, n,
                        mg_xplug_body_max(x)) < 0) {
        x->error = MG_ERR_BODY_TOO_LARGE;
        return -1;
    }
    return 0;
}

/* ctx:set_body(): the new body replaces the kept one, framed by length. */
static void apply_body(struct mg_exchange *x)
{
    x->body_copy = (char *)x->lua.new_body.p; /* the request's arena: ours to keep */
    x->body_copy_len = x->body_copy_cap = x->lua.new_body.len;
    x->body_copy_ok = true;
    x->req_chunked = false;
    x->req_has_length = true;
    x->req_content_length = x->lua.new_body.len;
}

/* What a finished access phase changed: the upstream (set_upstream: its
 * targets and resilience settings), the body (set_body). */
static enum mg_lua_result access_done(struct mg_exchange *x, enum mg_lua_result r)
{
    if (r == MG_LUA_WAIT)
        return r;
    if (x->lua.upstream)
        x->ups = x->lua.upstream;
    if (x->lua.body_set && r == MG_LUA_OK)
        apply_body(x);
    return r;
}

enum mg_lua_result mg_xplug_access(struct mg_exchange *x)
{
    struct mg_lua_ctx *l = mg_xplug_ctx(x);
    if (mg_xplug_body_max(x))
        l->body = (struct mg_lua_str){x->body_copy ? x->body_copy : "", x->body_copy_len};
    struct mg_lua *vm = x->rt->lua;
    size_t route = x->route->index;
    if (!waits(x, MG_LUA_ACCESS)) /* a direct call: no task */
        return access_done(x, mg_lua_run(vm, route, MG_LUA_ACCESS, l));
    enum mg_lua_result r = mg_lua_run_task(vm, route, MG_LUA_ACCESS, l, &x->lua_task);
    x->lua_task.wake = on_plugin_io;
    x->lua_task.data = x;
    return access_done(x, r);
}

enum mg_lua_result mg_xplug_access_resume(struct mg_exchange *x)
{
    return access_done(x, mg_lua_task_resume(&x->lua_task));
}

void mg_xplug_abandon(struct mg_exchange *x)
{
    mg_lua_task_abandon(&x->lua_task);
}

bool mg_xplug_filtering(const struct mg_exchange *x)
{
    return x->route && x->resp_kind != MG_BODY_NONE && (x->plug_caps & MG_LUA_CAPS_BODY_FILTER);
}

int mg_xplug_body_filter(struct mg_exchange *x, struct mg_slice *d, bool eof)
{
    struct mg_lua_str out;
    if (mg_lua_body_filter(x->rt->lua, x->route->index, mg_xplug_ctx(x), d->p, d->len, eof, &out) !=
        0)
        return -1;
    if (out.p)
        *d = (struct mg_slice){out.p, out.len};
    return 0;
}

int mg_xplug_response(struct mg_exchange *x)
{
    struct mg_lua_ctx *l = mg_xplug_ctx(x);
    const char *addr = x->att.target->conf->address.text;
    l->status = x->status;
    l->resp_headers = lua_headers(&x->resp_hdrs);
    l->n_resp_headers = x->resp_hdrs.n;
    l->resp_header_stride = sizeof(struct mg_header);
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
    x->lua.balance_refused = 0;
    int i = mg_lua_balance(x->rt->lua, x->route->index, mg_xplug_ctx(x), ur->lua_targets,
                           uc->ntargets, raised);
    if (i < 0 && !*raised && !x->lua.balance_refused)
        mg_debug("balancer of route %s gave no usable target: round robin instead", x->route->name);
    return *raised ? -1 : i;
}

void mg_xplug_finish(struct mg_exchange *x, int status, uint64_t now_ns)
{
    if (mg_xplug_active(x, MG_LUA_LOG)) {
        struct mg_lua_ctx *l = mg_xplug_ctx(x);
        l->status = status;
        l->latency = (double)(now_ns - x->started_ns) / 1e9;
        /* Errors are logged only; a log phase that waits goes on detached. */
        if (!waits(x, MG_LUA_LOG))
            mg_lua_run(x->rt->lua, x->route->index, MG_LUA_LOG, l);
        else if (mg_lua_run_task(x->rt->lua, x->route->index, MG_LUA_LOG, l, &x->lua_task) ==
                 MG_LUA_WAIT)
            mg_lua_task_detach(&x->lua_task);
    }
    if (x->lua_ready)
        mg_lua_ctx_done(x->rt->lua, &x->lua);
}

void mg_xplug_send_respond(struct mg_exchange *x)
{
    const struct mg_lua_respond *r = &x->lua.respond;
    if (!x->req_done || !x->req_keepalive || x->ctx->draining)
        x->close_after = true;
    uint32_t n = 0;
    for (const struct mg_lua_edit *e = r->headers; e; e = e->next)
        n++;
    for (const struct mg_lua_edit *e = x->lua.resp_edits; e; e = e->next)
        n++;
    struct mg_header *fields = mg_arena_alloc(&x->arena, (n ? n : 1) * sizeof *fields);
    n = 0;
    const struct mg_lua_edit *lists[2] = {r->headers, x->lua.resp_edits};
    for (int l = 0; l < 2; l++)
        for (const struct mg_lua_edit *e = lists[l]; e; e = e->next)
            if (e->value.p)
                fields[n++] =
                    (struct mg_header){{e->name.p, e->name.len}, {e->value.p, e->value.len}, 0};
    struct mg_slice body = {r->body.p, r->body.p ? r->body.len : 0};
    x->down->send_response(x, r->status, fields, n, body, false);
    x->sent_status = r->status;
    x->resp_started = true;
    x->resp_done = true;
}
