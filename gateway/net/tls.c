/*
 * TLS streams (see tls.h).
 *
 * Ownership: the stream is malloc'd when a TCP connection is wrapped and freed
 * after its three handles (the TCP handle it took over, its timer, its pump)
 * are closed, right after the owner's on_closed.
 *
 * OpenSSL reads and writes through a BIO of our own rather than memory BIOs
 * (whose copies, BUF_MEM bookkeeping and a dozen BIO_ctrl calls per record
 * cost about 2k instructions per request). Ciphertext read from the socket
 * lands in one buffer per worker thread and OpenSSL reads it from there; only
 * what it leaves unread when the read callback returns is copied into the
 * stream (s->keep). Ciphertext OpenSSL writes is gathered in another
 * per-thread buffer (the stage) until the call that produced it returns, then
 * written at once when the socket takes it, so a response that fits the
 * socket costs no allocation. Only what the socket refuses is copied into
 * chunks queued behind one uv_write at a time.
 *
 * Callbacks to the owner never run inside a call the owner made (write
 * completions and plaintext left inside OpenSSL are delivered from the pump,
 * an idle handle run at the next loop iteration), so the owner's state machine
 * is never re-entered.
 */
#include "net/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define IO_BUF     16384        /* one TLS record's worth */
#define OUT_HIGH   (256 * 1024) /* queued ciphertext above which writes wait */
#define MAX_INLINE 16           /* chunks in one socket write */
#define STAGE_BUF  (32 * 1024)  /* a handshake flight, or two full records */

struct chunk {
    struct chunk *next;
    size_t len;
    char data[IO_BUF];
};

/* An owner's write request waiting for its ciphertext to reach the kernel. */
struct pend {
    struct pend *next;
    uv_write_t *req;
    const uv_buf_t *bufs;
    unsigned n;
    uv_write_cb cb;
    uint64_t end; /* ciphertext total once it is encrypted */
};

struct socket_write {
    uv_write_t req;
    struct mg_tls_stream *s;
    struct chunk *chunks[MAX_INLINE];
    unsigned n;
    size_t bytes;
};

struct mg_tls_stream {
    struct mg_transport t; /* what the owner sees; first */
    struct mg_tcp *tcp;    /* the socket below (the owner's memory) */
    SSL *ssl;
    const char *rd; /* ciphertext OpenSSL has not read: in in_buf or in keep */
    size_t rd_len;
    char *keep; /* what it left of earlier socket reads */
    size_t keep_cap;
    int write_error;  /* from a socket write made inside OpenSSL's write */
    uv_timer_t timer; /* server handshake timeout */
    uv_idle_t pump;   /* deferred deliveries */
    unsigned handles;
    bool server, done, owner_reading, tcp_reading, eof_in, failed, pumping;
    bool draining; /* the owner closed: queued ciphertext still goes out, then close */
    bool closing;  /* the handles are closing */
    int error;
    void (*on_ready)(struct mg_transport *t, int status);
    void (*on_handshake)(struct mg_transport *t, int status); /* see mg_tls_on_handshake */
    bool hello;                                               /* the peer sent a byte */
    char *subject;                /* info.client_subject (OPENSSL_malloc'd), or NULL */
    struct chunk *out, *out_tail; /* ciphertext refused by the socket so far */
    size_t out_bytes;
    uint64_t queued_total, written_total; /* ciphertext bytes */
    struct socket_write *inflight;
    struct pend *wait, *wait_tail; /* not encrypted yet (handshake, backpressure) */
    struct pend *sent, *sent_tail; /* encrypted, not yet all written */
    struct mg_tls_info info;
};

static _Thread_local char in_buf[IO_BUF];
static _Thread_local char plain_buf[IO_BUF];
/* Ciphertext written by OpenSSL for stage_owner and not yet pushed. */
static _Thread_local char stage[STAGE_BUF];
static _Thread_local size_t stage_len;
static _Thread_local struct mg_tls_stream *stage_owner;

static struct mg_tls_stream *of_t(const struct mg_transport *t)
{
    return (struct mg_tls_stream *)t;
}

static void schedule(struct mg_tls_stream *s);
static void process(struct mg_tls_stream *s);

/* ------------------------------------------------------------ ciphertext out */

static void queue_chunkwise(struct mg_tls_stream *s, const char *p, size_t n)
{
    while (n) {
        struct chunk *c = s->out_tail;
        if (!c || c->len == IO_BUF) {
            if (!(c = malloc(sizeof *c)))
                mg_fatal("out of memory (TLS output)");
            c->next = NULL;
            c->len = 0;
            if (s->out_tail)
                s->out_tail->next = c;
            else
                s->out = c;
            s->out_tail = c;
        }
        size_t k = IO_BUF - c->len < n ? IO_BUF - c->len : n;
        memcpy(c->data + c->len, p, k);
        c->len += k;
        s->out_bytes += k;
        p += k;
        n -= k;
    }
}

static void close_now(struct mg_tls_stream *s);

/* The handshake's end, once, for the owner's metrics (see tls.h). */
static void report_handshake(struct mg_tls_stream *s, int status)
{
    void (*cb)(struct mg_transport *, int) = s->on_handshake;
    s->on_handshake = NULL;
    if (cb && !s->draining && (status == 0 || s->hello || status == UV_ETIMEDOUT))
        cb(&s->t, status);
}

static void fail(struct mg_tls_stream *s, int err)
{
    if (s->failed)
        return;
    s->failed = true;
    s->error = err;
    if (!s->done)
        report_handshake(s, err);
    if (s->draining)
        close_now(s);
    else
        schedule(s);
}

static void on_socket_written(uv_write_t *req, int status);

/* Starts one socket write of the queued chunks, if none is in flight. */
static void write_queued(struct mg_tls_stream *s)
{
    if (s->inflight || !s->out || s->closing)
        return;
    if (s->failed && !s->draining)
        return;
    struct socket_write *w = malloc(sizeof *w);
    if (!w)
        mg_fatal("out of memory (TLS write)");
    uv_buf_t bufs[MAX_INLINE];
    w->s = s;
    w->n = 0;
    w->bytes = 0;
    while (s->out && w->n < MAX_INLINE) {
        struct chunk *c = s->out;
        s->out = c->next;
        w->chunks[w->n] = c;
        bufs[w->n++] = uv_buf_init(c->data, (unsigned)c->len);
        w->bytes += c->len;
    }
    if (!s->out)
        s->out_tail = NULL;
    s->out_bytes -= w->bytes;
    w->req.data = w;
    s->inflight = w;
    int rc = s->tcp->t.ops->write(&s->tcp->t, &w->req, bufs, w->n, on_socket_written);
    if (rc) {
        s->inflight = NULL;
        for (unsigned i = 0; i < w->n; i++)
            free(w->chunks[i]);
        free(w);
        fail(s, rc);
    }
}

/* Sends ciphertext towards the socket: at once when nothing is queued before
 * it and the socket takes it, the rest into the queue. Returns a socket error. */
static int emit(struct mg_tls_stream *s, const char *p, size_t n)
{
    size_t done = 0;
    if (!s->out && !s->inflight && !s->closing) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        int w = s->tcp->t.ops->try_write(&s->tcp->t, &b, 1);
        if (w < 0)
            return w;
        done = w > 0 ? (size_t)w : 0;
        s->written_total += done;
    }
    queue_chunkwise(s, p + done, n - done);
    return 0;
}

/* The stage's ciphertext goes to the stream it belongs to. */
static void flush_stage(void)
{
    struct mg_tls_stream *s = stage_owner;
    size_t n = stage_len;
    stage_len = 0;
    stage_owner = NULL;
    if (n && !s->write_error)
        s->write_error = emit(s, stage, n);
}

/* Moves the ciphertext OpenSSL produced for s towards the socket. Called after
 * every OpenSSL call that may write. */
static void push(struct mg_tls_stream *s)
{
    if (stage_owner == s)
        flush_stage();
    if (s->write_error) {
        fail(s, s->write_error);
        return;
    }
    write_queued(s);
}

/* Owner writes whose ciphertext has all reached the kernel complete, from the
 * pump only (never inside a call the owner made). */
static void complete_sent(struct mg_tls_stream *s)
{
    while (s->sent && s->sent->end <= s->written_total && !s->closing) {
        struct pend *p = s->sent;
        s->sent = p->next;
        if (!s->sent)
            s->sent_tail = NULL;
        uv_write_cb cb = p->cb;
        uv_write_t *req = p->req;
        free(p);
        cb(req, 0);
    }
}

static int write_record(struct mg_tls_stream *s, const char *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        int w = SSL_write(s->ssl, p + off, (int)(len - off));
        if (w <= 0) {
            ERR_clear_error();
            return UV_EPROTO;
        }
        off += (size_t)w;
    }
    return 0;
}

/* One SSL_write per buffer would make a record per buffer (a response's head
 * and its body: two records, twice OpenSSL's per-record cost). Buffers are
 * gathered into records of up to IO_BUF bytes; only a buffer larger than that
 * is written from where it is. */
static int encrypt(struct mg_tls_stream *s, const uv_buf_t *bufs, unsigned n)
{
    size_t have = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *p = bufs[i].base;
        size_t len = bufs[i].len;
        if (have && have + len > IO_BUF) {
            if (write_record(s, plain_buf, have))
                return UV_EPROTO;
            have = 0;
        }
        if (len > IO_BUF) {
            if (write_record(s, p, len))
                return UV_EPROTO;
            continue;
        }
        memcpy(plain_buf + have, p, len);
        have += len;
    }
    return have ? write_record(s, plain_buf, have) : 0;
}

/* Encrypts waiting writes while the queue has room (after the handshake). */
static void encrypt_waiting(struct mg_tls_stream *s)
{
    while (s->wait && s->done && !s->failed && s->out_bytes <= OUT_HIGH) {
        struct pend *p = s->wait;
        s->wait = p->next;
        if (!s->wait)
            s->wait_tail = NULL;
        int rc = encrypt(s, p->bufs, p->n);
        p->next = NULL;
        if (s->sent_tail)
            s->sent_tail->next = p;
        else
            s->sent = p;
        s->sent_tail = p;
        if (rc) {
            fail(s, rc);
            return;
        }
        push(s);
        p->end = s->queued_total;
    }
    if (s->sent)
        schedule(s);
}

static void on_socket_written(uv_write_t *req, int status)
{
    struct socket_write *w = req->data;
    struct mg_tls_stream *s = w->s;
    for (unsigned i = 0; i < w->n; i++)
        free(w->chunks[i]);
    s->inflight = NULL;
    if (status == 0)
        s->written_total += w->bytes;
    free(w);
    if (s->closing)
        return;
    if (status < 0 || (s->draining && !s->out)) {
        if (s->draining)
            close_now(s);
        else
            fail(s, status);
        return;
    }
    write_queued(s);
    encrypt_waiting(s);
    schedule(s);
}

/* ------------------------------------------------------------ owner's interface */

static int tls_try_write(struct mg_transport *t, const uv_buf_t *bufs, unsigned n)
{
    struct mg_tls_stream *s = of_t(t);
    if (s->failed)
        return s->error;
    if (!s->done || s->wait || s->out_bytes > OUT_HIGH)
        return 0; /* keep order behind waiting writes; backpressure */
    int rc = encrypt(s, bufs, n);
    if (rc) {
        fail(s, rc);
        return rc;
    }
    push(s);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    return (int)total;
}

static int tls_write(struct mg_transport *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                     uv_write_cb cb)
{
    struct mg_tls_stream *s = of_t(t);
    if (s->failed || s->closing || s->draining)
        return s->failed ? s->error : UV_ECANCELED;
    struct pend *p = malloc(sizeof *p);
    if (!p)
        mg_fatal("out of memory (TLS write request)");
    *p = (struct pend){.req = req, .bufs = bufs, .n = n, .cb = cb};
    if (s->wait_tail)
        s->wait_tail->next = p;
    else
        s->wait = p;
    s->wait_tail = p;
    encrypt_waiting(s);
    return 0;
}

static size_t tls_queued(const struct mg_transport *t)
{
    const struct mg_tls_stream *s = of_t(t);
    return s->out_bytes + (s->wait || s->sent ? 1 : 0) + s->tcp->t.ops->queued(&s->tcp->t);
}

static void update_tcp_reading(struct mg_tls_stream *s)
{
    bool want =
        !s->closing && !s->draining && !s->failed && !s->eof_in && (!s->done || s->owner_reading);
    if (want == s->tcp_reading)
        return;
    s->tcp_reading = want;
    if (want)
        mg_transport_read_start(&s->tcp->t);
    else
        mg_transport_read_stop(&s->tcp->t);
}

static int tls_read_start(struct mg_transport *t)
{
    struct mg_tls_stream *s = of_t(t);
    s->owner_reading = true;
    update_tcp_reading(s);
    schedule(s); /* plaintext may wait inside OpenSSL */
    return 0;
}

static void tls_read_stop(struct mg_transport *t)
{
    struct mg_tls_stream *s = of_t(t);
    s->owner_reading = false;
    update_tcp_reading(s);
}

static void handle_closed(struct mg_tls_stream *s)
{
    if (--s->handles)
        return;
    /* Pending owner writes end as a close ends libuv's: cancelled. */
    struct pend *lists[2] = {s->sent, s->wait};
    s->sent = s->wait = NULL;
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            struct pend *p = lists[i];
            lists[i] = p->next;
            p->cb(p->req, UV_ECANCELED);
            free(p);
        }
    while (s->out) {
        struct chunk *c = s->out;
        s->out = c->next;
        free(c);
    }
    if (stage_owner == s) {
        stage_len = 0;
        stage_owner = NULL;
    }
    SSL_free(s->ssl); /* and its BIO */
    free(s->keep);
    OPENSSL_free(s->subject);
    s->t.on_closed(&s->t);
    free(s);
}

/* Queued ciphertext is part of what the owner wrote (try_write took it): it
 * goes out before the socket closes, within a bound. */
#define CLOSE_DRAIN_MS 5000

static void on_handle_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_tcp_closed(struct mg_transport *t)
{
    handle_closed(t->owner);
}

static void close_now(struct mg_tls_stream *s)
{
    if (s->closing)
        return;
    s->closing = true;
    s->tcp->t.on_closed = on_tcp_closed;
    mg_transport_close(&s->tcp->t);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->pump, on_handle_closed);
}

static void on_drain_timeout(uv_timer_t *h)
{
    close_now(h->data);
}

static void tls_close(struct mg_transport *t)
{
    struct mg_tls_stream *s = of_t(t);
    if (s->closing || s->draining)
        return;
    s->draining = true;
    s->owner_reading = false;
    if (s->done && !s->failed) {
        SSL_shutdown(s->ssl); /* close_notify, best effort: no waiting for the peer's */
        ERR_clear_error();
        push(s);
    }
    if (s->failed || (!s->out && !s->inflight)) {
        close_now(s);
        return;
    }
    mg_transport_read_stop(&s->tcp->t);
    s->tcp_reading = false;
    uv_timer_start(&s->timer, on_drain_timeout, CLOSE_DRAIN_MS, 0);
}

static void tls_peer_ip(struct mg_transport *t, char *out, size_t len)
{
    struct mg_tcp *tcp = of_t(t)->tcp;
    tcp->t.ops->peer_ip(&tcp->t, out, len);
}

static const struct mg_transport_ops tls_ops = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .try_write = tls_try_write,
    .write = tls_write,
    .queued = tls_queued,
    .close = tls_close,
    .peer_ip = tls_peer_ip,
};

/* ------------------------------------------------------------ reading */

static void handshake_done(struct mg_tls_stream *s)
{
    s->done = true;
    uv_timer_stop(&s->timer);
    s->info.protocol = SSL_get_version(s->ssl);
    s->info.cipher = SSL_get_cipher_name(s->ssl);
    s->info.sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
    s->info.resumed = SSL_session_reused(s->ssl) != 0;
    /* Computed once here rather than per request: plugins and logs read it
     * for every request of the connection. A certificate is only present on
     * a server stream when client_ca asked for one, and then it verified. */
    X509 *peer = s->server ? SSL_get0_peer_certificate(s->ssl) : NULL;
    if (peer && SSL_get_verify_result(s->ssl) == X509_V_OK) {
        s->subject = X509_NAME_oneline(X509_get_subject_name(peer), NULL, 0);
        s->info.client_subject = s->subject;
    }
    report_handshake(s, 0);
    update_tcp_reading(s);
    if (!s->server && s->on_ready)
        s->on_ready(&s->t, 0);
    if (!s->closing)
        encrypt_waiting(s);
}

static void handshake(struct mg_tls_stream *s)
{
    int rc = SSL_do_handshake(s->ssl);
    push(s); /* our flight of the handshake, whatever happens */
    if (rc == 1) {
        handshake_done(s);
        return;
    }
    int e = SSL_get_error(s->ssl, rc);
    if (e == SSL_ERROR_WANT_READ && !s->eof_in)
        return;
    char why[128] = "closed during the handshake";
    unsigned long code = ERR_peek_error();
    if (code)
        ERR_error_string_n(code, why, sizeof why);
    ERR_clear_error();
    mg_debug("TLS handshake failed: %s", why);
    fail(s, UV_EPROTO);
}

/* Plaintext for the owner while it reads and has room. */
static void deliver(struct mg_tls_stream *s)
{
    while (s->owner_reading && !s->closing) {
        uv_buf_t b = {0};
        s->t.on_alloc(&s->t, &b);
        if (b.len == 0)
            break;
        int r = SSL_read(s->ssl, b.base, (int)b.len);
        if (r > 0) {
            s->t.on_read(&s->t, r);
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ && !s->eof_in)
            break; /* nothing was queued: no ERR_clear_error (about 400 instructions) */
        ERR_clear_error();
        push(s);
        s->eof_in = true;
        s->owner_reading = false;
        /* Only close_notify is an end. A FIN without it may be an attacker's
         * cut (RFC 8446 6.1): the owner hears an error, so that a body the
         * close delimits is not taken for complete. */
        s->t.on_read(&s->t, e == SSL_ERROR_ZERO_RETURN ? UV_EOF : UV_EPROTO);
        return;
    }
    push(s); /* TLS 1.3 may answer key updates while reading */
}

static void process(struct mg_tls_stream *s)
{
    if (s->closing || s->draining)
        return;
    if (!s->done && !s->failed)
        handshake(s);
    if (s->failed) {
        if (!s->done && !s->server && s->on_ready) {
            void (*ready)(struct mg_transport *, int) = s->on_ready;
            s->on_ready = NULL;
            ready(&s->t, s->error);
        } else if (s->owner_reading || !s->done) {
            s->owner_reading = false;
            s->t.on_read(&s->t, s->error);
        }
        return;
    }
    if (s->done)
        deliver(s);
    if (!s->closing)
        update_tcp_reading(s);
}

/* s->keep = p[0..n) + in_buf[0..more): the unread ciphertext, kept by the
 * stream. p may point into keep itself. */
static void keep(struct mg_tls_stream *s, const char *p, size_t n, size_t more)
{
    if (n + more > s->keep_cap) {
        size_t cap = s->keep_cap ? s->keep_cap : IO_BUF;
        while (cap < n + more)
            cap *= 2;
        char *k = malloc(cap);
        if (!k)
            mg_fatal("out of memory (TLS input)");
        memcpy(k, p, n);
        free(s->keep);
        s->keep = k;
        s->keep_cap = cap;
    } else {
        memmove(s->keep, p, n);
    }
    memcpy(s->keep + n, in_buf, more);
    s->rd = s->keep;
    s->rd_len = n + more;
}

/* A socket read of n bytes into in_buf: OpenSSL reads them from there, unless
 * older ciphertext waits (then they join it). */
static void take(struct mg_tls_stream *s, size_t n)
{
    if (s->rd_len)
        keep(s, s->rd, s->rd_len, n);
    else {
        s->rd = in_buf;
        s->rd_len = n;
    }
}

static void on_tcp_alloc(struct mg_transport *t, uv_buf_t *buf)
{
    (void)t;
    *buf = uv_buf_init(in_buf, sizeof in_buf);
}

static void on_tcp_read(struct mg_transport *t, ssize_t nread)
{
    struct mg_tls_stream *s = t->owner;
    if (nread < 0) {
        s->eof_in = true;
        if (nread != UV_EOF)
            s->error = (int)nread;
    } else {
        s->hello = true;
        take(s, (size_t)nread);
    }
    process(s);
    if (s->rd_len && s->rd >= in_buf && s->rd < in_buf + IO_BUF)
        keep(s, s->rd, s->rd_len, 0); /* in_buf is the next connection's */
}

/* ------------------------------------------------------------ the pump */

static void on_pump(uv_idle_t *h)
{
    struct mg_tls_stream *s = h->data;
    uv_idle_stop(h);
    s->pumping = false;
    complete_sent(s);
    if (!s->closing && (s->failed || s->owner_reading))
        process(s);
}

static void schedule(struct mg_tls_stream *s)
{
    if (s->pumping || s->closing)
        return;
    s->pumping = true;
    uv_idle_start(&s->pump, on_pump);
}

static void on_timeout(uv_timer_t *h)
{
    struct mg_tls_stream *s = h->data;
    if (!s->done) {
        mg_debug("TLS handshake timed out");
        fail(s, UV_ETIMEDOUT);
    }
}

/* ------------------------------------------------------------ the BIO */

/* No data is "more later" (a retry), never an end of file: the socket's end
 * is s->eof_in, which deliver() and handshake() look at. */
static int bio_read(BIO *b, char *out, size_t len, size_t *got)
{
    struct mg_tls_stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!s->rd_len) {
        BIO_set_retry_read(b);
        *got = 0;
        return 0;
    }
    size_t k = len < s->rd_len ? len : s->rd_len;
    memcpy(out, s->rd, k);
    s->rd += k;
    s->rd_len -= k;
    *got = k;
    return 1;
}

/* Gathers into the stage; whatever is staged for another stream (or does not
 * fit) goes out first, so bytes never reach the wrong socket. */
static int bio_write(BIO *b, const char *p, size_t n, size_t *put)
{
    struct mg_tls_stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    s->queued_total += n;
    *put = n;
    if (stage_len && (stage_owner != s || stage_len + n > STAGE_BUF))
        flush_stage();
    if (n > STAGE_BUF) {
        if (!s->write_error)
            s->write_error = emit(s, p, n);
        return 1;
    }
    memcpy(stage + stage_len, p, n);
    stage_len += n;
    stage_owner = s;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* a flush is our push(), after the call */
}

static BIO_METHOD *bio_method;

static void make_bio_method(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "moongate stream");
    if (!bio_method || !BIO_meth_set_read_ex(bio_method, bio_read) ||
        !BIO_meth_set_write_ex(bio_method, bio_write) || !BIO_meth_set_ctrl(bio_method, bio_ctrl))
        mg_fatal("out of memory (TLS BIO method)");
}

static BIO *new_bio(struct mg_tls_stream *s)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, make_bio_method);
    BIO *b = BIO_new(bio_method);
    if (!b)
        mg_fatal("out of memory (TLS BIO)");
    BIO_set_data(b, s);
    BIO_set_init(b, 1);
    return b;
}

/* ------------------------------------------------------------ making streams */

static struct mg_tls_stream *wrap(struct mg_tcp *tcp, SSL_CTX *ctx, void *owner)
{
    struct mg_tls_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->ssl = SSL_new(ctx)))
        mg_fatal("out of memory (TLS stream)");
    BIO *b = new_bio(s);
    SSL_set_bio(s->ssl, b, b); /* one BIO both ways: SSL_free frees it */
    s->t = (struct mg_transport){.ops = &tls_ops, .owner = owner};
    s->tcp = tcp;
    tcp->t.owner = s;
    tcp->t.on_alloc = on_tcp_alloc;
    tcp->t.on_read = on_tcp_read;
    uv_loop_t *loop = tcp->loop;
    uv_timer_init(loop, &s->timer);
    uv_idle_init(loop, &s->pump);
    s->timer.data = s->pump.data = s;
    s->handles = 3;
    return s;
}

struct mg_transport *mg_tls_server(struct mg_tcp *tcp, SSL_CTX *ctx, uint64_t handshake_timeout_ms,
                                   void *owner)
{
    struct mg_tls_stream *s = wrap(tcp, ctx, owner);
    s->server = true;
    SSL_set_accept_state(s->ssl);
    if (handshake_timeout_ms)
        uv_timer_start(&s->timer, on_timeout, handshake_timeout_ms, 0);
    update_tcp_reading(s);
    return &s->t;
}

void mg_tls_server_feed(struct mg_transport *t, const char *p, size_t n)
{
    struct mg_tls_stream *s = of_t(t);
    if (!n)
        return;
    s->hello = true;
    MG_ASSERT(s->rd_len == 0); /* the stream's first bytes */
    keep(s, p, n, 0);
}

struct mg_transport *mg_tls_client(struct mg_tcp *tcp, SSL_CTX *ctx, const char *server_name,
                                   bool verify, SSL_SESSION *resume, void *owner)
{
    struct mg_tls_stream *s = wrap(tcp, ctx, owner);
    SSL_set_connect_state(s->ssl);
    if (resume)
        SSL_set_session(s->ssl, resume);
    if (server_name) {
        SSL_set_tlsext_host_name(s->ssl, server_name);
        if (verify)
            SSL_set1_host(s->ssl, server_name);
    } else if (verify) {
        /* A target named by its IP address: the certificate must be for that
         * address (an IP SAN), not merely signed by a trusted CA. */
        char ip[64];
        tcp->t.ops->peer_ip(&tcp->t, ip, sizeof ip);
        if (!ip[0] || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), ip) != 1)
            fail(s, UV_EINVAL);
    }
    return &s->t;
}

void mg_tls_client_start(struct mg_transport *t,
                         void (*on_ready)(struct mg_transport *t, int status))
{
    struct mg_tls_stream *s = of_t(t);
    s->on_ready = on_ready;
    update_tcp_reading(s);
    handshake(s);
    if (s->failed)
        schedule(s);
}

SSL_SESSION *mg_tls_get1_session(const struct mg_transport *t)
{
    if (t->ops != &tls_ops || !of_t(t)->done || of_t(t)->failed)
        return NULL;
    SSL_SESSION *sess = SSL_get1_session(of_t(t)->ssl);
    if (sess && !SSL_SESSION_is_resumable(sess)) {
        SSL_SESSION_free(sess);
        return NULL;
    }
    return sess;
}

const struct mg_tls_info *mg_tls_info(const struct mg_transport *t)
{
    if (!t || t->ops != &tls_ops || !of_t(t)->done)
        return NULL;
    return &of_t(t)->info;
}

void mg_tls_on_handshake(struct mg_transport *t, void (*cb)(struct mg_transport *t, int status))
{
    if (t->ops == &tls_ops)
        of_t(t)->on_handshake = cb;
}

bool mg_tls_alpn_h2(const struct mg_transport *t)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    if (!t || t->ops != &tls_ops)
        return false;
    SSL_get0_alpn_selected(of_t(t)->ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

void mg_tls_peer_subject(const struct mg_transport *t, char *out, size_t len)
{
    out[0] = '\0';
    if (t->ops != &tls_ops)
        return;
    X509 *peer = SSL_get1_peer_certificate(of_t(t)->ssl);
    if (!peer)
        return;
    X509_NAME_oneline(X509_get_subject_name(peer), out, (int)len);
    X509_free(peer);
}
