/*
 * Write queues (see wq.h). Ownership: a write request is on the free list, being
 * assembled (q->out), or in flight (counted in q->pending, holding one pin on
 * its read buffer); the completion callback returns it to the free list before
 * telling the owner.
 */
#include "net/wq.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h" /* mg_fatal, MG_ASSERT */

void mg_wq_init(struct mg_wq *q, struct mg_transport *tr, struct mg_wreq **free_list,
                void (*on_written)(struct mg_wq *q, int status), void *owner)
{
    *q = (struct mg_wq){.tr = tr, .free_list = free_list, .on_written = on_written, .owner = owner};
}

static struct mg_wreq *wreq_new(struct mg_wq *q)
{
    struct mg_wreq *r = *q->free_list;
    if (r)
        *q->free_list = r->next_free;
    else if (!(r = malloc(sizeof *r)))
        mg_fatal("out of memory (write request)");
    r->q = q;
    r->pin = NULL;
    r->nbufs = r->nscratch = 0;
    r->req.data = r;
    return r;
}

static void wreq_free(struct mg_wreq **free_list, struct mg_wreq *r)
{
    r->next_free = *free_list;
    *free_list = r;
}

void mg_wreq_free_list(struct mg_wreq **free_list)
{
    while (*free_list) {
        struct mg_wreq *r = *free_list;
        *free_list = r->next_free;
        free(r);
    }
}

static void unpin(struct mg_rbuf *b)
{
    if (b && --b->pins == 0 && b->on_unpinned)
        b->on_unpinned(b);
}

static void on_write(uv_write_t *req, int status)
{
    struct mg_wreq *r = req->data;
    struct mg_wq *q = r->q;
    struct mg_rbuf *pin = r->pin;
    wreq_free(q->free_list, r);
    q->pending--;
    unpin(pin);
    q->on_written(q, status);
}

/* Writes what the transport takes now. 1: all of it; 0: r holds the rest. */
static int write_now(struct mg_wq *q, struct mg_wreq *r)
{
    int n = q->tr->ops->try_write(q->tr, r->bufs, r->nbufs);
    if (n < 0)
        return n;
    size_t left = (size_t)n;
    unsigned i = 0;
    while (i < r->nbufs && left >= r->bufs[i].len)
        left -= r->bufs[i++].len;
    if (i == r->nbufs)
        return 1;
    r->bufs[i].base += left;
    r->bufs[i].len -= (unsigned)left;
    memmove(r->bufs, r->bufs + i, (r->nbufs - i) * sizeof r->bufs[0]);
    r->nbufs -= i;
    return 0;
}

int mg_wq_flush(struct mg_wq *q)
{
    struct mg_wreq *r = q->out;
    if (q->error) {
        mg_wq_discard(q);
        return q->error;
    }
    if (!r)
        return 1;
    q->out = NULL;
    /* Behind a write in flight, bytes must wait their turn. */
    int rc = q->pending ? 0 : write_now(q, r);
    if (rc == 1) {
        wreq_free(q->free_list, r);
        return 1;
    }
    if (rc == 0) {
        if (r->pin)
            r->pin->pins++;
        q->pending++;
        rc = q->tr->ops->write(q->tr, &r->req, r->bufs, r->nbufs, on_write);
        if (rc == 0)
            return 0;
        /* A write failing synchronously never calls its callback. */
        q->pending--;
        if (r->pin)
            r->pin->pins--;
    }
    wreq_free(q->free_list, r);
    q->error = rc;
    return rc;
}

size_t mg_wq_discard(struct mg_wq *q)
{
    struct mg_wreq *r = q->out;
    if (!r)
        return 0;
    size_t n = 0;
    for (unsigned i = 0; i < r->nbufs; i++)
        n += r->bufs[i].len;
    q->out = NULL;
    wreq_free(q->free_list, r);
    return n;
}

/* The request being assembled, with room for `bufs` more buffers and the pin. */
static struct mg_wreq *room(struct mg_wq *q, unsigned bufs, struct mg_rbuf *pin)
{
    if (q->out &&
        (q->out->nbufs + bufs > MG_WREQ_MAX_BUFS || (pin && q->out->pin && q->out->pin != pin))) {
        /* Full, or pinning another buffer: send what is there first. A
         * failure sticks (q->error) and is the owner's at its next flush. */
        mg_wq_flush(q);
    }
    if (!q->out)
        q->out = wreq_new(q);
    if (pin)
        q->out->pin = pin;
    return q->out;
}

void mg_wq_add(struct mg_wq *q, const void *p, size_t len, struct mg_rbuf *pin)
{
    if (len == 0)
        return;
    struct mg_wreq *r = room(q, 1, pin);
    r->bufs[r->nbufs++] = uv_buf_init((char *)p, (unsigned)len);
}

void mg_wq_add_framed(struct mg_wq *q, const char *head, size_t head_len, const void *p, size_t len,
                      const char *tail, struct mg_rbuf *pin)
{
    MG_ASSERT(head_len <= MG_WQ_FRAME_MAX);
    struct mg_wreq *r = room(q, 3, pin);
    char *line = r->scratch[r->nscratch++];
    memcpy(line, head, head_len);
    r->bufs[r->nbufs++] = uv_buf_init(line, (unsigned)head_len);
    r->bufs[r->nbufs++] = uv_buf_init((char *)p, (unsigned)len);
    r->bufs[r->nbufs++] = uv_buf_init((char *)tail, (unsigned)strlen(tail));
}

void mg_rbuf_room(struct mg_rbuf *b, uv_buf_t *out)
{
    if (b->pins == 0 && b->start > 0) {
        /* Nothing points into the consumed bytes: move the rest to the front. */
        memmove(b->buf, b->buf + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
    out->base = b->buf + b->end;
    out->len = MG_RBUF_SIZE - b->end;
}

bool mg_rbuf_has_room(const struct mg_rbuf *b)
{
    return !b->buf || b->end < MG_RBUF_SIZE || (b->pins == 0 && b->start > 0);
}
