/*
 * Loop contexts (see loopctx.h): the free lists and random numbers that the
 * layers on one loop share.
 */
#include "loopctx.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"

/* Buffers kept for reuse per loop; beyond this, idle memory goes back to libc. */
#define MG_MAX_FREE_BUFS 256

struct free_buf {
    struct free_buf *next;
};

int mg_loopctx_init(struct mg_loopctx *ctx, int id, const struct mg_loopctx_ops *ops)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->id = id;
    ctx->ops = ops;
    ctx->arena_cache.max = MG_MAX_FREE_BUFS;
    if (getrandom(&ctx->rand_state, sizeof ctx->rand_state, 0) != sizeof ctx->rand_state ||
        ctx->rand_state == 0)
        ctx->rand_state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)id;
    return uv_loop_init(&ctx->loop);
}

void mg_loopctx_clear(struct mg_loopctx *ctx)
{
    while (ctx->free_bufs) {
        struct free_buf *b = ctx->free_bufs;
        ctx->free_bufs = b->next;
        free(b);
    }
    ctx->nfree_bufs = 0;
    mg_wreq_free_list(&ctx->free_wreqs);
    mg_arena_cache_clear(&ctx->arena_cache);
}

char *mg_loopctx_buf_get(struct mg_loopctx *ctx)
{
    struct free_buf *b = ctx->free_bufs;
    if (b) {
        ctx->free_bufs = b->next;
        ctx->nfree_bufs--;
        return (char *)b;
    }
    char *p = malloc(MG_RBUF_SIZE);
    if (!p)
        mg_fatal("out of memory (read buffer)");
    return p;
}

void mg_loopctx_buf_put(struct mg_loopctx *ctx, char *buf)
{
    if (ctx->nfree_bufs >= MG_MAX_FREE_BUFS) {
        free(buf);
        return;
    }
    struct free_buf *b = (struct free_buf *)buf;
    b->next = ctx->free_bufs;
    ctx->free_bufs = b;
    ctx->nfree_bufs++;
}

uint64_t mg_loopctx_random(struct mg_loopctx *ctx)
{
    /* xorshift64*: request ids and backoff jitter need spread, not secrecy. */
    uint64_t x = ctx->rand_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ctx->rand_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
