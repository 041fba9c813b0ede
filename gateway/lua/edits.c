/*
 * Plugin header edits as field lines (see edits.h).
 */
#include "lua/edits.h"

#include "http/writer.h"

bool mg_lua_edits_name(const struct mg_lua_edit *e, struct mg_slice name)
{
    for (; e; e = e->next)
        if (mg_slice_ieq((struct mg_slice){e->name.p, e->name.len}, name))
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
