/*
 * JIT trace aborts of plugins, per worker, for the admin's /status (issue
 * 18): each worker's plugin VM publishes its report (lua/moongate/
 * jitreport.lua, as a JSON object) here; the admin thread renders the latest
 * one of every worker. Process-wide, mutex-protected; bounded in size.
 */
#ifndef MG_LUA_JITBOARD_H
#define MG_LUA_JITBOARD_H

#include <stddef.h>

struct lua_State;
struct mg_textbuf;

#define MG_JITBOARD_WORKERS 256  /* workers beyond are not shown */
#define MG_JITBOARD_MAX     4096 /* bytes of one worker's report */

/* Replaces worker's report with `json` (an object; longer than
 * MG_JITBOARD_MAX: refused, returns -1). Any thread. */
int mg_jitboard_publish(unsigned worker, const char *json, size_t len);

/* Appends [{"worker":N,"plugins":{...}}, ...] for the workers that published
 * a non-empty report. Any thread. */
void mg_jitboard_render(void *ud, struct mg_textbuf *b);

/* Forgets every report (tests, shutdown). */
void mg_jitboard_clear(void);

/* Adds jit_publish(worker, json) to the table on top of L's stack. */
void mg_lua_jitboard_push(struct lua_State *L);

#endif
