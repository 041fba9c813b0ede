/*
 * gw.redis (DESIGN.md section 10.3): commands over the VM's own async hiredis
 * connection to the top-level `redis` (its master found and followed through
 * the sentinels in sentinel mode), as operations of the waiting task (task.h). Errors are returned,
 * never raised; while Redis is down a call answers at once ("redis unavailable") and a connect is
 * tried again at most every MG_LUA_REDIS_RETRY_MS; a call that gets no answer within redis.timeout
 * answers "timeout".
 */
#ifndef MG_LUA_REDIS_H
#define MG_LUA_REDIS_H

#define MG_LUA_REDIS_RETRY_MS 200

struct lua_State;
struct mg_lua;

/* lio.redis(arg...) -> true (started; the Lua side waits) | nil, message.
 * The results, once taken: the reply as Lua values, or nil, message. */
int mg_lua_redis_call(struct lua_State *L);
/* lio.sha1(s) -> hex digest (EVALSHA). */
int mg_lua_redis_sha1(struct lua_State *L);
/* Closes the VM's connection (pending calls answer "connection lost"). */
void mg_lua_redis_close(struct mg_lua *vm);

#endif
