/*
 * Header field lists (see fields.h). The list starts with room for 32 fields
 * and doubles in the arena; most heads never grow it.
 */
#include "http/fields.h"

#include <string.h>

void mg_fields_init(struct mg_arena *a, struct mg_headers *h)
{
    h->n = 0;
    h->cap = 32;
    h->v = mg_arena_alloc(a, sizeof(struct mg_header) * h->cap);
}

int mg_fields_name(struct mg_arena *a, struct mg_headers *h, const char *p, size_t len)
{
    if (h->n > 0 && h->v[h->n - 1].value.p == NULL) {
        /* A name delivered in two pieces: they are contiguous in our copy. */
        h->v[h->n - 1].name.len += len;
        return 0;
    }
    if (h->n == MG_MAX_FIELDS)
        return -1;
    if (h->n == h->cap) {
        struct mg_header *v = mg_arena_alloc(a, sizeof *v * h->cap * 2);
        memcpy(v, h->v, sizeof *v * h->n);
        h->v = v;
        h->cap *= 2;
    }
    h->v[h->n++] = (struct mg_header){{p, len}, {NULL, 0}, 0};
    return 0;
}

int mg_fields_value(struct mg_headers *h, const char *p, size_t len)
{
    if (h->n == 0)
        return -1;
    struct mg_header *f = &h->v[h->n - 1];
    if (f->value.p)
        f->value.len += len;
    else
        f->value = (struct mg_slice){p, len};
    return 0;
}

void mg_fields_value_done(struct mg_headers *h)
{
    struct mg_header *f = &h->v[h->n - 1];
    if (!f->value.p)
        f->value = (struct mg_slice){f->name.p + f->name.len, 0};
}
