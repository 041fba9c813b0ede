/*
 * gw.shared_dict's C functions (shdict.c), opened with the waiting side.
 */
#ifndef MG_LUA_SHDICT_H
#define MG_LUA_SHDICT_H

struct lua_State;
struct mg_lua;

/* Acquires the config's dictionaries for the VM and opens "moongate.shdict". */
void mg_lua_shdict_open(struct lua_State *L, struct mg_lua *vm);
/* Releases them (mg_lua_free). */
void mg_lua_shdict_close(struct mg_lua *vm);

#endif
