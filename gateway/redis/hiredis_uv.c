/*
 * hiredis's event-library hooks on a libuv loop. hiredis 0.14 ships an adapter
 * (hiredis/adapters/libuv.h), but it costs this gateway in three ways:
 *
 * - it drops poll errors: libuv reports POLLERR (a refused connect, a reset
 *   connection) as status UV_EBADF with the watcher stopped, and the adapter
 *   returns early, so hiredis never learns the connection failed and the
 *   context hangs until a timeout notices (hiredis 1.0 fixed it the same way
 *   as here: handle the events it was waiting for);
 * - every command arms POLLOUT and the write disarms it again: two epoll_ctl
 *   and a loop wake-up per command, for a write that nearly always fits the
 *   socket at once;
 * - a failed uv_poll_init leaks its struct and leaves a cleanup hook that
 *   dereferences NULL.
 *
 * hiredis 0.14's reader also believes what a reply announces: "*2000000000"
 * makes it calloc 16 GB of element pointers and, when the connection goes,
 * free them one by one on the worker's loop (seconds in which the worker
 * serves nobody), and a bulk string grows its buffer without a bound. The
 * watcher bounds both (hiredis_uv.h): a reply past a bound ends the
 * connection as a protocol error, as any other bad reply does.
 *
 * Here a command on a connected context is written from an idle handle in the
 * same loop turn: the idle handle runs before the next poll and keeps that
 * poll from blocking, so nothing waits, and every command issued in the turn
 * goes out in one write. Only a write the socket does not take whole (and the
 * connect, which completes on POLLOUT) waits for POLLOUT.
 *
 * Threads: a context and its watcher belong to the loop they were attached to.
 * Ownership: the watcher is the context's ev.data; hiredis calls cleanup when
 * it frees the context, and the struct is freed once both handles closed.
 */
#include "redis/hiredis_uv.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

struct watcher {
    redisAsyncContext *ac; /* NULL once hiredis freed it */
    uv_poll_t poll;
    uv_idle_t flush;
    int events;    /* what the poll watches */
    bool in_flush; /* a write that did not finish must wait for POLLOUT */
    int open;      /* handles not closed yet */
    /* The reader's functions with createArray bounded, and hiredis's own. */
    redisReplyObjectFunctions fns;
    redisReplyObjectFunctions *orig;
    uint64_t elements; /* announced so far by the reply being read */
};

/* Every array of one reply counts against one budget, so nesting cannot
 * multiply it; the root task's privdata is the reader's, the watcher. */
static void *create_array(const redisReadTask *task, int elements)
{
    const redisReadTask *root = task;
    while (root->parent != NULL)
        root = root->parent;
    struct watcher *w = root->privdata;

    if (task->parent == NULL)
        w->elements = 0;
    if (elements > 0)
        w->elements += (uint64_t)elements;
    if (w->elements > MG_REDIS_MAX_REPLY_ELEMENTS) {
        mg_warn("redis: a reply announced more than %d elements; closing the connection",
                MG_REDIS_MAX_REPLY_ELEMENTS);
        return NULL; /* the reader fails: hiredis disconnects with an error */
    }
    return w->orig->createArray(task, elements);
}

/* Called before each read: a reply still incomplete past the bound fails the
 * reader, and hiredis ends the connection at the read it is about to do. */
static void bound_buffer(redisReader *r)
{
    if (r->err == 0 && r->len - r->pos > MG_REDIS_MAX_REPLY_BYTES) {
        r->err = REDIS_ERR_PROTOCOL;
        snprintf(r->errstr, sizeof r->errstr, "a reply larger than %d bytes",
                 MG_REDIS_MAX_REPLY_BYTES);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct watcher *w = h->data;
    int ev = status != 0 ? w->events : events; /* an error: let hiredis find it */

    if (w->ac != NULL && (ev & UV_READABLE)) {
        bound_buffer(w->ac->c.reader);
        redisAsyncHandleRead(w->ac);
    }
    if (w->ac != NULL && (ev & UV_WRITABLE)) /* ac NULL: freed by the read */
        redisAsyncHandleWrite(w->ac);
}

static void on_flush(uv_idle_t *h)
{
    struct watcher *w = h->data;

    uv_idle_stop(h);
    w->in_flush = true;
    redisAsyncHandleWrite(w->ac); /* may free ac: cleanup stops nothing twice */
    w->in_flush = false;
}

/* libuv's uv_poll_start stops first: restarting with the same events would
 * cost an epoll_ctl DEL now and an ADD at the next poll, so an unchanged set
 * on a running poll is left alone. */
static void watch(struct watcher *w, int events)
{
    bool active = uv_is_active((uv_handle_t *)&w->poll);

    if (events == w->events && (events != 0) == active)
        return;
    w->events = events;
    if (events != 0)
        uv_poll_start(&w->poll, events, on_poll);
    else
        uv_poll_stop(&w->poll);
}

static void add_read(void *privdata)
{
    struct watcher *w = privdata;
    watch(w, w->events | UV_READABLE);
}

static void del_read(void *privdata)
{
    struct watcher *w = privdata;
    watch(w, w->events & ~UV_READABLE);
}

static void add_write(void *privdata)
{
    struct watcher *w = privdata;

    if ((w->ac->c.flags & REDIS_CONNECTED) && !w->in_flush)
        uv_idle_start(&w->flush, on_flush);
    else
        watch(w, w->events | UV_WRITABLE);
}

static void del_write(void *privdata)
{
    struct watcher *w = privdata;

    uv_idle_stop(&w->flush);
    watch(w, w->events & ~UV_WRITABLE);
}

static void on_closed(uv_handle_t *h)
{
    struct watcher *w = h->data;

    if (--w->open == 0)
        free(w);
}

static void cleanup(void *privdata)
{
    struct watcher *w = privdata;

    /* hiredis frees the reader, and a partial reply with it, after this */
    w->ac->c.reader->fn = w->orig;
    w->ac->c.reader->privdata = NULL;
    w->ac = NULL;
    uv_close((uv_handle_t *)&w->poll, on_closed);
    uv_close((uv_handle_t *)&w->flush, on_closed);
}

int mg_hiredis_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return -1;
    struct watcher *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    if (uv_poll_init(loop, &w->poll, ac->c.fd) != 0) {
        free(w); /* an unstarted, uninitialised poll has nothing to close */
        return -1;
    }
    uv_idle_init(loop, &w->flush);
    w->ac = ac;
    w->poll.data = w->flush.data = w;
    w->open = 2;
    w->orig = ac->c.reader->fn;
    w->fns = *w->orig;
    w->fns.createArray = create_array;
    ac->c.reader->fn = &w->fns;
    ac->c.reader->privdata = w;
    ac->ev.data = w;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}

int mg_hiredis_numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}
