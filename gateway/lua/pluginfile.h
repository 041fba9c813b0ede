/*
 * Plugin sources on disk: which file NAME.lua is (plugin_path dirs in order,
 * then the bundled dir) and its bytes. Used when a VM loads its plugins (at
 * start, -t and reload), never on the request path.
 */
#ifndef MG_LUA_PLUGINFILE_H
#define MG_LUA_PLUGINFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config-t.h"

/* Finds NAME.lua, the bundled dir last (not at all when `user_only`).
 * Returns 0 with the path in path[cap], or -1. */
int mg_lua_find_plugin(const struct mg_config *cfg, const char *name, bool user_only, char *path,
                       size_t cap);
/* "not found (searched DIR, ..., BUNDLED)" into msg[cap]. */
void mg_lua_not_found_message(const struct mg_config *cfg, char *msg, size_t cap);
/* A whole file, malloc'd (*len bytes); NULL with errno set on failure. */
char *mg_lua_read_file(const char *path, size_t *len);

#endif
