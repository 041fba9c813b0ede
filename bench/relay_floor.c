/*
 * relay_floor: the least a proxy can do per request in the bench's layout, so
 * the rows above it can be read against what the kernel alone charges.
 *
 * It is an L4 relay, not a proxy: every client connection gets its own
 * upstream connection (round robin over the upstream ports, chosen once at
 * accept), and bytes are moved as they come, unparsed, with recv and send on
 * level-triggered epoll, one thread. A keep-alive request through it costs
 * exactly what any HTTP/1.1 proxy's steady state must: recv from the client,
 * send to the upstream, recv from the upstream, send to the client, and a share
 * of epoll_wait. There is no parsing, no routing, no pool, no timer, no log:
 * whatever a real proxy spends above this row is its own.
 *
 *   relay_floor LISTEN_PORT UPSTREAM_PORT...      (127.0.0.1 only)
 *
 * Built by bench/run.sh (row `floor`): cc -O2 -o build/relay_floor bench/relay_floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_UPSTREAMS 8
#define BUF_SIZE      16384

/* One side of a pair. `pend` holds bytes the peer's socket did not take yet;
 * while it is non-empty this side stops reading (backpressure) and the peer
 * waits for EPOLLOUT. */
struct end {
    int fd;
    struct end *peer;
    char *pend;
    size_t pend_len;
};

static int ep;

static int arm(struct end *e, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = e};
    return epoll_ctl(ep, op, e->fd, &ev);
}

static void close_pair(struct end *e)
{
    struct end *p = e->peer;
    close(e->fd);
    close(p->fd);
    free(e->pend);
    free(p->pend);
    free(e < p ? e : p); /* both ends live in one allocation */
}

static int tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Sends what `to` can take; keeps the rest for EPOLLOUT. -1: the pair is gone. */
static int relay_out(struct end *from, const char *buf, size_t len)
{
    struct end *to = from->peer;
    ssize_t n = send(to->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)
        return -1;
    size_t sent = n > 0 ? (size_t)n : 0;
    if (sent == len)
        return 0;
    to->pend = malloc(len - sent);
    if (!to->pend)
        return -1;
    memcpy(to->pend, buf + sent, len - sent);
    to->pend_len = len - sent;
    if (arm(from, 0, EPOLL_CTL_MOD) < 0 || arm(to, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD) < 0)
        return -1;
    return 0;
}

static int on_readable(struct end *e)
{
    static char buf[BUF_SIZE];
    ssize_t n = recv(e->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0)
        return relay_out(e, buf, (size_t)n);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return -1;
}

static int on_writable(struct end *e)
{
    ssize_t n = send(e->fd, e->pend, e->pend_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN ? 0 : -1;
    e->pend_len -= (size_t)n;
    memmove(e->pend, e->pend + n, e->pend_len);
    if (e->pend_len)
        return 0;
    free(e->pend);
    e->pend = NULL;
    if (arm(e, EPOLLIN, EPOLL_CTL_MOD) < 0 || arm(e->peer, EPOLLIN, EPOLL_CTL_MOD) < 0)
        return -1;
    return 0;
}

static void on_accept(int lfd, const int *ports, int nports)
{
    static unsigned next;
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int ufd = tcp_socket();
        struct sockaddr_in up = loopback(ports[next++ % (unsigned)nports]);
        struct end *pair = calloc(2, sizeof *pair);
        if (ufd < 0 || !pair ||
            (connect(ufd, (struct sockaddr *)&up, sizeof up) < 0 && errno != EINPROGRESS)) {
            close(cfd);
            if (ufd >= 0)
                close(ufd);
            free(pair);
            continue;
        }
        pair[0] = (struct end){.fd = cfd, .peer = &pair[1]};
        pair[1] = (struct end){.fd = ufd, .peer = &pair[0]};
        if (arm(&pair[0], EPOLLIN, EPOLL_CTL_ADD) < 0 || arm(&pair[1], EPOLLIN, EPOLL_CTL_ADD) < 0)
            close_pair(&pair[0]);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc - 2 > MAX_UPSTREAMS) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT... (at most %d)\n", argv[0],
                MAX_UPSTREAMS);
        return 2;
    }
    int ports[MAX_UPSTREAMS], nports = argc - 2;
    for (int i = 0; i < nports; i++)
        ports[i] = atoi(argv[i + 2]);
    signal(SIGPIPE, SIG_IGN);

    int lfd = tcp_socket(), one = 1;
    struct sockaddr_in addr = loopback(atoi(argv[1]));
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("relay_floor: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("relay_floor: epoll");
        return 1;
    }

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (!e) {
                on_accept(lfd, ports, nports);
                continue;
            }
            int rc = 0;
            if (evs[i].events & EPOLLOUT)
                rc = on_writable(e);
            if (rc == 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !e->peer->pend)
                rc = on_readable(e);
            if (rc < 0) {
                close_pair(e);
                break; /* later events of this batch may name the freed pair; level-triggered
                          epoll reports the others again */
            }
        }
    }
}
