/*
 * Plain TCP under the transport interface, on the socket itself: a uv_poll
 * handle says when the socket is ready and the bytes move with recv, send and
 * sendmsg. libuv's stream layer moves them with read, write and writev, which
 * pass through the VFS first (fdget_pos, rw_verify_area, sock_read_iter: about
 * 0.2 us per call on a kernel with retpolines; bench/README.md, "read/write
 * against recv/send").
 *
 * What the layers above rely on is what the libuv stream calls gave them:
 * - a write's callback runs exactly once and never inside write(); one that
 *   the socket took at once waits for the next POLLOUT, which is immediate;
 * - close() closes the socket at once, then, from the loop's closing phase,
 *   ends a pending connect and queued writes with UV_ECANCELED and calls
 *   on_closed;
 * - try_write takes nothing while a connect or a queued write is pending.
 *
 * libuv removes the fd from epoll on every uv_poll_start/stop, so the interest
 * changes only when it must: read_stop() leaves READABLE in place until bytes
 * arrive while stopped (no epoll_ctl for a reader that stops and starts within
 * a request), and WRITABLE is there only while writes are queued.
 */
#include "net/tcp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

struct mg_tcp_write {
    struct mg_tcp_write *next;
    uv_write_t *req;
    uv_write_cb cb;
    int status;    /* once done */
    bool done;     /* sent or failed: only its callback is left */
    unsigned i, n; /* bufs[i..n) are not sent yet */
    uv_buf_t bufs[];
};

/* A read callback's chances per readiness event while it fills the buffer. */
#define READS_PER_EVENT 32

static struct mg_tcp *tcp_of(const struct mg_transport *t)
{
    return (struct mg_tcp *)t;
}

static void on_poll(uv_poll_t *p, int status, int events);

static void set_interest(struct mg_tcp *s)
{
    if (s->fd < 0)
        return;
    int want =
        (s->read_interest ? UV_READABLE : 0) | (s->connecting || s->wq_head ? UV_WRITABLE : 0);
    if (want == s->events)
        return;
    s->events = want;
    if (want)
        uv_poll_start(&s->h.poll, want, on_poll);
    else
        uv_poll_stop(&s->h.poll);
}

/* ------------------------------------------------------------------ reading */

static void do_read(struct mg_tcp *s)
{
    for (int i = 0; i < READS_PER_EVENT && s->reading; i++) {
        uv_buf_t b = uv_buf_init(NULL, 0);
        s->t.on_alloc(&s->t, &b);
        if (!b.base || b.len == 0) {
            s->t.on_read(&s->t, UV_ENOBUFS);
            return;
        }
        ssize_t n;
        do
            n = recv(s->fd, b.base, b.len, 0);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            s->t.on_read(&s->t, n);
            if ((size_t)n < b.len)
                return; /* the socket is empty: no call to learn it again */
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* The end or an error: reading stops, as libuv's stream did. */
        int err = n == 0 ? UV_EOF : -errno;
        s->reading = s->read_interest = false;
        s->t.on_read(&s->t, err);
        return;
    }
}

static int read_start(struct mg_transport *t)
{
    struct mg_tcp *s = tcp_of(t);
    if (s->closing || s->fd < 0)
        return UV_EINVAL;
    s->reading = s->read_interest = true;
    set_interest(s);
    return 0;
}

static void read_stop(struct mg_transport *t)
{
    tcp_of(t)->reading = false;
}

/* ------------------------------------------------------------------ writing */

/* Pieces up to this many bytes in all are copied together and sent with
 * send(): a copy of a response head and a short body costs less than
 * sendmsg's message header and iovec import in the kernel. */
#define GATHER_MAX 2048

/* The pieces copied into out if they fit GATHER_MAX: their length, else 0
 * (nothing copied). */
static size_t gather(char *out, const uv_buf_t *bufs, unsigned n)
{
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        len += bufs[i].len;
        if (len > GATHER_MAX)
            return 0;
    }
    char *o = out;
    for (unsigned i = 0; i < n; i++) {
        memcpy(o, bufs[i].base, bufs[i].len);
        o += bufs[i].len;
    }
    return len;
}

/* Bytes the socket took now (0: it would block), or a negative UV_E*. */
static ssize_t send_bufs(int fd, const uv_buf_t *bufs, unsigned n)
{
    char one[GATHER_MAX];
    size_t len = n > 1 ? gather(one, bufs, n) : 0;
    ssize_t w;
    do {
        if (n == 1) {
            w = send(fd, bufs[0].base, bufs[0].len, MSG_NOSIGNAL);
        } else if (len) {
            w = send(fd, one, len, MSG_NOSIGNAL);
        } else {
            /* uv_buf_t is laid out as struct iovec on unix (libuv's own writev relies on it). */
            struct msghdr m = {.msg_iov = (struct iovec *)bufs, .msg_iovlen = n};
            w = sendmsg(fd, &m, MSG_NOSIGNAL);
        }
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    return w;
}

static size_t left_of(const struct mg_tcp_write *w)
{
    size_t n = 0;
    for (unsigned i = w->i; i < w->n; i++)
        n += w->bufs[i].len;
    return n;
}

static void finish_write(struct mg_tcp *s, struct mg_tcp_write *w, int status)
{
    s->wq_bytes -= left_of(w);
    w->done = true;
    w->status = status;
}

/* Sends what the socket takes of w. True when w is done (sent or failed). */
static bool advance(struct mg_tcp *s, struct mg_tcp_write *w)
{
    ssize_t r = send_bufs(s->fd, w->bufs + w->i, w->n - w->i);
    if (r < 0) {
        finish_write(s, w, (int)r);
        return true;
    }
    size_t sent = (size_t)r;
    s->wq_bytes -= sent;
    while (w->i < w->n && sent >= w->bufs[w->i].len)
        sent -= w->bufs[w->i++].len;
    if (w->i == w->n) {
        w->done = true;
        w->status = 0;
        return true;
    }
    w->bufs[w->i].base += sent;
    w->bufs[w->i].len -= sent;
    return false;
}

static struct mg_tcp_write *pop_write(struct mg_tcp *s)
{
    struct mg_tcp_write *w = s->wq_head;
    s->wq_head = w->next;
    if (!s->wq_head)
        s->wq_tail = NULL;
    return w;
}

static void call_write_cb(struct mg_tcp_write *w, int status)
{
    uv_write_t *req = w->req;
    uv_write_cb cb = w->cb;
    free(w);
    cb(req, status);
}

/* Writable: sends the queue in order and reports each finished write. */
static void do_writes(struct mg_tcp *s)
{
    while (s->wq_head && !s->closing) {
        if (!s->wq_head->done && !advance(s, s->wq_head))
            return;
        struct mg_tcp_write *w = pop_write(s);
        call_write_cb(w, w->status);
    }
}

static int try_write(struct mg_transport *t, const uv_buf_t *bufs, unsigned n)
{
    struct mg_tcp *s = tcp_of(t);
    if (s->fd < 0 || s->connecting || s->wq_head || n == 0)
        return 0;
    return (int)send_bufs(s->fd, bufs, n);
}

static int tcp_write(struct mg_transport *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                     uv_write_cb cb)
{
    struct mg_tcp *s = tcp_of(t);
    if (s->fd < 0)
        return UV_EBADF;
    struct mg_tcp_write *w = malloc(sizeof *w + n * sizeof *bufs);
    if (!w)
        return UV_ENOMEM;
    *w = (struct mg_tcp_write){.req = req, .cb = cb, .n = n};
    memcpy(w->bufs, bufs, n * sizeof *bufs);
    s->wq_bytes += left_of(w);
    bool first = !s->wq_head;
    if (s->wq_tail)
        s->wq_tail->next = w;
    else
        s->wq_head = w;
    s->wq_tail = w;
    if (first && !s->connecting)
        advance(s, w);
    set_interest(s); /* the callback, or the rest, at the next POLLOUT */
    return 0;
}

static size_t queued(const struct mg_transport *t)
{
    return tcp_of(t)->wq_bytes;
}

/* ---------------------------------------------------------------- connecting */

static void finish_connect(struct mg_tcp *s)
{
    int status = s->connect_status;
    if (status == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == EINPROGRESS)
            return;
        status = -err;
    }
    if (status == 0) {
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    uv_connect_t *req = s->connect_req;
    s->connecting = false;
    s->connect_req = NULL;
    if (status < 0) {
        /* Writes queued behind a failed connect end as libuv ended them. */
        for (struct mg_tcp_write *w = s->wq_head; w; w = w->next)
            if (!w->done)
                finish_write(s, w, UV_ECANCELED);
    }
    req->cb(req, status);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct mg_tcp *s = p->data;
    if (status < 0) {
        /* POLLERR: libuv stopped the handle. The calls below meet the error. */
        s->events = 0;
        events = UV_READABLE | UV_WRITABLE;
    }
    if (s->connecting) {
        if (!(events & UV_WRITABLE))
            return;
        finish_connect(s);
        if (s->closing || s->connecting)
            return;
    }
    if (events & UV_READABLE) {
        if (s->reading)
            do_read(s);
        else
            s->read_interest = false; /* a read_stop() takes effect now */
    }
    if (s->closing)
        return;
    if (events & UV_WRITABLE)
        do_writes(s);
    if (!s->closing)
        set_interest(s);
}

/* ------------------------------------------------------------------ closing */

static void on_handle_closed(uv_handle_t *h)
{
    struct mg_tcp *s = h->data;
    if (s->connect_req) {
        uv_connect_t *req = s->connect_req;
        s->connect_req = NULL;
        req->cb(req, UV_ECANCELED);
    }
    while (s->wq_head) {
        struct mg_tcp_write *w = pop_write(s);
        call_write_cb(w, w->done ? w->status : UV_ECANCELED);
    }
    s->wq_bytes = 0;
    s->t.on_closed(&s->t);
}

static void close_tcp(struct mg_transport *t)
{
    struct mg_tcp *s = tcp_of(t);
    if (s->closing)
        return;
    s->closing = true;
    s->reading = s->read_interest = false;
    s->connecting = false;
    if (s->fd < 0) {
        uv_idle_init(s->loop, &s->h.idle);
        s->h.idle.data = s;
        uv_close((uv_handle_t *)&s->h.idle, on_handle_closed);
        return;
    }
    uv_close((uv_handle_t *)&s->h.poll, on_handle_closed); /* out of epoll first */
    close(s->fd);
    s->fd = -1;
}

static void peer_ip(struct mg_transport *t, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    out[0] = '\0';
    if (tcp_of(t)->fd < 0 || getpeername(tcp_of(t)->fd, (struct sockaddr *)&ss, &sl) != 0)
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
    *s = (struct mg_tcp){.t = {.ops = &tcp_ops, .owner = owner}, .loop = loop, .fd = -1};
    return 0;
}

static int adopt(struct mg_tcp *s, int fd)
{
    int rc = uv_poll_init_socket(s->loop, &s->h.poll, fd);
    if (rc) {
        close(fd);
        return rc;
    }
    s->h.poll.data = s;
    s->fd = fd;
    return 0;
}

int mg_tcp_accept(int fd, struct mg_tcp *s)
{
    int rc = adopt(s, fd);
    if (rc == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return rc;
}

int mg_tcp_connect(struct mg_tcp *s, uv_connect_t *req, const struct sockaddr *addr,
                   uv_connect_cb cb)
{
    if (s->fd >= 0 || s->closing)
        return UV_EALREADY;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = adopt(s, fd);
    if (rc)
        return rc;
    socklen_t len =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int r;
    do
        r = connect(fd, addr, len);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EINPROGRESS) {
        /* libuv reports a refusal through the callback, other errors here. */
        if (errno != ECONNREFUSED)
            return -errno;
        s->connect_status = UV_ECONNREFUSED;
    }
    req->cb = cb;
    s->connect_req = req;
    s->connecting = true;
    set_interest(s);
    return 0;
}
