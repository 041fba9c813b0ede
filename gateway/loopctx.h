/*
 * A loop context: what the code running on one event-loop thread shares, below
 * whoever owns the thread: the loop, the current runtime, the free lists (read
 * buffers, write requests, arena blocks), the client connections and the drain
 * flag. A worker (worker.c) embeds one and installs its ops; client connections
 * (conn/), upstream pools (upstream/), exchanges (exchange/), the runtime and
 * plugins' HTTP calls (lua/http_client.c) receive it by pointer and report up
 * only through its ops, so none of them knows the worker. One thread uses it:
 * nothing here takes a lock.
 */
#ifndef MG_LOOPCTX_H
#define MG_LOOPCTX_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "net/wq.h"
#include "runtime-t.h"

struct mg_loopctx;
struct mg_conn;
struct mg_idem_client;

/* What the context's owner hears (worker.c sets them). */
struct mg_loopctx_ops {
    /* A client connection is gone (nconns counts it no more, its memory is
     * freed): an owner that drains may be done. */
    void (*conn_closed)(struct mg_loopctx *ctx);
};

struct mg_loopctx {
    uv_loop_t loop;
    int id;                             /* the worker's index: metrics' label, admission's waker */
    struct mg_runtime *rt;              /* the current runtime; the owner swaps it on reload */
    bool draining;                      /* stopping: nothing new is accepted or pooled */
    struct mg_conn *conns;              /* every client connection (conn.c keeps the list) */
    uint32_t nconns;                    /* ... and how many */
    uint64_t conn_serial;               /* upstream connection numbering, for logs */
    uint64_t rand_state;                /* xorshift state for request ids and jitter */
    struct mg_idem_client *idem_memory; /* this thread's handle on the memory store */
    void *free_bufs;                    /* free list of MG_RBUF_SIZE read buffers */
    uint32_t nfree_bufs;
    struct mg_wreq *free_wreqs;
    struct mg_arena_cache arena_cache; /* exchanges' arena blocks, kept for reuse */
    const struct mg_loopctx_ops *ops;
};

/* Zeroes ctx, creates its loop and seeds its random numbers. Returns 0 or a
 * negative UV_E* (from uv_loop_init). */
int mg_loopctx_init(struct mg_loopctx *ctx, int id, const struct mg_loopctx_ops *ops);
/* Frees the free lists (the owner has run and closed the loop). */
void mg_loopctx_clear(struct mg_loopctx *ctx);

/* A read buffer of MG_RBUF_SIZE bytes (aborts on OOM), and back. */
char *mg_loopctx_buf_get(struct mg_loopctx *ctx);
void mg_loopctx_buf_put(struct mg_loopctx *ctx, char *buf);

/* Pseudo-random numbers (xorshift64*): ids and jitter, not secrets. */
uint64_t mg_loopctx_random(struct mg_loopctx *ctx);

#endif
