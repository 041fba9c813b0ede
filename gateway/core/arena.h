/*
 * Per-exchange bump allocator. Everything an exchange allocates (the copied request
 * and response heads, header tables, the heads it writes) comes from its arena and
 * is released at once when the exchange ends. Nothing that outlives the exchange
 * (pooled connections, stats, config) may come from here.
 *
 * The first block is kept across resets so a keep-alive connection serving many
 * requests allocates nothing after its first one. With MG_ARENA_DEBUG (forced under
 * ASan) every allocation is its own malloc so the sanitizer sees overflows.
 */
#ifndef MG_ARENA_H
#define MG_ARENA_H

#include <stddef.h>

struct mg_arena_block;

typedef void (*mg_arena_cleanup_cb)(void *data);

struct mg_arena_cleanup {
    struct mg_arena_cleanup *next;
    mg_arena_cleanup_cb fn;
    void *data;
};

/* Standard blocks an owner's arenas share (a worker's: one thread), so an
 * arena can give its block back while its connection idles: 10,000 idle
 * keep-alive connections then hold no block each. */
struct mg_arena_cache {
    struct mg_arena_block *free;
    unsigned n, max;
};

struct mg_arena {
    struct mg_arena_block *blocks;     /* newest first; the last one is kept on reset */
    char *ptr, *end;                   /* free space in the newest block */
    struct mg_arena_cleanup *cleanups; /* LIFO */
    struct mg_arena_cache *cache;      /* where standard blocks come from and go, or NULL */
};

#define MG_ARENA_BLOCK_SIZE (32 * 1024)

/* cache may be NULL: blocks are then malloc'd and freed. */
void mg_arena_init(struct mg_arena *a, struct mg_arena_cache *cache);
/* After a reset: gives the kept block back to the cache (or frees it). */
void mg_arena_shed(struct mg_arena *a);
/* Frees the cached blocks. */
void mg_arena_cache_clear(struct mg_arena_cache *c);
/* Never returns NULL: small allocations abort on OOM (sizes from input are checked
 * against config limits before they get here). Memory is 16-byte aligned. */
void *mg_arena_alloc(struct mg_arena *a, size_t size);
void *mg_arena_calloc(struct mg_arena *a, size_t size);
char *mg_arena_strndup(struct mg_arena *a, const char *s, size_t n);
/* Appends p[0..n) to the growing arena buffer *buf of *len bytes in *cap
 * (doubling from 2 KiB, never past limit). Returns 0, or -1 when it would pass
 * limit (nothing appended). */
int mg_arena_append(struct mg_arena *a, char **buf, size_t *len, size_t *cap, const char *p,
                    size_t n, size_t limit);
/* Registers fn(data) to run at reset/destroy, last registered first. */
void mg_arena_defer(struct mg_arena *a, mg_arena_cleanup_cb fn, void *data);
/* Runs cleanups and frees all blocks but the first. */
void mg_arena_reset(struct mg_arena *a);
/* Runs cleanups and frees everything. */
void mg_arena_destroy(struct mg_arena *a);

#endif
