/*
 * Read buffers that writes may point into, and batched write queues.
 *
 * Bodies are never copied: a write to one side points into the read buffer of
 * the other, which is "pinned" (not rewound or reused) until those writes
 * complete. The pin count is also the backpressure: a side stops reading when
 * its buffer is full of pinned bytes.
 *
 * A write queue assembles iovecs (heads from an arena, bodies from a pinned
 * read buffer, short framing lines copied into the request's scratch) and sends them with
 * one try_write, falling back to an asynchronous write for the rest. Writes
 * complete in order; a queue with a write in flight queues the next one behind
 * it. Write requests come from a per-worker free list.
 */
#ifndef MG_NET_WQ_H
#define MG_NET_WQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/transport.h"

#define MG_WREQ_MAX_BUFS 24
/* The longest framing line mg_wq_add_framed copies (a chunk-size line: 16 hex
 * digits and CRLF). */
#define MG_WQ_FRAME_MAX 20
/* Read buffers are this big (the worker's free list hands them out). */
#define MG_RBUF_SIZE (32 * 1024)

struct mg_rbuf {
    char *buf;         /* MG_BUF_SIZE bytes from the worker, or NULL when idle */
    size_t start, end; /* unparsed bytes are buf[start..end) */
    uint32_t pins;     /* writes in flight pointing into buf */
    /* Pins dropped to 0 (from a write completion): the owner may reuse the
     * buffer, free itself, or go on. */
    void (*on_unpinned)(struct mg_rbuf *b);
};

/* Room to read into at the end of b->buf (which must be set): what is
 * consumed is moved out first when no write points into it. */
void mg_rbuf_room(struct mg_rbuf *b, uv_buf_t *out);
/* Whether reading can go on: no buffer yet, free space, or space to make. */
bool mg_rbuf_has_room(const struct mg_rbuf *b);

struct mg_wq;

struct mg_wreq {
    uv_write_t req;
    struct mg_wreq *next_free;
    struct mg_wq *q;
    struct mg_rbuf *pin; /* the read buffer its bytes point into, or NULL */
    unsigned nbufs, nscratch;
    uv_buf_t bufs[MG_WREQ_MAX_BUFS];
    char scratch[MG_WREQ_MAX_BUFS / 3 + 1][MG_WQ_FRAME_MAX];
};

struct mg_wq {
    struct mg_transport *tr;
    struct mg_wreq *out;        /* being assembled, or NULL */
    struct mg_wreq **free_list; /* the worker's free write requests */
    uint32_t pending;           /* asynchronous writes in flight */
    int error;                  /* a write failed: every later flush fails with it */
    /* An asynchronous write completed (status < 0: it failed; UV_ECANCELED:
     * the transport closed). Runs after the write's pin was dropped. */
    void (*on_written)(struct mg_wq *q, int status);
    void *owner;
};

void mg_wq_init(struct mg_wq *q, struct mg_transport *tr, struct mg_wreq **free_list,
                void (*on_written)(struct mg_wq *q, int status), void *owner);
/* Queues p[0..len) (len > 0). `pin`: the read buffer holding the bytes, or NULL
 * for memory that outlives the write (arena, static, a held record). A request
 * never pins two buffers: a different pin flushes what is assembled first. */
void mg_wq_add(struct mg_wq *q, const void *p, size_t len, struct mg_rbuf *pin);
/* Queues a copy of `head` (head_len <= MG_WQ_FRAME_MAX), then p[0..len) as
 * mg_wq_add does, then the static string `tail`, in one write request: the
 * codec's framing around a piece of body (HTTP/1.1: a chunk's size line and
 * CRLF), so the bytes it frames are never copied. */
void mg_wq_add_framed(struct mg_wq *q, const char *head, size_t head_len, const void *p, size_t len,
                      const char *tail, struct mg_rbuf *pin);
/* Sends what is assembled. Returns 1 when it was all written at once, 0 when
 * (some of) it is in flight (on_written follows), or a negative UV_E* (nothing
 * in flight from it; the bytes are dropped). 1 with nothing assembled too. */
int mg_wq_flush(struct mg_wq *q);
/* Drops what is assembled (never what is in flight). Returns its byte count. */
size_t mg_wq_discard(struct mg_wq *q);

static inline bool mg_wq_idle(const struct mg_wq *q)
{
    return !q->out && q->pending == 0;
}

/* Frees a worker's free list (at exit). */
void mg_wreq_free_list(struct mg_wreq **free_list);

#endif
