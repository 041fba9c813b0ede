/*
 * syscost: what the kernel charges for the same bytes moved by read/write/writev
 * (the VFS path libuv's stream layer takes) or by recv/send/sendmsg (the socket
 * calls HAProxy makes), on a loopback TCP connection pair held by one thread.
 *
 * One thread owns both ends (non-blocking, TCP_NODELAY, as the gateway's sockets
 * are), so a ping-pong has no wake-up and no context switch: the CPU time of the
 * loop is the syscalls plus loopback's delivery, which is the same for every
 * variant. Each variant changes ONE kind of call against its baseline, so the
 * difference per call is the cost of the path itself:
 *
 *   read  vs recv(MSG_DONTWAIT)                     (writes: write)
 *   write vs send(MSG_NOSIGNAL|MSG_DONTWAIT)         (reads: read)
 *   writev vs sendmsg, 2 iovecs                      (reads: read)
 *   read vs recv on an empty socket (EAGAIN)
 *   recv+send with a second (idle) thread alive vs alone: the fd table is then
 *   shared, and every call takes and drops a reference on its file
 *
 * and all calls at once: read+write vs recv+send, and the gateway's own mix
 * (read, write of the request, read, writev of head and body) vs recv, send,
 * recv, sendmsg.
 *
 * for 100 B request / 300 B response and 100 B / 16 KiB, over one connection
 * pair or -c PAIRS used in turn (a loop serving 256 connections touches 256
 * sockets' kernel structures, colder in cache than one pair's).
 *
 * Each round runs A and B in alternating chunks of 1/200 of the round (A B,
 * B A, ...), so whatever else the shared machine does falls on both alike.
 * The time is the thread's CPU time (CLOCK_THREAD_CPUTIME_ID, exact ns):
 * getrusage's user/system split comes from clock-tick samples and is useless
 * over 10 ms chunks, so it is printed once for the whole run instead (system
 * time is ~97 % of the CPU here). Medians over the rounds.
 *
 *   cc -O2 -pthread -o build/syscost bench/syscost.c
 *   taskset -c 1 build/syscost [-n ITERATIONS] [-r ROUNDS] [-c PAIRS] [-o NAME]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum rd { RD_READ, RD_RECV };
enum wr { WR_WRITE, WR_SEND, WR_WRITEV, WR_SENDMSG };

struct variant {
    const char *name;
    enum rd rd;
    enum wr wr, wr_resp; /* the request's write, the response's */
    size_t req, resp;    /* bytes each way per ping-pong */
    int eagain;          /* only reads on an empty socket */
    int thread;          /* a second thread exists: the fd table is shared */
};

#define MAXP 1024
static int fd_a[MAXP], fd_b[MAXP]; /* a: the "client" ends, b: the "server" ends */
static int npairs = 1;
static char rbuf[32768];
static char wdata[65536];
static long calls; /* syscalls made by the last run */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void pair(int *pa, int *pb)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    *pa = socket(AF_INET, SOCK_STREAM, 0);
    if (*pa < 0 || connect(*pa, (struct sockaddr *)&sa, sizeof sa))
        die("connect");
    *pb = accept(l, NULL, NULL);
    if (*pb < 0)
        die("accept");
    close(l);
    int fds[2] = {*pa, *pb};
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) ||
            setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
            die("socket options");
    }
}

static ssize_t do_read(enum rd rd, int fd)
{
    calls++;
    if (rd == RD_READ)
        return read(fd, rbuf, sizeof rbuf);
    return recv(fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
}

/* The write as the gateway issues it: a head and a body, one buffer or two. */
static ssize_t do_write(enum wr wr, int fd, size_t len)
{
    struct iovec iov[2] = {{wdata, len / 3}, {wdata + len / 3, len - len / 3}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    calls++;
    switch (wr) {
    case WR_WRITE:
        return write(fd, wdata, len);
    case WR_SEND:
        return send(fd, wdata, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    case WR_WRITEV:
        return writev(fd, iov, 2);
    case WR_SENDMSG:
        return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    return -1;
}

/* Reads len bytes (loopback has delivered them already: the write returned). */
static void drain(enum rd rd, int fd, size_t len)
{
    while (len > 0) {
        ssize_t n = do_read(rd, fd);
        if (n <= 0)
            die("read");
        len -= (size_t)n;
    }
}

static int idle_pipe[2];

static void *idle(void *arg)
{
    char c;
    (void)arg;
    /* blocks until told to go: it only has to exist */
    if (read(idle_pipe[0], &c, 1) < 0)
        perror("idle");
    return NULL;
}

/* With a second thread alive, the kernel's fdget must take a reference on
 * the file for every call (the gateway has a main, a worker and an admin
 * thread); alone, it may skip it. The thread is started and joined outside
 * the timed part. */
static void idle_start(const struct variant *v, pthread_t *t)
{
    if (v->thread && pthread_create(t, NULL, idle, NULL) != 0)
        die("pthread_create");
}

static void idle_stop(const struct variant *v, pthread_t t)
{
    if (v->thread && (write(idle_pipe[1], "x", 1) != 1 || pthread_join(t, NULL) != 0))
        die("idle thread");
}

static void run(const struct variant *v, long iters)
{
    calls = 0;
    static int next; /* pairs are used in turn, as a loop serves its connections */
    if (v->eagain) {
        for (long i = 0; i < iters; i++, next = (next + 1) % npairs)
            if (do_read(v->rd, fd_a[next]) != -1 || errno != EAGAIN)
                die("expected EAGAIN");
        return;
    }
    for (long i = 0; i < iters; i++, next = (next + 1) % npairs) {
        int a = fd_a[next], b = fd_b[next];
        if (do_write(v->wr, a, v->req) != (ssize_t)v->req)
            die("write req");
        drain(v->rd, b, v->req);
        if (do_write(v->wr_resp, b, v->resp) != (ssize_t)v->resp)
            die("write resp");
        drain(v->rd, a, v->resp);
    }
}

static double now_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Runs A and B in alternating chunks of `chunk` iterations (the order flips
 * every chunk), so that whatever else the machine does falls on both alike.
 * out: CPU ns per syscall {A, B}. */
static void measure(const struct variant *a, const struct variant *b, long iters, long chunk,
                    double out[2])
{
    double cpu[2] = {0, 0};
    long ncalls[2] = {0, 0};
    run(a, chunk); /* warm */
    run(b, chunk);
    for (long done = 0, k = 0; done < iters; done += chunk, k++) {
        for (int j = 0; j < 2; j++) {
            int side = (int)((k + j) % 2);
            const struct variant *v = side ? b : a;
            pthread_t t = 0;
            idle_start(v, &t);
            double c0 = now_cpu_ns();
            run(v, chunk);
            cpu[side] += now_cpu_ns() - c0;
            idle_stop(v, t);
            ncalls[side] += calls;
        }
    }
    out[0] = cpu[0] / (double)ncalls[0];
    out[1] = cpu[1] / (double)ncalls[1];
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAXR 64

int main(int argc, char **argv)
{
    long iters = 250000; /* 4 calls each: 1M syscalls per measurement */
    int rounds = 5;
    const char *only = NULL; /* run the pairs whose A name contains this */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n"))
            iters = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c"))
            npairs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-o"))
            only = argv[i + 1];
    }
    if (rounds < 1 || rounds > MAXR || iters < 1000 || npairs < 1 || npairs > MAXP) {
        fprintf(stderr, "usage: syscost [-n ITERATIONS] [-r ROUNDS<=%d] [-c PAIRS<=%d] [-o NAME]\n",
                MAXR, MAXP);
        return 2;
    }
    memset(wdata, 'x', sizeof wdata);
    if (pipe(idle_pipe) != 0)
        die("pipe");
    for (int i = 0; i < npairs; i++)
        pair(&fd_a[i], &fd_b[i]);

    /* pairs: {baseline, alternative}; the difference is per call of the kind
     * that changed, `changed` of the 4 calls per ping-pong */
    static const struct {
        struct variant a, b;
        int changed;
    } pairs[] = {
        {{"read   100/300", RD_READ, WR_WRITE, WR_WRITE, 100, 300, 0, 0},
         {"recv   100/300", RD_RECV, WR_WRITE, WR_WRITE, 100, 300, 0, 0},
         2},
        {{"write  100/300", RD_READ, WR_WRITE, WR_WRITE, 100, 300, 0, 0},
         {"send   100/300", RD_READ, WR_SEND, WR_SEND, 100, 300, 0, 0},
         2},
        {{"writev 100/300", RD_READ, WR_WRITEV, WR_WRITEV, 100, 300, 0, 0},
         {"sendmsg 100/300", RD_READ, WR_SENDMSG, WR_SENDMSG, 100, 300, 0, 0},
         2},
        {{"read+write 100/300", RD_READ, WR_WRITE, WR_WRITE, 100, 300, 0, 0},
         {"recv+send  100/300", RD_RECV, WR_SEND, WR_SEND, 100, 300, 0, 0},
         4},
        /* the gateway's four calls per request: read the request, write it
         * upstream (one buffer), read the response, write head and body (two) */
        {{"rd+wr+wv 100/300", RD_READ, WR_WRITE, WR_WRITEV, 100, 300, 0, 0},
         {"rcv+snd+sm 100/300", RD_RECV, WR_SEND, WR_SENDMSG, 100, 300, 0, 0},
         4},
        {{"read   100/16K", RD_READ, WR_WRITE, WR_WRITE, 100, 16384, 0, 0},
         {"recv   100/16K", RD_RECV, WR_WRITE, WR_WRITE, 100, 16384, 0, 0},
         2},
        {{"write  100/16K", RD_READ, WR_WRITE, WR_WRITE, 100, 16384, 0, 0},
         {"send   100/16K", RD_READ, WR_SEND, WR_SEND, 100, 16384, 0, 0},
         2},
        {{"writev 100/16K", RD_READ, WR_WRITEV, WR_WRITEV, 100, 16384, 0, 0},
         {"sendmsg 100/16K", RD_READ, WR_SENDMSG, WR_SENDMSG, 100, 16384, 0, 0},
         2},
        {{"read EAGAIN", RD_READ, WR_WRITE, WR_WRITE, 0, 0, 1, 0},
         {"recv EAGAIN", RD_RECV, WR_WRITE, WR_WRITE, 0, 0, 1, 0},
         4},
        /* the same calls, one thread against two */
        {{"recv+send 2 threads", RD_RECV, WR_SEND, WR_SEND, 100, 300, 0, 1},
         {"recv+send 1 thread", RD_RECV, WR_SEND, WR_SEND, 100, 300, 0, 0},
         4},
    };
    printf("# %ld ping-pongs (4 syscalls each; EAGAIN: %ld reads) x %d rounds over %d pair(s),"
           " A/B alternating; CPU ns per syscall, medians (min..max of the per-call difference)\n",
           iters, iters * 4, rounds, npairs);
    printf("%-20s %7s | %-20s %7s | %s\n", "A", "ns", "B", "ns", "A-B per changed call");
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        double ac[MAXR], bc[MAXR], dc[MAXR];
        if (only && !strstr(pairs[p].a.name, only))
            continue;
        long n = pairs[p].a.eagain ? iters * 4 : iters;
        for (int r = 0; r < rounds; r++) {
            double m[2];
            measure(&pairs[p].a, &pairs[p].b, n, n / 200 > 0 ? n / 200 : 1, m);
            ac[r] = m[0], bc[r] = m[1];
            /* per call of the kind that changed: per ping-pong over `changed` */
            dc[r] = (m[0] - m[1]) * 4 / pairs[p].changed;
        }
        double d = median(dc, rounds); /* sorts dc */
        printf("%-20s %7.0f | %-20s %7.0f | %5.0f (%.0f..%.0f)\n", pairs[p].a.name,
               median(ac, rounds), pairs[p].b.name, median(bc, rounds), d, dc[0], dc[rounds - 1]);
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double u = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    double sy = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("# getrusage, whole run: user %.2f s, system %.2f s (%.1f %% system)\n", u, sy,
           100 * sy / (u + sy));
    return 0;
}
