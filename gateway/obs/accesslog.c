/*
 * Access log (see accesslog.h): per-worker lock-free rings drained by one writer
 * thread.
 *
 * Ring protocol (single producer = the worker, single consumer = the writer):
 * `head` and `tail` count bytes since the start and only grow; the bytes
 * [tail, head) are queued, at offsets masked by cap - 1. The producer copies a
 * whole line and then publishes it with a release store of head; the consumer
 * reads head with acquire, writes the bytes, then frees them with a release
 * store of tail. A line is either entirely queued or dropped, so the file only
 * ever holds whole lines.
 *
 * Control (flush, reopen, retarget, stop) goes through `mu`: a request bumps
 * `req_seq` and signals the writer, which acknowledges with `done_seq` after its
 * next pass. A new destination is opened by the requesting thread and handed
 * over as `pending_fd` together with each ring's head at that moment (`cut`):
 * the writer writes every ring up to its cut into the old destination, swaps,
 * and only then writes the rest, so a line queued before the switch goes to the
 * old file, one queued after it to the new one, and none is lost.
 *
 * Ownership: the log owns the rings, the scratch buffers and the file
 * descriptor (never fd 2, which belongs to the process).
 */
#include "obs/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "obs/textbuf.h"

#define FD_OFF    (-1)
#define FD_NONE   (-2) /* pending_fd: nothing pending */
#define CACHELINE 64

struct ring {
    _Alignas(CACHELINE) _Atomic size_t head;    /* written by the producer */
    _Alignas(CACHELINE) _Atomic size_t tail;    /* written by the consumer */
    _Alignas(CACHELINE) _Atomic uint64_t lines; /* producer: lines queued */
    _Atomic uint64_t dropped;                   /* producer: lines dropped (ring full) */
    char *buf;                                  /* MG_ACCESSLOG_RING_BYTES */
    struct mg_textbuf line;                     /* producer: scratch for one line */
    int64_t cached_sec;                         /* producer: second of cached_prefix */
    char cached_prefix[24];                     /* "YYYY-MM-DDTHH:MM:SS" */
};

struct mg_accesslog {
    atomic_bool enabled; /* producers check it first */
    atomic_bool kicked;  /* a producer asked for an early drain */
    unsigned nworkers;
    struct ring *rings;

    uv_thread_t thread;
    uv_mutex_t ctl; /* serialises reopen/retarget; guards `path`; never
                       taken by a worker */
    char *path;     /* current file path (reopen), NULL for stderr/off */
    uv_mutex_t mu;  /* the fields below; held only for short steps */
    uv_cond_t wake; /* writer waits here */
    uv_cond_t done; /* flushers wait here */
    bool stop;
    uint64_t req_seq, done_seq;
    int pending_fd;            /* FD_NONE, FD_OFF or a descriptor to switch to */
    size_t *cut;               /* per ring: head when pending_fd was handed over; bytes
                                  before it go to the old destination, after it to the new */
    _Atomic uint64_t switches; /* bumped with each hand-over, after `cut` is taken */

    /* writer thread only */
    int fd;                         /* FD_OFF, STDERR_FILENO or an owned descriptor */
    bool fd_is_file;                /* regular file: no PIPE_BUF batching needed */
    _Atomic uint64_t write_dropped; /* lines lost to write errors */
    time_t last_error_log;
};

static void set_err(char *err, size_t errlen, const char *dest, int e)
{
    if (errlen)
        snprintf(err, errlen, "access_log: cannot open '%s': %s", dest, strerror(e));
}

static bool is_path(const char *dest)
{
    return dest != NULL && strcmp(dest, "off") != 0 && strcmp(dest, "stderr") != 0;
}

/* Opens a destination into *fd: FD_OFF, STDERR_FILENO, or a new descriptor
 * above 2 (so that "> 2" means "ours to close" even if the process started
 * with 0-2 closed). Returns 0 or -errno. May block on the file system. */
static int open_dest(const char *dest, int *fd)
{
    int f;

    if (dest == NULL || strcmp(dest, "off") == 0) {
        *fd = FD_OFF;
        return 0;
    }
    if (strcmp(dest, "stderr") == 0) {
        *fd = STDERR_FILENO;
        return 0;
    }
    f = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0)
        return -errno;
    if (f <= STDERR_FILENO) {
        int hi = fcntl(f, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        int e = errno;
        close(f);
        if (hi < 0)
            return -e;
        f = hi;
    }
    *fd = f;
    return 0;
}

static bool is_regular(int fd)
{
    struct stat st;

    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static void close_dest(int fd)
{
    if (fd > STDERR_FILENO)
        close(fd);
}

static size_t count_lines(const char *p, size_t n)
{
    size_t k = 0;

    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        k++;
    return k;
}

/* Writes iov fully, retrying on EINTR and waiting out EAGAIN (a non-blocking
 * stderr) for up to 10 s without progress. Returns 0 or -errno (the caller
 * drops what was not written). A blocking descriptor may block here: only this
 * thread waits, and the rings absorb (then drop) what workers log meanwhile. */
static int write_all(int fd, struct iovec *iov, int n)
{
    int stalls = 0;

    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && stalls < 10) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                if (poll(&p, 1, 1000) == 0)
                    stalls++;
                continue;
            }
            return -errno;
        }
        stalls = 0;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static void write_failed(struct mg_accesslog *l, int rc, const struct iovec *iov, int n)
{
    uint64_t lost = 0;
    time_t now = time(NULL);

    for (int i = 0; i < n; i++)
        lost += count_lines(iov[i].iov_base, iov[i].iov_len);
    atomic_fetch_add_explicit(&l->write_dropped, lost, memory_order_relaxed);
    if (now - l->last_error_log >= 10) { /* at most one error line per 10 s */
        l->last_error_log = now;
        mg_error("access log write failed: %s (%llu lines dropped)", strerror(-rc),
                 (unsigned long long)lost);
    }
}

/* End of the first batch of [from, from + len): whole lines of at most PIPE_BUF
 * bytes in all, or one line if the first is longer (it cannot be atomic then). */
static size_t pipe_batch(const struct ring *r, size_t from, size_t len)
{
    const size_t mask = MG_ACCESSLOG_RING_BYTES - 1;
    size_t cut = 0, i;

    for (i = 0; i < len && i < PIPE_BUF; i++)
        if (r->buf[(from + i) & mask] == '\n')
            cut = i + 1;
    for (; cut == 0 && i < len; i++)
        if (r->buf[(from + i) & mask] == '\n')
            cut = i + 1;
    return cut ? cut : len;
}

/* Writes [from, to) of ring r: in one writev for a file, in batches of whole
 * lines for a pipe or terminal, so error-log lines never land inside ours. */
static void write_span(struct mg_accesslog *l, struct ring *r, size_t from, size_t to)
{
    const size_t cap = MG_ACCESSLOG_RING_BYTES, mask = cap - 1;

    while (from < to) {
        size_t len = to - from;
        if (!l->fd_is_file && len > PIPE_BUF)
            len = pipe_batch(r, from, len);
        size_t off = from & mask, first = len < cap - off ? len : cap - off;
        struct iovec iov[2] = {{r->buf + off, first}, {r->buf, len - first}};
        struct iovec copy[2] = {iov[0], iov[1]};
        int n = len > first ? 2 : 1;
        int rc = write_all(l->fd, iov, n);
        if (rc < 0)
            write_failed(l, rc, copy, n);
        from += len;
    }
}

/* Drains every ring into l->fd, up to cut[w] when `cut` is given. With no
 * destination (off), drops the bytes instead. Without a cut, stops as soon as a
 * new hand-over (switches != seen) is visible: a line read after it may belong
 * to the new destination (it is then left for the next pass). */
static bool drain(struct mg_accesslog *l, const size_t *cut, uint64_t seen)
{
    for (unsigned w = 0; w < l->nworkers; w++) {
        struct ring *r = &l->rings[w];
        size_t head = cut ? cut[w] : atomic_load_explicit(&r->head, memory_order_acquire);
        if (!cut && atomic_load_explicit(&l->switches, memory_order_acquire) != seen)
            return false;
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (head == tail || head - tail > MG_ACCESSLOG_RING_BYTES)
            continue; /* nothing, or cut already passed */
        if (l->fd != FD_OFF)
            write_span(l, r, tail, head);
        atomic_store_explicit(&r->tail, head, memory_order_release);
    }
    return true;
}

static void writer_main(void *arg)
{
    struct mg_accesslog *l = arg;
    size_t *cut = malloc(l->nworkers * sizeof(size_t));
    bool done = false;

    if (cut == NULL)
        mg_fatal("out of memory (access log)");
    uv_mutex_lock(&l->mu);
    while (!done) {
        if (!l->stop && l->req_seq == l->done_seq && !atomic_load(&l->kicked))
            (void)uv_cond_timedwait(&l->wake, &l->mu, (uint64_t)MG_ACCESSLOG_FLUSH_MS * 1000000);
        atomic_store(&l->kicked, false);
        uint64_t seq = l->req_seq;
        uint64_t seen = atomic_load_explicit(&l->switches, memory_order_relaxed);
        int pending = l->pending_fd;
        if (pending != FD_NONE)
            memcpy(cut, l->cut, l->nworkers * sizeof(size_t));
        l->pending_fd = FD_NONE;
        bool stop = l->stop;
        uv_mutex_unlock(&l->mu);

        if (pending != FD_NONE) {
            drain(l, cut, seen); /* queued before the switch: old destination */
            close_dest(l->fd);
            l->fd = pending;
            l->fd_is_file = is_regular(pending);
        }
        bool complete = drain(l, NULL, seen);

        uv_mutex_lock(&l->mu);
        if (complete) { /* else a new switch came: go round again before acknowledging */
            l->done_seq = seq;
            uv_cond_broadcast(&l->done);
            done = stop;
        }
    }
    uv_mutex_unlock(&l->mu);
    free(cut);
}

struct mg_accesslog *mg_accesslog_open(const char *dest, unsigned nworkers, char *err,
                                       size_t errlen)
{
    struct mg_accesslog *l;
    int fd, rc = open_dest(dest, &fd);

    if (rc < 0) {
        set_err(err, errlen, dest, -rc);
        return NULL;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        mg_fatal("out of memory (access log)");
    l->nworkers = nworkers ? nworkers : 1;
    l->rings = aligned_alloc(CACHELINE, l->nworkers * sizeof(struct ring));
    if (l->rings == NULL)
        mg_fatal("out of memory (access log)");
    memset(l->rings, 0, l->nworkers * sizeof(struct ring));
    for (unsigned w = 0; w < l->nworkers; w++) {
        struct ring *r = &l->rings[w];
        atomic_init(&r->head, 0);
        atomic_init(&r->tail, 0);
        atomic_init(&r->lines, 0);
        atomic_init(&r->dropped, 0);
        r->buf = malloc(MG_ACCESSLOG_RING_BYTES);
        if (r->buf == NULL)
            mg_fatal("out of memory (access log ring)");
        r->cached_sec = -1;
    }
    atomic_init(&l->enabled, fd != FD_OFF);
    atomic_init(&l->kicked, false);
    atomic_init(&l->write_dropped, 0);
    atomic_init(&l->switches, 0);
    l->fd = fd;
    l->fd_is_file = is_regular(fd);
    l->pending_fd = FD_NONE;
    l->cut = calloc(l->nworkers, sizeof(size_t));
    if (l->cut == NULL)
        mg_fatal("out of memory (access log)");
    l->path = is_path(dest) ? strdup(dest) : NULL;
    if (uv_mutex_init(&l->ctl) || uv_mutex_init(&l->mu) || uv_cond_init(&l->wake) ||
        uv_cond_init(&l->done))
        mg_fatal("cannot create access log locks");
    if (uv_thread_create(&l->thread, writer_main, l) != 0)
        mg_fatal("cannot start the access log writer thread");
    return l;
}

bool mg_accesslog_enabled(const struct mg_accesslog *l)
{
    return l != NULL && atomic_load_explicit(&l->enabled, memory_order_relaxed);
}

/* ------------------------------------------------------------ producer */

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" with quotes; the date part is cached per second. */
static char *put_time(struct ring *r, char *o, int64_t ms)
{
    int64_t sec;
    int frac;

    if (ms <= 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    sec = ms / 1000;
    if (sec != r->cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(r->cached_prefix, sizeof(r->cached_prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        r->cached_sec = sec;
    }
    frac = (int)(ms % 1000);
    *o++ = '"';
    o = memcpy(o, r->cached_prefix, 19) + 19;
    *o++ = '.';
    *o++ = (char)('0' + frac / 100);
    *o++ = (char)('0' + frac / 10 % 10);
    *o++ = (char)('0' + frac % 10);
    *o++ = 'Z';
    *o++ = '"';
    return o;
}

#define PUT_LIT(o, lit) ((char *)memcpy((o), (lit), sizeof(lit) - 1) + sizeof(lit) - 1)

static char *put_str(char *o, const char *p, size_t n)
{
    return p == NULL ? PUT_LIT(o, "null") : mg_fmt_json_str(o, p, n);
}

/* DESIGN 10.8's default: every field but the two halves of `tls`. */
static const uint8_t default_fields[] = {
    MG_AF_TIME,       MG_AF_REQUEST_ID, MG_AF_CLIENT_IP,
    MG_AF_METHOD,     MG_AF_HOST,       MG_AF_PATH,
    MG_AF_STATUS,     MG_AF_BYTES_IN,   MG_AF_BYTES_OUT,
    MG_AF_ROUTE,      MG_AF_UPSTREAM,   MG_AF_UPSTREAM_STATUS,
    MG_AF_ATTEMPTS,   MG_AF_DURATION,   MG_AF_UPSTREAM_DURATION,
    MG_AF_USER_AGENT, MG_AF_TLS,        MG_AF_PROTOCOL,
    MG_AF_ERROR,
};

static char *put_key(char *o, bool first, const char *key)
{
    size_t n = strlen(key);

    *o++ = first ? '{' : ',';
    *o++ = '"';
    o = (char *)memcpy(o, key, n) + n;
    *o++ = '"';
    *o++ = ':';
    return o;
}

static char *put_cstr(char *o, const char *s)
{
    return put_str(o, s, s ? strlen(s) : 0);
}

static char *put_status(char *o, int status)
{
    if (status < 0) {
        *o++ = '-';
        return mg_fmt_u64(o, (uint64_t)0 - (uint64_t)status);
    }
    return mg_fmt_u64(o, (uint64_t)status);
}

/* One field's key and value. */
static char *put_field(struct ring *r, char *o, bool first, int f, const struct mg_access_entry *e)
{
    const char *err =
        e->error > MG_ERR_NONE && e->error < MG_ERR__COUNT ? mg_error_name(e->error) : NULL;

    if (f == MG_AF_TLS) {
        o = put_field(r, o, first, MG_AF_TLS_PROTOCOL, e);
        o = put_field(r, o, false, MG_AF_TLS_CIPHER, e);
        return put_field(r, o, false, MG_AF_TLS_CLIENT_SUBJECT, e);
    }
    o = put_key(o, first, mg_access_field_name((enum mg_access_field)f));
    switch ((enum mg_access_field)f) {
    case MG_AF_TIME:
        return put_time(r, o, e->time_ms);
    case MG_AF_REQUEST_ID:
        return put_str(o, e->request_id.p, e->request_id.len);
    case MG_AF_CLIENT_IP:
        return put_str(o, e->client_ip.p, e->client_ip.len);
    case MG_AF_METHOD:
        return put_str(o, e->method.p, e->method.len);
    case MG_AF_HOST:
        return put_str(o, e->host.p, e->host.len);
    case MG_AF_PATH:
        return put_str(o, e->path.p, e->path.len);
    case MG_AF_STATUS:
        return put_status(o, e->status);
    case MG_AF_BYTES_IN:
        return mg_fmt_u64(o, e->bytes_in);
    case MG_AF_BYTES_OUT:
        return mg_fmt_u64(o, e->bytes_out);
    case MG_AF_ROUTE:
        return put_cstr(o, e->route);
    case MG_AF_UPSTREAM:
        return put_cstr(o, e->upstream);
    case MG_AF_UPSTREAM_STATUS:
        return e->upstream_status > 0 ? put_status(o, e->upstream_status) : PUT_LIT(o, "null");
    case MG_AF_ATTEMPTS:
        return mg_fmt_u64(o, e->attempts);
    case MG_AF_DURATION:
        return mg_fmt_seconds(o, e->duration_ns, 6);
    case MG_AF_UPSTREAM_DURATION:
        if (e->upstream_duration_ns < 0)
            return PUT_LIT(o, "null");
        return mg_fmt_seconds(o, (uint64_t)e->upstream_duration_ns, 6);
    case MG_AF_USER_AGENT:
        return put_str(o, e->user_agent.p, e->user_agent.len);
    case MG_AF_PROTOCOL:
        return put_cstr(o, e->protocol);
    case MG_AF_ERROR:
        return put_cstr(o, err);
    case MG_AF_TLS_PROTOCOL:
        return put_cstr(o, e->tls_protocol);
    case MG_AF_TLS_CIPHER:
        return put_cstr(o, e->tls_cipher);
    case MG_AF_TLS_CLIENT_SUBJECT:
        return put_cstr(o, e->tls_client_subject);
    default:
        return o;
    }
}

static size_t len_or0(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Formats the line into r->line with one reservation: the bound counts every
 * string at its worst case (6 bytes per input byte) plus a fixed part per
 * field (key and number). */
static void format_line(struct ring *r, const struct mg_access_entry *e)
{
    const uint8_t *fields = e->fields ? e->fields : default_fields;
    size_t nfields = e->fields ? e->nfields : sizeof(default_fields);
    size_t strings = e->request_id.len + e->client_ip.len + e->method.len + e->path.len +
                     e->host.len + e->user_agent.len + len_or0(e->route) + len_or0(e->upstream) +
                     32 + len_or0(e->tls_protocol) + len_or0(e->tls_cipher) + len_or0(e->protocol) +
                     len_or0(e->tls_client_subject);
    struct mg_textbuf *b = &r->line;
    char *o;

    mg_textbuf_reset(b);
    mg_textbuf_reserve(b, 6 * strings + 64 * (nfields + 2) + 16);
    o = b->p;
    for (size_t i = 0; i < nfields; i++)
        o = put_field(r, o, i == 0, fields[i], e);
    o = PUT_LIT(o, "}\n");
    b->len = (size_t)(o - b->p);
    MG_ASSERT(b->len < b->cap);
}

static void kick(struct mg_accesslog *l)
{
    if (atomic_load_explicit(&l->kicked, memory_order_relaxed) ||
        atomic_exchange_explicit(&l->kicked, true, memory_order_relaxed))
        return;
    uv_mutex_lock(&l->mu);
    uv_cond_signal(&l->wake);
    uv_mutex_unlock(&l->mu);
}

static inline void count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

void mg_accesslog_write(struct mg_accesslog *l, unsigned worker, const struct mg_access_entry *e)
{
    const size_t cap = MG_ACCESSLOG_RING_BYTES, mask = cap - 1;
    struct ring *r;

    if (!mg_accesslog_enabled(l))
        return;
    MG_ASSERT(worker < l->nworkers);
    r = &l->rings[worker];
    format_line(r, e);

    size_t len = r->line.len;
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (len > cap - (head - tail)) {
        count(&r->dropped);
        kick(l);
        return;
    }
    size_t off = head & mask, first = len < cap - off ? len : cap - off;
    memcpy(r->buf + off, r->line.p, first);
    memcpy(r->buf, r->line.p + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release);
    count(&r->lines);
    if (head + len - tail > cap / 2)
        kick(l);
}

/* ------------------------------------------------------------ control */

/* Hands a newly opened destination to the writer. */
static void hand_over(struct mg_accesslog *l, int fd)
{
    uv_mutex_lock(&l->mu);
    if (l->pending_fd != FD_NONE)
        close_dest(l->pending_fd); /* superseded before the writer saw it */
    l->pending_fd = fd;
    for (unsigned w = 0; w < l->nworkers; w++)
        l->cut[w] = atomic_load_explicit(&l->rings[w].head, memory_order_acquire);
    atomic_fetch_add_explicit(&l->switches, 1, memory_order_release);
    l->req_seq++;
    uv_cond_signal(&l->wake);
    uv_mutex_unlock(&l->mu);
}

int mg_accesslog_reopen(struct mg_accesslog *l)
{
    int fd, rc = 0;

    if (l == NULL)
        return 0;
    uv_mutex_lock(&l->ctl);
    if (l->path != NULL) {
        rc = open_dest(l->path, &fd);
        if (rc < 0)
            mg_error("access log: cannot reopen '%s': %s", l->path, strerror(-rc));
        else
            hand_over(l, fd);
    }
    uv_mutex_unlock(&l->ctl);
    return rc;
}

int mg_accesslog_retarget(struct mg_accesslog *l, const char *dest, char *err, size_t errlen)
{
    int fd, rc;

    uv_mutex_lock(&l->ctl);
    rc = open_dest(dest, &fd);
    if (rc < 0) {
        uv_mutex_unlock(&l->ctl);
        set_err(err, errlen, dest, -rc);
        return rc;
    }
    free(l->path);
    l->path = is_path(dest) ? strdup(dest) : NULL;
    if (fd == FD_OFF)
        atomic_store(&l->enabled, false); /* stop producers first, then drain */
    hand_over(l, fd);
    if (fd != FD_OFF)
        atomic_store(&l->enabled, true); /* lines wait in the rings until the swap */
    uv_mutex_unlock(&l->ctl);
    return 0;
}

void mg_accesslog_flush(struct mg_accesslog *l)
{
    uint64_t seq;

    if (l == NULL)
        return;
    uv_mutex_lock(&l->mu);
    seq = ++l->req_seq;
    uv_cond_signal(&l->wake);
    while (l->done_seq < seq)
        uv_cond_wait(&l->done, &l->mu);
    uv_mutex_unlock(&l->mu);
}

void mg_accesslog_stats(struct mg_accesslog *l, uint64_t *lines, uint64_t *dropped)
{
    uint64_t n = 0, d = 0;

    if (l != NULL) {
        d = atomic_load_explicit(&l->write_dropped, memory_order_relaxed);
        for (unsigned w = 0; w < l->nworkers; w++) {
            n += atomic_load_explicit(&l->rings[w].lines, memory_order_relaxed);
            d += atomic_load_explicit(&l->rings[w].dropped, memory_order_relaxed);
        }
    }
    if (lines)
        *lines = n;
    if (dropped)
        *dropped = d;
}

void mg_accesslog_close(struct mg_accesslog *l)
{
    if (l == NULL)
        return;
    uv_mutex_lock(&l->mu);
    l->stop = true;
    l->req_seq++;
    uv_cond_signal(&l->wake);
    uv_mutex_unlock(&l->mu);
    uv_thread_join(&l->thread);
    if (l->pending_fd != FD_NONE)
        close_dest(l->pending_fd);
    close_dest(l->fd);
    for (unsigned w = 0; w < l->nworkers; w++) {
        free(l->rings[w].buf);
        mg_textbuf_free(&l->rings[w].line);
    }
    free(l->rings);
    free(l->cut);
    free(l->path);
    uv_cond_destroy(&l->wake);
    uv_cond_destroy(&l->done);
    uv_mutex_destroy(&l->mu);
    uv_mutex_destroy(&l->ctl);
    free(l);
}
