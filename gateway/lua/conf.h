/*
 * Plugin `config:` values (struct mg_conf_value trees) as Lua tables.
 */
#ifndef MG_LUA_CONF_H
#define MG_LUA_CONF_H

#include "config/config-t.h"

struct lua_State;

/* Marks a function that may longjmp (raise a Lua error, e.g. on out of
 * memory): call it only inside a protected call (STYLE convention 11). */
#define MG_LJMP

/* Pushes `v` as a Lua value: a map becomes a table with string keys, a
 * sequence an array, a quoted scalar a string, a plain scalar a number,
 * boolean or nil when it reads as one in YAML 1.2's core schema (42, -1.5,
 * 0x1f, 0o17, 1e3, .inf, .nan, true/True/TRUE, false, null/~), else a
 * string. NULL pushes an empty table (every plugin gets a conf table). */
MG_LJMP void mg_lua_push_conf(struct lua_State *L, const struct mg_conf_value *v);

/* Pushes a table of where each value of `v` is written: positions[PATH] =
 * "LINE:COL", PATH being "" for v itself, then "key", "key.sub", "list[1]"
 * (what a P.schema error names). */
MG_LJMP void mg_lua_push_conf_positions(struct lua_State *L, const struct mg_conf_value *v);

#endif
