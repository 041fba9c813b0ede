/*
 * Plugin header edits as field lines (see edits.h).
 */
#include "lua/edits.h"

#include <string.h>

#include "core/arena.h"
#include "http/writer.h"

bool mg_lua_edits_name(const struct mg_lua_edit *e, struct mg_slice name)
{
    for (; e; e = e->next)                           /* an add keeps the originals beside it */
        if (!e->append && e->name.len == name.len && /* most differ in length: no call */
            mg_slice_ieq((struct mg_slice){e->name.p, e->name.len}, name))
            return true;
    return false;
}

size_t mg_lua_edits_size(const struct mg_lua_edit *e)
{
    size_t n = 0;
    for (; e; e = e->next)
        n += MG_HTTP_FIELD_SIZE(e->name.len, e->value.p ? e->value.len : 0);
    return n;
}

char *mg_lua_edits_put(char *o, const struct mg_lua_edit *e)
{
    for (; e; e = e->next)
        if (e->value.p)
            o = mg_http_put_field(o, (struct mg_slice){e->name.p, e->name.len},
                                  (struct mg_slice){e->value.p, e->value.len});
    return o;
}

struct mg_slice mg_lua_target(const struct mg_lua_ctx *c, struct mg_slice t)
{
    if (!c || (!c->new_path.p && !c->query_set))
        return t;
    const char *q = memchr(t.p, '?', t.len);
    struct mg_slice path = c->new_path.p ? (struct mg_slice){c->new_path.p, c->new_path.len}
                           : q           ? (struct mg_slice){t.p, (size_t)(q - t.p)}
                                         : t;
    struct mg_slice query = c->query_set ? (struct mg_slice){c->new_query.p, c->new_query.len}
                            : q          ? (struct mg_slice){q + 1, (size_t)(t.p + t.len - q - 1)}
                                         : (struct mg_slice){NULL, 0};
    char *o = mg_arena_alloc(c->arena, path.len + 1 + query.len);
    memcpy(o, path.p, path.len);
    size_t n = path.len;
    if (query.p) {
        o[n++] = '?';
        memcpy(o + n, query.p, query.len);
        n += query.len;
    }
    return (struct mg_slice){o, n};
}
