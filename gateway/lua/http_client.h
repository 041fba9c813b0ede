/*
 * gw.http.request (DESIGN.md section 10.3): an HTTP/1.1 client call as an
 * operation of the waiting task (task.h), on the worker's loop.
 */
#ifndef MG_LUA_HTTP_CLIENT_H
#define MG_LUA_HTTP_CLIENT_H

struct lua_State;
struct mg_lua;
struct mg_loopctx;
struct mg_upstream_rt;

/* lio.http(kind, target, request, timeout_s, max_body) where kind is
 * "upstream" (target: an upstream's name; one of its targets in turn) or
 * "host" (target: "IP:port" or "localhost:port"), request the whole request
 * bytes. Starts the call (the Lua side then waits), or returns nil, message
 * when it cannot start. The results, once taken: status, headers (a table
 * lowercased name -> {values}), body; or nil, message. */
int mg_lua_http_start(struct lua_State *L);

/* Calls to an upstream lease connections from the worker's pools of the VM's
 * runtime (`ups`: one per cfg->upstreams entry), so the upstream's TLS and
 * keep-alive apply. Both outlive the VM. NULL vm is ignored. */
void mg_lua_http_bind(struct mg_lua *vm, struct mg_loopctx *ctx, struct mg_upstream_rt *ups);

#endif
