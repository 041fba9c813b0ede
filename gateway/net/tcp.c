/*
 * Plain TCP under the transport interface: each operation is the libuv call
 * it names. uv_try_write first, because a completed uv_write costs an
 * epoll_ctl in libuv 1.44 and the common response fits the socket at once.
 */
#include "net/tcp.h"

#include <unistd.h>

#include <netinet/in.h>

static struct mg_tcp *tcp_of(const struct mg_transport *t)
{
    return (struct mg_tcp *)t;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct mg_tcp *s = h->data;
    (void)hint;
    s->t.on_alloc(&s->t, buf);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    struct mg_tcp *s = h->data;
    (void)buf;
    if (nread != 0)
        s->t.on_read(&s->t, nread);
}

static int read_start(struct mg_transport *t)
{
    return uv_read_start((uv_stream_t *)&tcp_of(t)->h, on_alloc, on_read);
}

static void read_stop(struct mg_transport *t)
{
    uv_read_stop((uv_stream_t *)&tcp_of(t)->h);
}

static int try_write(struct mg_transport *t, const uv_buf_t *bufs, unsigned n)
{
    int rc = uv_try_write((uv_stream_t *)&tcp_of(t)->h, bufs, n);
    return rc == UV_EAGAIN ? 0 : rc;
}

static int tcp_write(struct mg_transport *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                     uv_write_cb cb)
{
    return uv_write(req, (uv_stream_t *)&tcp_of(t)->h, bufs, n, cb);
}

static size_t queued(const struct mg_transport *t)
{
    return tcp_of(t)->h.write_queue_size;
}

static void on_closed(uv_handle_t *h)
{
    struct mg_tcp *s = h->data;
    s->t.on_closed(&s->t);
}

static void close_tcp(struct mg_transport *t)
{
    uv_close((uv_handle_t *)&tcp_of(t)->h, on_closed);
}

static void peer_ip(struct mg_transport *t, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    out[0] = '\0';
    if (uv_tcp_getpeername(&tcp_of(t)->h, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, out, len);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, out, len);
}

static const struct mg_transport_ops tcp_ops = {
    .read_start = read_start,
    .read_stop = read_stop,
    .try_write = try_write,
    .write = tcp_write,
    .queued = queued,
    .close = close_tcp,
    .peer_ip = peer_ip,
};

int mg_tcp_init(uv_loop_t *loop, struct mg_tcp *s, void *owner)
{
    s->t = (struct mg_transport){.ops = &tcp_ops, .owner = owner};
    s->h.data = s;
    return uv_tcp_init(loop, &s->h);
}

int mg_tcp_accept(int fd, struct mg_tcp *s)
{
    int rc = uv_tcp_open(&s->h, fd);
    if (rc == 0)
        uv_tcp_nodelay(&s->h, 1);
    else
        close(fd);
    return rc;
}

int mg_tcp_connect(struct mg_tcp *s, uv_connect_t *req, const struct sockaddr *addr,
                   uv_connect_cb cb)
{
    return uv_tcp_connect(req, &s->h, addr, cb);
}
