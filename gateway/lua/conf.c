/*
 * Plugin `config:` values as Lua tables (conf.h).
 *
 * The YAML loader keeps every scalar as written plus whether it was quoted;
 * typing happens here, at the one place that needs it, so `rate: 100` reaches
 * a plugin as a number and `key: "100"` as a string. Integers beyond 2^53
 * would lose precision as Lua numbers, so they stay strings.
 */
#include "lua/conf.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool one_of(const char *s, const char *a, const char *b, const char *c)
{
    return strcmp(s, a) == 0 || strcmp(s, b) == 0 || strcmp(s, c) == 0;
}

static bool all_in(const char *s, const char *set)
{
    return *s && strspn(s, set) == strlen(s);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_decimal(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    size_t ints = strspn(p, "0123456789"), frac = 0;
    p += ints;
    if (*p == '.') {
        frac = strspn(p + 1, "0123456789");
        p += 1 + frac;
    }
    if (ints == 0 && frac == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += (*p == '-' || *p == '+');
        size_t exp = strspn(p, "0123456789");
        if (exp == 0)
            return false;
        p += exp;
    }
    return *p == '\0';
}

/* Pushes the typed value of a plain scalar. */
static void push_plain(lua_State *L, const char *s)
{
    const char *u = s + (*s == '-' || *s == '+');
    double sign = *s == '-' ? -1 : 1;

    if (!*s || one_of(s, "null", "Null", "NULL") || strcmp(s, "~") == 0) {
        lua_pushnil(L);
    } else if (one_of(s, "true", "True", "TRUE")) {
        lua_pushboolean(L, 1);
    } else if (one_of(s, "false", "False", "FALSE")) {
        lua_pushboolean(L, 0);
    } else if (one_of(u, ".inf", ".Inf", ".INF")) {
        lua_pushnumber(L, sign * HUGE_VAL);
    } else if (one_of(s, ".nan", ".NaN", ".NAN")) {
        lua_pushnumber(L, NAN);
    } else if (strncmp(s, "0x", 2) == 0 && all_in(s + 2, "0123456789abcdefABCDEF") &&
               strlen(s + 2) <= 13) {
        lua_pushnumber(L, (double)strtoull(s + 2, NULL, 16));
    } else if (strncmp(s, "0o", 2) == 0 && all_in(s + 2, "01234567") && strlen(s + 2) <= 17) {
        lua_pushnumber(L, (double)strtoull(s + 2, NULL, 8));
    } else if (is_decimal(s) && !(all_in(u, "0123456789") && strlen(u) > 15)) {
        lua_pushnumber(L, strtod(s, NULL));
    } else {
        lua_pushstring(L, s);
    }
}

MG_LJMP void mg_lua_push_conf(lua_State *L, const struct mg_conf_value *v)
{
    luaL_checkstack(L, 4, "config nested too deeply");
    if (!v) {
        lua_newtable(L);
        return;
    }
    switch (v->kind) {
    case MG_VAL_NULL:
        lua_pushnil(L);
        break;
    case MG_VAL_SCALAR:
        if (v->quoted)
            lua_pushstring(L, v->scalar);
        else
            push_plain(L, v->scalar);
        break;
    case MG_VAL_SEQ:
        lua_createtable(L, (int)v->n, 0);
        for (size_t i = 0; i < v->n; i++) {
            mg_lua_push_conf(L, &v->items[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case MG_VAL_MAP:
        lua_createtable(L, 0, (int)v->n);
        for (size_t i = 0; i < v->n; i++) {
            lua_pushstring(L, v->keys[i]);
            mg_lua_push_conf(L, &v->items[i]);
            lua_rawset(L, -3);
        }
        break;
    }
}

/* Adds positions[path] = "LINE:COL" for v and everything under it. */
static MG_LJMP void add_positions(lua_State *L, const struct mg_conf_value *v, const char *path)
{
    char sub[512];
    luaL_checkstack(L, 4, "config nested too deeply");
    lua_pushstring(L, path);
    lua_pushfstring(L, "%d:%d", v->line, v->col);
    lua_rawset(L, -3);
    for (size_t i = 0; i < v->n && (v->kind == MG_VAL_SEQ || v->kind == MG_VAL_MAP); i++) {
        if (v->kind == MG_VAL_SEQ)
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i + 1);
        else
            snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", v->keys[i]);
        add_positions(L, &v->items[i], sub);
    }
}

MG_LJMP void mg_lua_push_conf_positions(lua_State *L, const struct mg_conf_value *v)
{
    lua_newtable(L);
    if (v)
        add_positions(L, v, "");
}
