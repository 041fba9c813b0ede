/*
 * hiredis 0.14's adapter (hiredis/adapters/libuv.h) drops poll errors: libuv
 * reports POLLERR (a refused connect, a reset connection) as status UV_EBADF
 * with the watcher already stopped, and redisLibuvPoll returns early when
 * status != 0, so hiredis never learns that the connection failed and the
 * context hangs until a timeout notices. hiredis 1.0 fixed it by handling the
 * events it was waiting for when status != 0; we do the same by re-pointing the
 * adapter's four hooks at a poll callback that does. The adapter's struct,
 * allocation and cleanup (uv_close + free) stay in use.
 *
 * Threads: a context and its adapter belong to the loop they were attached to.
 */
#include "idempotency/hiredis_uv.h"

#include <arpa/inet.h>

#include <hiredis/adapters/libuv.h>

static void on_poll(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    int ev = status != 0 ? p->events : events; /* an error: let hiredis find it */

    if (p->context != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context != NULL && (ev & UV_WRITABLE)) /* context NULL: freed by the read */
        redisAsyncHandleWrite(p->context);
}

/* `was`: the events before the caller's change. hiredis re-adds READABLE
 * after every write; restarting the poll with the same events would cost an
 * epoll_ctl DEL now and an ADD at the next poll (libuv's uv_poll_start stops
 * first), so an unchanged set on a running poll is left alone. */
static void poll_update(redisLibuvEvents *p, int was)
{
    if (p->events == was && (was == 0) == !uv_is_active((uv_handle_t *)&p->handle))
        return;
    if (p->events != 0)
        uv_poll_start(&p->handle, p->events, on_poll);
    else
        uv_poll_stop(&p->handle);
}

static void poll_add_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    int was = p->events;

    p->events |= UV_READABLE;
    poll_update(p, was);
}

static void poll_del_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    int was = p->events;

    p->events &= ~UV_READABLE;
    poll_update(p, was);
}

static void poll_add_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    int was = p->events;

    p->events |= UV_WRITABLE;
    poll_update(p, was);
}

static void poll_del_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    int was = p->events;

    p->events &= ~UV_WRITABLE;
    poll_update(p, was);
}

int mg_hiredis_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (redisLibuvAttach(ac, loop) != REDIS_OK)
        return -1;
    ac->ev.addRead = poll_add_read;
    ac->ev.delRead = poll_del_read;
    ac->ev.addWrite = poll_add_write;
    ac->ev.delWrite = poll_del_write;
    return 0;
}

int mg_hiredis_numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}
