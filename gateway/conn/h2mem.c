/*
 * nghttp2's memory for one session (see h2mem.h). Every block carries a
 * 16-byte header in front of it: its size class, or its size when it is
 * larger than the largest class (then it is plain malloc memory, freed at
 * once). Freed blocks of a class wait on the session's list of that class,
 * at most H2MEM_KEEP of them, for the next allocation of that class.
 *
 * Under AddressSanitizer nothing is kept (every free is a free), so that a
 * use after free inside nghttp2 is still caught.
 */
#include "conn/h2mem.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define H2MEM_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2MEM_CACHE 0
#endif
#endif
#ifndef H2MEM_CACHE
#define H2MEM_CACHE 1
#endif

#define HDR 16 /* keeps the alignment of malloc (16 on x86-64 and arm64) */

struct block {
    size_t size; /* the usable size: a class's, or what was asked for (big) */
    size_t cls;  /* index in class_size, or H2MEM_CLASSES for a big block */
};

struct free_block {
    struct free_block *next;
};

_Static_assert(sizeof(struct block) <= HDR, "block header");
_Static_assert(_Alignof(max_align_t) <= HDR, "blocks keep malloc's alignment");

static const size_t class_size[H2MEM_CLASSES] = {64, 128, 256, 512, 1024};

static size_t class_of(size_t size)
{
    for (size_t c = 0; c < H2MEM_CLASSES; c++)
        if (size <= class_size[c])
            return c;
    return H2MEM_CLASSES;
}

static void *h2_malloc(size_t size, void *user)
{
    struct mg_h2mem *m = user;
    size_t c = class_of(size);
    struct block *b;
    if (c < H2MEM_CLASSES && m->free[c]) {
        struct free_block *f = m->free[c];
        m->free[c] = f->next;
        m->nfree[c]--;
        b = (struct block *)((char *)f - HDR);
        return (char *)b + HDR;
    }
    if (size > SIZE_MAX - HDR)
        return NULL;
    /* Without the cache a block is exactly what was asked for, so that ASan
     * sees an overflow into what would be the class's slack. */
    size_t usable = H2MEM_CACHE && c < H2MEM_CLASSES ? class_size[c] : size;
    if (!(b = malloc(HDR + usable)))
        return NULL; /* nghttp2 reports NGHTTP2_ERR_NOMEM */
    b->size = usable;
    b->cls = c;
    return (char *)b + HDR;
}

static void h2_free(void *p, void *user)
{
    if (!p)
        return;
    struct mg_h2mem *m = user;
    struct block *b = (struct block *)((char *)p - HDR);
    size_t c = b->cls;
    if (!H2MEM_CACHE || c >= H2MEM_CLASSES || m->nfree[c] >= H2MEM_KEEP) {
        free(b);
        return;
    }
    struct free_block *f = p;
    f->next = m->free[c];
    m->free[c] = f;
    m->nfree[c]++;
}

static void *h2_calloc(size_t n, size_t size, void *user)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = h2_malloc(n * size, user);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *h2_realloc(void *p, size_t size, void *user)
{
    if (!p)
        return h2_malloc(size, user);
    if (size == 0) {
        h2_free(p, user);
        return NULL;
    }
    struct block *b = (struct block *)((char *)p - HDR);
    if (size <= b->size)
        return p;
    void *q = h2_malloc(size, user);
    if (!q)
        return NULL;
    memcpy(q, p, b->size);
    h2_free(p, user);
    return q;
}

void mg_h2mem_init(struct mg_h2mem *m)
{
    memset(m, 0, sizeof *m);
    m->mem = (nghttp2_mem){m, h2_malloc, h2_free, h2_calloc, h2_realloc};
}

void mg_h2mem_release(struct mg_h2mem *m)
{
    for (size_t c = 0; c < H2MEM_CLASSES; c++) {
        while (m->free[c]) {
            struct free_block *f = m->free[c];
            m->free[c] = f->next;
            free((char *)f - HDR);
        }
        m->nfree[c] = 0;
    }
}
