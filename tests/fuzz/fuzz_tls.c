/*
 * fuzz_tls: hostile bytes through the gateway's TLS read path. A real server
 * context (tls/context.c: two ECDSA P-256 certificates chosen by SNI, TLS 1.2
 * and 1.3, the intermediate ciphers, tickets with the process-wide keys, a
 * session cache, ALPN) and a real server stream (net/tls.c) over one end of a
 * socketpair, on a libuv loop, exactly as conn/conn.c wraps an accepted
 * connection; the fuzzer holds the other end.
 *
 * Byte 0 of the input is a set of flags:
 *   bit 0  handshake first: an in-process OpenSSL client (memory BIOs) makes a
 *          real handshake, then the rest of the input is a list of operations
 *          (below); clear: the rest is raw bytes, written in up to four
 *          pieces (garbage, truncated and mutated ClientHellos)
 *   bit 1  the client stops at TLS 1.2 (else 1.3)
 *   bit 2  no half-close at the end: the server must end the connection on its
 *          own (handshake timeout, its owner closing, or a fatal alert)
 *   bit 3  SNI names the second certificate (a wildcard), else the first
 *   bit 4  offer the session of the last successful handshake (ticket / cache)
 *   bit 5  the owner echoes the plaintext it reads (the write path under load)
 *   bit 6  the owner closes as soon as the operations are done (queued
 *          ciphertext drains while the client still reads)
 * Operations (handshake first), one byte each, arguments after it:
 *   0 L D..    SSL_write L+1 bytes of plaintext
 *   1 L D..    L+1 raw bytes into the encrypted stream
 *   2 T H L    a record header of type T and length H*256+L, then that many
 *              zero bytes up to 18 KiB (oversized records, bogus types)
 *   3          renegotiation (TLS 1.2: SSL_renegotiate; TLS 1.3: key update
 *              with update_requested)
 *   4          close_notify
 *   5          a few loop turns
 *   6          half-close now (the rest is ignored)
 *   7          the owner stops reading for a turn, then reads again
 *
 * Invariants, checked after every input (a failure aborts): the server stream
 * ends (its owner sees an error or EOF, closes, and on_closed runs) within
 * 3 s; afterwards the loop holds no handle; the handshake callback ran at most
 * once; a handshake that flag bit 0 asked for completes (the context keeps
 * serving after every earlier input); no sanitizer report, and LeakSanitizer
 * finds nothing (libFuzzer's per-input leak check).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config/config-t.h"
#include "core/log.h"
#include "harness.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "tls/context.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HANDSHAKE_TIMEOUT_MS 50
#define DEADLINE_MS          3000

enum {
    F_HANDSHAKE = 1,
    F_TLS12 = 2,
    F_NO_SHUT = 4,
    F_SNI2 = 8,
    F_RESUME = 16,
    F_ECHO = 32,
    F_OWNER_CLOSE = 64,
};

static struct {
    uv_loop_t loop;
    struct mg_tls_ctx *server;
    SSL_CTX *client;
    SSL_SESSION *last; /* of the last handshake that completed */
} G;

/* One input's state. */
static struct {
    struct mg_tcp tcp; /* the stream's socket (the owner's memory, as conn.c's) */
    struct mg_transport *tr;
    int fd; /* the client's end */
    bool owner_closing, closed, peer_gone, echo;
    ssize_t end;          /* what on_read reported last (< 0) */
    size_t plain, echoed; /* plaintext the owner read; echo bytes the client got */
    unsigned handshake_reports;
    SSL *ssl; /* the in-process client, when handshaking */
    BIO *rbio, *wbio;
    const uint8_t *input;
    size_t input_len;
} S;

/* ------------------------------------------------------------ certificates */

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tls: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

/* A self-signed ECDSA P-256 certificate for `san` ("DNS:a,DNS:b"), written
 * with its key into one PEM file; returns the path (malloc'd). */
static char *make_cert(const char *cn, const char *san)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!key || !x)
        die("key generation");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(x, ext, -1) || !X509_sign(x, key, EVP_sha256()))
        die("certificate");
    X509_EXTENSION_free(ext);
    char *path = strdup("/tmp/moongate-fuzz-tls-XXXXXX.pem");
    int fd = mkstemps(path, 4);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || !PEM_write_X509(f, x) || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) ||
        fclose(f) != 0)
        die("cannot write the certificate");
    X509_free(x);
    EVP_PKEY_free(key);
    return path;
}

/* ------------------------------------------------------------ the owner */

static void owner_close(void)
{
    if (S.owner_closing)
        return;
    S.owner_closing = true;
    mg_transport_close(S.tr);
}

static void on_alloc(struct mg_transport *t, uv_buf_t *buf)
{
    static char space[4096];
    (void)t;
    *buf = uv_buf_init(space, sizeof space);
}

struct echo {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
};

static void on_echo_written(uv_write_t *req, int status)
{
    (void)status; /* UV_ECANCELED when the stream closed first */
    free(req->data);
}

static void on_read(struct mg_transport *t, ssize_t n)
{
    if (n < 0) {
        S.end = n;
        owner_close();
        return;
    }
    S.plain += (size_t)n;
    if (S.echo && n > 0 && !S.owner_closing) {
        struct echo *e = malloc(sizeof *e + (size_t)n);
        if (!e)
            abort();
        uv_buf_t in;
        on_alloc(t, &in);
        memcpy(e->data, in.base, (size_t)n);
        e->buf = uv_buf_init(e->data, (unsigned)n);
        e->req.data = e;
        if (t->ops->write(t, &e->req, &e->buf, 1, on_echo_written) != 0)
            free(e);
    }
}

static void on_closed(struct mg_transport *t)
{
    (void)t;
    S.closed = true;
}

static void on_handshake(struct mg_transport *t, int status)
{
    (void)t;
    (void)status;
    S.handshake_reports++;
}

/* ------------------------------------------------------------ the client end */

/* One loop turn, then what the server sent: into the client's SSL when
 * handshaking, else dropped. */
static void turn(void)
{
    uv_run(&G.loop, UV_RUN_NOWAIT);
    char buf[16384];
    while (S.fd >= 0 && !S.peer_gone) {
        ssize_t n = read(S.fd, buf, sizeof buf);
        if (n > 0) {
            if (S.ssl)
                BIO_write(S.rbio, buf, (int)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            S.peer_gone = true;
        break;
    }
    if (S.ssl && !S.peer_gone && SSL_is_init_finished(S.ssl)) { /* plaintext (echo, tickets) */
        int r;
        while ((r = SSL_read(S.ssl, buf, sizeof buf)) > 0)
            S.echoed += (size_t)r;
        ERR_clear_error();
    }
}

static uint64_t now_ms(void)
{
    uv_update_time(&G.loop);
    return uv_now(&G.loop);
}

static void send_raw(const void *p, size_t n)
{
    const char *c = p;
    uint64_t until = now_ms() + DEADLINE_MS;
    while (n > 0 && !S.peer_gone) {
        ssize_t w = write(S.fd, c, n);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            S.peer_gone = true; /* EPIPE: the server closed, as it may */
            return;
        }
        turn();
        if (now_ms() > until)
            fz_fail("the server does not read (write deadline)", S.input, S.input_len);
    }
}

static void flush_client(void)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(S.wbio, buf, sizeof buf)) > 0)
        send_raw(buf, (size_t)n);
}

static bool client_handshake(uint8_t flags)
{
    S.ssl = SSL_new(G.client);
    S.rbio = BIO_new(BIO_s_mem());
    S.wbio = BIO_new(BIO_s_mem());
    if (!S.ssl || !S.rbio || !S.wbio)
        abort();
    BIO_set_mem_eof_return(S.rbio, -1);
    SSL_set_bio(S.ssl, S.rbio, S.wbio);
    SSL_set_connect_state(S.ssl);
    SSL_set_max_proto_version(S.ssl, flags & F_TLS12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    const char *sni = flags & F_SNI2 ? "api.wild.fuzz.test" : "fuzz.test";
    SSL_set_tlsext_host_name(S.ssl, sni);
    if ((flags & F_RESUME) && G.last)
        SSL_set_session(S.ssl, G.last);
    uint64_t until = now_ms() + DEADLINE_MS;
    for (;;) {
        int rc = SSL_do_handshake(S.ssl);
        flush_client();
        if (rc == 1)
            break;
        int e = SSL_get_error(S.ssl, rc);
        if (e != SSL_ERROR_WANT_READ || S.peer_gone) {
            unsigned long code = ERR_get_error();
            fprintf(stderr, "fuzz_tls: client handshake: SSL error %d, %s%s\n", e,
                    code ? ERR_error_string(code, NULL) : "no reason",
                    S.peer_gone ? " (the server closed)" : "");
            return false;
        }
        ERR_clear_error();
        turn();
        if (now_ms() > until)
            return false;
    }
    turn(); /* TLS 1.3 tickets follow the server's Finished */
    turn();
    SSL_SESSION *sess = SSL_get1_session(S.ssl);
    if (sess && SSL_SESSION_is_resumable(sess)) {
        SSL_SESSION_free(G.last);
        G.last = sess;
    } else {
        SSL_SESSION_free(sess);
    }
    return true;
}

static void run_ops(const uint8_t *p, size_t n, uint8_t flags)
{
    static const uint8_t zeros[18 * 1024];
    size_t i = 0;
    while (i < n && !S.peer_gone) {
        uint8_t op = p[i++] & 7;
        switch (op) {
        case 0:
        case 1: {
            size_t len = i < n ? (size_t)p[i++] + 1 : 1;
            if (len > n - i)
                len = n - i;
            if (op == 0) {
                if (len && SSL_write(S.ssl, p + i, (int)len) <= 0)
                    ERR_clear_error();
                flush_client();
            } else {
                send_raw(p + i, len);
            }
            i += len;
            break;
        }
        case 2: {
            uint8_t h[5] = {i < n ? p[i] : 23, 3, 3, i + 1 < n ? p[i + 1] : 0x40,
                            i + 2 < n ? p[i + 2] : 0x01};
            i += 3;
            size_t len = (size_t)h[3] << 8 | h[4];
            send_raw(h, sizeof h);
            send_raw(zeros, len < sizeof zeros ? len : sizeof zeros);
            break;
        }
        case 3:
            if (flags & F_TLS12)
                SSL_renegotiate(S.ssl);
            else
                SSL_key_update(S.ssl, SSL_KEY_UPDATE_REQUESTED);
            SSL_do_handshake(S.ssl);
            ERR_clear_error();
            flush_client();
            break;
        case 4:
            SSL_shutdown(S.ssl);
            ERR_clear_error();
            flush_client();
            break;
        case 5:
            for (int k = 0; k < 3; k++)
                turn();
            break;
        case 6:
            shutdown(S.fd, SHUT_WR);
            return;
        case 7:
            if (!S.owner_closing) {
                S.tr->ops->read_stop(S.tr);
                turn();
                if (!S.owner_closing)
                    mg_transport_read_start(S.tr);
            }
            break;
        }
        turn();
    }
}

/* ------------------------------------------------------------ set-up, one input */

static void count(uv_handle_t *h, void *arg)
{
    (void)h;
    (*(unsigned *)arg)++;
}

static unsigned count_handles(void)
{
    unsigned n = 0;
    uv_walk(&G.loop, count, &n);
    return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mg_log_threshold = MG_LOG_ERROR;
    const char *lvl = getenv("MOONGATE_LOG_LEVEL");
    if (lvl && strcmp(lvl, "debug") == 0)
        mg_log_threshold = MG_LOG_DEBUG;
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&G.loop) != 0)
        abort();
    char *a = make_cert("fuzz.test", "DNS:fuzz.test,DNS:www.fuzz.test");
    char *b = make_cert("wild.fuzz.test", "DNS:*.wild.fuzz.test");
    struct mg_tls_cert_conf certs[2] = {{.cert = a, .key = a}, {.cert = b, .key = b}};
    struct mg_tls_conf conf = {
        .certs = certs,
        .ncerts = 2,
        .protocols = MG_TLS_V12 | MG_TLS_V13,
        .ciphers = "intermediate",
        .session_tickets = true,
        .session_cache = 64 * 1024,
        .handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS,
    };
    char err[512];
    mg_tls_tickets_init();
    if (!(G.server = mg_tls_server_new(&conf, err, sizeof err))) {
        fprintf(stderr, "fuzz_tls: server context: %s\n", err);
        abort();
    }
    unlink(a);
    unlink(b);
    free(a);
    free(b);
    /* The client offers what curl and browsers offer: ALPN, every group. */
    G.client = SSL_CTX_new(TLS_client_method());
    if (!G.client ||
        SSL_CTX_set_alpn_protos(G.client, (const unsigned char *)"\x02h2\x08http/1.1", 12) != 0)
        die("client context");
    SSL_CTX_set_verify(G.client, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(G.client,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    memset(&S, 0, sizeof S);
    S.input = data;
    S.input_len = size;
    S.echo = flags & F_ECHO;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        abort();
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    S.fd = fds[1];
    uv_update_time(&G.loop); /* the timer starts from the loop's time, as after a poll */
    if (mg_tcp_init(&G.loop, &S.tcp, NULL) != 0 || mg_tcp_accept(fds[0], &S.tcp) != 0)
        abort();
    /* A raw input gets the short timeout (timeouts are part of what it tests);
     * the in-process client's handshake the long one, so that a loaded machine
     * does not fail a handshake that was never in doubt. */
    S.tr = mg_tls_server(&S.tcp, mg_tls_ssl_ctx(G.server),
                         flags & F_HANDSHAKE ? DEADLINE_MS / 2 : HANDSHAKE_TIMEOUT_MS, &S);
    S.tr->on_alloc = on_alloc;
    S.tr->on_read = on_read;
    S.tr->on_closed = on_closed;
    mg_tls_on_handshake(S.tr, on_handshake);
    mg_transport_read_start(S.tr);

    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    if (flags & F_HANDSHAKE) {
        if (!client_handshake(flags))
            fz_fail("a real handshake failed: the server stopped serving", data, size);
        if (S.handshake_reports != 1 || (!S.owner_closing && !mg_tls_info(S.tr)))
            fz_fail("the handshake was not reported once", data, size);
        run_ops(rest, n, flags);
    } else {
        size_t cuts[FZ_MAX_PIECES + 1];
        unsigned pieces = fz_split(rest, n, 0x715, cuts);
        for (unsigned i = 0; i < pieces && !S.peer_gone; i++) {
            send_raw(rest + cuts[i], cuts[i + 1] - cuts[i]);
            turn();
        }
    }
    if (flags & F_OWNER_CLOSE)
        owner_close();
    else if (!(flags & F_NO_SHUT))
        shutdown(S.fd, SHUT_WR);
    else if (!S.owner_closing && mg_tls_info(S.tr))
        owner_close(); /* a finished handshake waits for requests forever: the owner
                          (the keep-alive timeout, in conn.c) ends it */
    uint64_t until = now_ms() + DEADLINE_MS;
    while (!S.closed) {
        turn();
        if (now_ms() > until)
            fz_fail("the TLS stream did not close (hang)", data, size);
        if (!S.closed)
            usleep(100); /* the handshake timer; never block in the loop: a drain
                            may wait for this thread to read the client's end */
    }
    if (getenv("FZ_SHOW"))
        fprintf(stderr,
                "fuzz_tls: flags 0x%02x, handshake reports %u, owner read %zu bytes, "
                "client got %zu echoed, stream ended by %s\n",
                flags, S.handshake_reports, S.plain, S.echoed,
                S.end ? uv_err_name((int)S.end) : "the owner");
    if (S.handshake_reports > 1)
        fz_fail("the handshake was reported more than once", data, size);
    close(S.fd);
    if (S.ssl)
        SSL_free(S.ssl);
    while (uv_run(&G.loop, UV_RUN_NOWAIT))
        if (now_ms() > until + DEADLINE_MS)
            fz_fail("handles still open after the stream closed", data, size);
    if (count_handles() != 0)
        fz_fail("a handle outlived its stream", data, size);
    fz_check_no_sanitizer_report();
    ERR_clear_error();
    return 0;
}
