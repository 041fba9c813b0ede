/*
 * The exchange's side of the Lua plugin runtime (DESIGN.md section 6): the ctx
 * plugins see, filled from the exchange when a first phase runs, and one call
 * per phase. Verdicts only: what a phase decided is the state machine's to act
 * on (exchange.c).
 */
#ifndef MG_EXCHANGE_PLUGINS_H
#define MG_EXCHANGE_PLUGINS_H

#include <stdbool.h>
#include <stdint.h>

#include "exchange/exchange-t.h"
#include "lua/vm.h"

struct mg_upstream_rt;

/* Does the exchange's route run plugins in this phase? */
bool mg_xplug_active(const struct mg_exchange *x, enum mg_lua_phase phase);
/* The ctx, its request half filled on first use (routes without plugins never
 * pay for it). */
struct mg_lua_ctx *mg_xplug_ctx(struct mg_exchange *x);
/* Bytes of request body the route's plugins want before access (P.body), 0:
 * none. While they are read, mg_xplug_body_data() keeps them in x->body_copy
 * (-1 and x->error = BODY_TOO_LARGE beyond the limit). */
size_t mg_xplug_body_max(const struct mg_exchange *x);
int mg_xplug_body_data(struct mg_exchange *x, const char *p, size_t n);
/* The access phase: OK, RESPONDED (x->lua.respond is set), ERROR, or WAIT: a
 * plugin waits; mg_exchange_run() follows when its I/O completed, then call
 * mg_xplug_access_resume() (WAIT again while it is not done). A finished phase
 * applies what it changed: the upstream (set_upstream), the body (set_body). */
enum mg_lua_result mg_xplug_access(struct mg_exchange *x);
enum mg_lua_result mg_xplug_access_resume(struct mg_exchange *x);
/* Drops a waiting access phase (client gone, deadline); no-op otherwise. */
void mg_xplug_abandon(struct mg_exchange *x);
/* Does P.body_filter apply to this response (a body is coming)? Then the
 * head goes out without a length and each piece passes through
 * mg_xplug_body_filter(): *d becomes what to send (possibly empty; arena
 * memory when changed). -1: a filter failed (logged). */
bool mg_xplug_filtering(const struct mg_exchange *x);
int mg_xplug_body_filter(struct mg_exchange *x, struct mg_slice *d, bool eof);
/* The response phase, once the final head is in x: 0, or -1 when it raised. */
int mg_xplug_response(struct mg_exchange *x);
/* The route's Lua balancer over ur's targets (available = offered for this
 * try). Returns an index, or -1 to fall back to the C choice (nil or an
 * unavailable target: counted as DESIGN.md says); *raised when it failed. */
int mg_xplug_balance(struct mg_exchange *x, struct mg_upstream_rt *ur, uint64_t now_ms,
                     bool *raised);
/* An access-phase plugin answered (ctx:respond): sends that response whole
 * (x->resp_done); no upstream is touched. */
void mg_xplug_send_respond(struct mg_exchange *x);
/* The log phase (errors are logged only) and the ctx's end. */
void mg_xplug_finish(struct mg_exchange *x, int status, uint64_t now_ns);

#endif
