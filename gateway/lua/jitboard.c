/*
 * The JIT report board (jitboard.h). Workers publish rarely (when a plugin's
 * abort count changes, at most once a second each, see jitreport.lua) and the
 * admin reads on a /status request: one mutex is enough.
 */
#include "lua/jitboard.h"

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "obs/textbuf.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *reports[MG_JITBOARD_WORKERS]; /* NULL: nothing to show */

int mg_jitboard_publish(unsigned worker, const char *json, size_t len)
{
    if (worker >= MG_JITBOARD_WORKERS || len > MG_JITBOARD_MAX)
        return -1;
    char *copy = NULL;
    /* "{}": no aborts (a fresh VM after a reload): show nothing */
    if (len > 2) {
        copy = malloc(len + 1);
        if (!copy)
            return -1;
        memcpy(copy, json, len);
        copy[len] = 0;
    }
    pthread_mutex_lock(&lock);
    char *old = reports[worker];
    reports[worker] = copy;
    pthread_mutex_unlock(&lock);
    free(old);
    return 0;
}

void mg_jitboard_render(void *ud, struct mg_textbuf *b)
{
    (void)ud;
    bool first = true;
    mg_textbuf_putc(b, '[');
    pthread_mutex_lock(&lock);
    for (unsigned w = 0; w < MG_JITBOARD_WORKERS; w++) {
        if (!reports[w])
            continue;
        mg_textbuf_printf(b, "%s{\"worker\":%u,\"plugins\":", first ? "" : ",", w);
        mg_textbuf_puts(b, reports[w]);
        mg_textbuf_putc(b, '}');
        first = false;
    }
    pthread_mutex_unlock(&lock);
    mg_textbuf_putc(b, ']');
}

void mg_jitboard_clear(void)
{
    pthread_mutex_lock(&lock);
    for (unsigned w = 0; w < MG_JITBOARD_WORKERS; w++) {
        free(reports[w]);
        reports[w] = NULL;
    }
    pthread_mutex_unlock(&lock);
}

/* jit_publish(worker, json) -> true | false */
static int l_publish(lua_State *L)
{
    lua_Integer w = luaL_checkinteger(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    lua_pushboolean(L, w >= 0 && mg_jitboard_publish((unsigned)w, s, n) == 0);
    return 1;
}

void mg_lua_jitboard_push(lua_State *L)
{
    lua_pushcfunction(L, l_publish);
    lua_setfield(L, -2, "jit_publish");
}
