/*
 * sockshim: an LD_PRELOAD experiment, not part of the gateway. It turns the
 * read/write/writev calls a process makes through libc's symbols (libuv's
 * stream layer does) into recv/send/sendmsg when the fd is a socket, so that
 * bench/run.sh can measure what a transport calling the socket functions
 * itself would save in the real gateway, with nothing else changed (same
 * libuv, same epoll interest, same calls per request):
 *
 *   cc -O2 -shared -fPIC -o build/sockshim.so bench/sockshim.c
 *   printf '#!/bin/sh\nLD_PRELOAD=%s exec %s "$@"\n' $PWD/build/sockshim.so \
 *       $PWD/build/moongate >build/moongate-shim && chmod +x build/moongate-shim
 *   bench/run.sh --kernel --rows moongate --moongate build/moongate-shim
 *
 * An fd that answers ENOTSOCK (eventfd, pipe, file) is remembered and gets
 * the plain call from then on; closing it through close() forgets that. A
 * stale mark can only send a socket down the plain path (correct, just not
 * shimmed), never the reverse. SIGPIPE: MSG_NOSIGNAL, as the gateway ignores
 * it anyway.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define NFD 65536
static unsigned char notsock[NFD];

static int plain(int fd)
{
    return fd < 0 || fd >= NFD || notsock[fd];
}

static int mark(int fd)
{
    if (errno != ENOTSOCK)
        return 0;
    notsock[fd] = 1;
    return 1;
}

ssize_t read(int fd, void *buf, size_t n)
{
    if (!plain(fd)) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0 || !mark(fd))
            return r;
    }
    return syscall(SYS_read, fd, buf, n);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (!plain(fd)) {
        ssize_t r = send(fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0 || !mark(fd))
            return r;
    }
    return syscall(SYS_write, fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (!plain(fd)) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (r >= 0 || !mark(fd))
            return r;
    }
    return syscall(SYS_writev, fd, iov, n);
}

int close(int fd)
{
    if (fd >= 0 && fd < NFD)
        notsock[fd] = 0;
    return (int)syscall(SYS_close, fd);
}
