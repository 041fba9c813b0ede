/*
 * Header field helpers (see message.h). Everything here works on slices and
 * allocates nothing.
 */
#include "http/message.h"

#include <string.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool mg_slice_ieq(struct mg_slice a, struct mg_slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    return true;
}

int mg_headers_find(const struct mg_headers *h, struct mg_slice name)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (mg_slice_ieq(h->v[i].name, name))
            return (int)i;
    return -1;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool mg_token_list_has(struct mg_slice value, struct mg_slice token)
{
    size_t i = 0;
    while (i < value.len) {
        while (i < value.len && (is_ows(value.p[i]) || value.p[i] == ','))
            i++;
        size_t start = i;
        while (i < value.len && value.p[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(value.p[end - 1]))
            end--;
        if (end > start && mg_slice_ieq((struct mg_slice){value.p + start, end - start}, token))
            return true;
    }
    return false;
}

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool mg_field_name_valid(struct mg_slice name)
{
    if (name.len == 0)
        return false;
    for (size_t i = 0; i < name.len; i++)
        if (!is_tchar((unsigned char)name.p[i]))
            return false;
    return true;
}

static bool is_fixed_hop_by_hop(struct mg_slice name)
{
    /* Dispatch on length first: most fields are none of these, and say so in one
     * comparison instead of seven. */
    switch (name.len) {
    case 2:
        return mg_slice_ieq(name, MG_SLICE_LIT("te"));
    case 7:
        return mg_slice_ieq(name, MG_SLICE_LIT("trailer")) ||
               mg_slice_ieq(name, MG_SLICE_LIT("upgrade"));
    case 10:
        return mg_slice_ieq(name, MG_SLICE_LIT("connection")) ||
               mg_slice_ieq(name, MG_SLICE_LIT("keep-alive"));
    case 16:
        return mg_slice_ieq(name, MG_SLICE_LIT("proxy-connection"));
    case 17:
        return mg_slice_ieq(name, MG_SLICE_LIT("transfer-encoding"));
    default:
        return false;
    }
}

/* Does the Connection value name anything beyond the usual options, whose
 * namesakes (Keep-Alive, Upgrade) are hop-by-hop anyway? */
static bool names_other_fields(struct mg_slice list)
{
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.p[i] == ' ' || list.p[i] == '\t' || list.p[i] == ','))
            i++;
        size_t start = i;
        while (i < list.len && list.p[i] != ',' && list.p[i] != ' ' && list.p[i] != '\t')
            i++;
        struct mg_slice tok = {list.p + start, i - start};
        if (tok.len && !mg_slice_ieq(tok, MG_SLICE_LIT("keep-alive")) &&
            !mg_slice_ieq(tok, MG_SLICE_LIT("close")) && !mg_slice_ieq(tok, MG_SLICE_LIT("upgrade")))
            return true;
    }
    return false;
}

static void mark_named_by(struct mg_headers *h, struct mg_slice list)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (mg_token_list_has(list, h->v[i].name))
            h->v[i].flags |= MG_HDR_HOP;
}

void mg_headers_mark_hop_by_hop(struct mg_headers *h)
{
    static const struct mg_slice connection = MG_SLICE_LIT("connection");
    for (uint32_t i = 0; i < h->n; i++) {
        if (!is_fixed_hop_by_hop(h->v[i].name))
            continue;
        h->v[i].flags |= MG_HDR_HOP;
        if (mg_slice_ieq(h->v[i].name, connection) && names_other_fields(h->v[i].value))
            mark_named_by(h, h->v[i].value);
    }
}
