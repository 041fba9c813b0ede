/*
 * The per-exchange arena: a list of blocks, bump allocation in the newest one.
 * Invariant: a->ptr..a->end is free space inside a->blocks (or both NULL).
 */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct mg_arena_block {
    struct mg_arena_block *next;
    size_t size;
    _Alignas(16) char data[];
};

#define ALIGN16(n) (((n) + 15u) & ~(size_t)15u)

void mg_arena_init(struct mg_arena *a, struct mg_arena_cache *cache)
{
    memset(a, 0, sizeof *a);
#ifndef MG_ARENA_DEBUG
    a->cache = cache;
#else
    (void)cache; /* every allocation is its own malloc: no sharing to hide a bug */
#endif
}

static struct mg_arena_block *new_block(struct mg_arena *a, size_t size)
{
    struct mg_arena_cache *c = a->cache;
    if (c && c->free && size == MG_ARENA_BLOCK_SIZE) {
        struct mg_arena_block *b = c->free;
        c->free = b->next;
        c->n--;
        return b;
    }
    struct mg_arena_block *b = malloc(sizeof *b + size);
    if (!b)
        mg_fatal("out of memory (arena block of %zu bytes)", size);
    b->size = size;
    return b;
}

void *mg_arena_alloc(struct mg_arena *a, size_t size)
{
    size = ALIGN16(size ? size : 1);
#ifndef MG_ARENA_DEBUG
    if ((size_t)(a->end - a->ptr) >= size) {
        void *p = a->ptr;
        a->ptr += size;
        return p;
    }
    size_t bsize = size > MG_ARENA_BLOCK_SIZE / 4 ? size : MG_ARENA_BLOCK_SIZE;
    struct mg_arena_block *b = new_block(a, bsize);
    if (bsize == size && a->blocks) {
        /* A big one-off allocation: keep bumping in the current block. */
        b->next = a->blocks->next;
        a->blocks->next = b;
        return b->data;
    }
    b->next = a->blocks;
    a->blocks = b;
    a->ptr = b->data + size;
    a->end = b->data + bsize;
    return b->data;
#else
    struct mg_arena_block *b = new_block(a, size);
    b->next = a->blocks;
    a->blocks = b;
    return b->data;
#endif
}

void *mg_arena_calloc(struct mg_arena *a, size_t size)
{
    void *p = mg_arena_alloc(a, size);
    memset(p, 0, size);
    return p;
}

char *mg_arena_strndup(struct mg_arena *a, const char *s, size_t n)
{
    char *p = mg_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void mg_arena_defer(struct mg_arena *a, mg_arena_cleanup_cb fn, void *data)
{
    struct mg_arena_cleanup *c = mg_arena_alloc(a, sizeof *c);
    c->fn = fn;
    c->data = data;
    c->next = a->cleanups;
    a->cleanups = c;
}

static void run_cleanups(struct mg_arena *a)
{
    while (a->cleanups) {
        struct mg_arena_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->data);
    }
}

static void free_block(struct mg_arena *a, struct mg_arena_block *b)
{
    struct mg_arena_cache *c = a->cache;
    if (c && c->n < c->max && b->size == MG_ARENA_BLOCK_SIZE) {
        b->next = c->free;
        c->free = b;
        c->n++;
        return;
    }
    free(b);
}

void mg_arena_reset(struct mg_arena *a)
{
    run_cleanups(a);
#ifndef MG_ARENA_DEBUG
    if (!a->blocks)
        return;
    /* Keep the oldest block when it is a standard one: the one a typical request
     * fits in, so keep-alive requests after the first allocate nothing. */
    struct mg_arena_block *keep = NULL;
    while (a->blocks) {
        struct mg_arena_block *b = a->blocks;
        a->blocks = b->next;
        if (!a->blocks && b->size == MG_ARENA_BLOCK_SIZE)
            keep = b;
        else
            free_block(a, b);
    }
    a->blocks = keep;
    if (keep) {
        keep->next = NULL;
        a->ptr = keep->data;
        a->end = keep->data + keep->size;
    } else {
        a->ptr = a->end = NULL;
    }
#else
    mg_arena_destroy(a);
#endif
}

void mg_arena_destroy(struct mg_arena *a)
{
    run_cleanups(a);
    while (a->blocks) {
        struct mg_arena_block *b = a->blocks;
        a->blocks = b->next;
        free_block(a, b);
    }
    a->ptr = a->end = NULL;
}

void mg_arena_shed(struct mg_arena *a)
{
    MG_ASSERT(!a->cleanups && (!a->blocks || !a->blocks->next));
    if (a->blocks)
        free_block(a, a->blocks);
    a->blocks = NULL;
    a->ptr = a->end = NULL;
}

void mg_arena_cache_clear(struct mg_arena_cache *c)
{
    while (c->free) {
        struct mg_arena_block *b = c->free;
        c->free = b->next;
        free(b);
    }
    c->n = 0;
}

int mg_arena_append(struct mg_arena *a, char **buf, size_t *len, size_t *cap, const char *p,
                    size_t n, size_t limit)
{
    if (n == 0)
        return 0; /* *buf may still be NULL (an empty h2 cookie crumb first) */
    if (*len + n > *cap) {
        if (*len + n > limit)
            return -1;
        size_t ncap = *cap ? *cap * 2 : 2048;
        while (ncap < *len + n)
            ncap *= 2;
        if (ncap > limit)
            ncap = limit;
        char *nb = mg_arena_alloc(a, ncap);
        if (*len)
            memcpy(nb, *buf, *len);
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}
