/*
 * A worker's runtime (see runtime.c and runtime-t.h).
 */
#ifndef MG_RUNTIME_H
#define MG_RUNTIME_H

#include <uv.h>

#include "runtime-t.h"

struct mg_loopctx;

/* A runtime for `cfg` on ctx's loop, held once (by the worker that makes it
 * current). Takes its own references to cfg and metrics; takes over lua and
 * lua_metrics (either may be NULL). Aborts on OOM. */
struct mg_runtime *mg_runtime_new(struct mg_loopctx *ctx, struct mg_config *cfg,
                                  struct mg_metrics *metrics, struct mg_lua *lua,
                                  struct mg_lua_metrics *lua_metrics);
/* An exchange starting takes the loop's current runtime (ctx->rt); ending, it
 * gives it back. The last release frees it. */
struct mg_runtime *mg_runtime_hold(struct mg_loopctx *ctx);
void mg_runtime_release(struct mg_loopctx *ctx, struct mg_runtime *rt);
/* Idle connections to targets that stay in `to` move to its pools (a reload
 * under load costs no reconnects). */
void mg_runtime_carry_over(struct mg_runtime *from, struct mg_runtime *to);
/* Closes every idle pooled connection (drain, retire). */
void mg_runtime_close_idle(struct mg_runtime *rt);
/* A reload replaced it: its idle pooled connections close now, leased ones
 * when their exchange ends; the worker's hold is released. */
void mg_runtime_retire(struct mg_runtime *rt);

#endif
