/*
 * The in-process gateway for fuzz_request and fuzz_response (see harness.h).
 *
 * Everything runs on the worker's loop, on the fuzzer's thread: the gateway's
 * listener and connections (the real conn/, exchange/ and upstream/ code), the scripted
 * upstream server (struct fz_upconn, one per accepted connection, malloc'd and
 * freed in its close callback) and the client (one static struct fz_client,
 * reused by every run once its handle is closed). A uv_idle "pump" hands out
 * pending write pieces, one per loop turn, so the gateway reads each piece on
 * its own and its parsers meet every split the hash chose.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "core/log.h"
#include "http/headscan.h"
#include "idempotency/store_memory.h"
#include "lua/metrics_hook.h"
#include "lua/vm.h"
#include "obs/metrics.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"
#include "upstream/pool.h"
#include "worker.h"

/* ------------------------------------------------------------ sanitizers */

static unsigned sanitizer_reports;

/* Every ASan/UBSan/LSan report ends by calling this (a weak hook of the
 * sanitizer runtime). With -fno-sanitize-recover=all a report already stops the
 * process; counting them here makes a report that did not stop it fail the input
 * anyway (fz_check_no_sanitizer_report). */
void __sanitizer_report_error_summary(const char *summary);
void __sanitizer_report_error_summary(const char *summary)
{
    sanitizer_reports++;
    fprintf(stderr, "%s\n", summary);
}

const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
    return "print_stacktrace=1:halt_on_error=1";
}

void fz_check_no_sanitizer_report(void)
{
    if (sanitizer_reports) {
        fprintf(stderr, "fuzz: %u sanitizer report(s) on stderr\n", sanitizer_reports);
        abort();
    }
}

_Noreturn void fz_fail(const char *what, const uint8_t *bytes, size_t len)
{
    fprintf(stderr, "fuzz invariant broken: %s\n", what);
    if (bytes) {
        fprintf(stderr, "  bytes (%zu): \"", len);
        for (size_t i = 0; i < len && i < 2048; i++) {
            unsigned char c = bytes[i];
            if (c == '\r')
                fputs("\\r", stderr);
            else if (c == '\n')
                fputs("\\n", stderr);
            else if (c == '"' || c == '\\')
                fprintf(stderr, "\\%c", c);
            else if (c >= 0x20 && c < 0x7f)
                fputc(c, stderr);
            else
                fprintf(stderr, "\\x%02x", c);
        }
        fputs(len > 2048 ? "\"...\n" : "\"\n", stderr);
    }
    abort();
}

unsigned fz_split(const uint8_t *data, size_t len, uint32_t salt, size_t cuts[FZ_MAX_PIECES + 1])
{
    uint32_t h = 2166136261u ^ salt; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 16777619u;
    unsigned n = 1 + h % FZ_MAX_PIECES;
    if (len < n)
        n = len ? (unsigned)len : 1;
    cuts[0] = 0;
    for (unsigned i = 1; i < n; i++) {
        h = h * 1103515245u + 12345u;
        size_t c = 1 + (h >> 8) % (len - 1 ? len - 1 : 1);
        cuts[i] = c > cuts[i - 1] ? c : cuts[i - 1]; /* empty pieces are skipped */
    }
    cuts[n] = len;
    return n;
}

/* ------------------------------------------------------------ state */

struct fz_wbuf {
    uv_write_t req;
    size_t len;
    char data[]; /* owned copy (echo, fixed answers) */
};

struct fz_upconn {
    uv_tcp_t tcp;
    llhttp_t parser;
    struct fz_upconn *next; /* all open upstream connections */
    struct fz_uplog log;    /* what the gateway sent (fz_outcome.uplogs once closed) */
    size_t seen_cap;
    char path[16]; /* the first bytes of the current request's target */
    size_t path_len;
    bool want_tunnel; /* an Upgrade request: 101 and echo after it */
    bool tunnel;
    bool answered; /* FZ_UP_RAW: the bytes are on their way */
    unsigned next_piece, npieces;
    size_t cuts[FZ_MAX_PIECES + 1];
    bool shut, closing;
    uv_shutdown_t shutdown;
    struct mg_headscan scan; /* of the head being received */
    bool scanning;           /* in a head (else in a body) */
};

struct fz_client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
    const uint8_t *data;
    size_t cuts[FZ_MAX_PIECES + 1];
    unsigned npieces, next_piece;
    unsigned hold;     /* loop turns left to wait before half-closing */
    unsigned seen;     /* H.activity when the hold last restarted */
    unsigned restarts; /* of the hold, at most FZ_HOLD_RESTARTS */
    bool connected, shut, done, closed, reset;
    uint8_t *got;
    size_t got_len, got_cap;
};

static struct {
    bool ready;
    enum fz_upstream_mode mode;
    struct mg_worker w;
    struct mg_config *cfg;
    struct mg_metrics *metrics;
    uv_tcp_t servers[2];
    struct sockaddr_in gateway_addr;
    uv_idle_t pump;
    uv_timer_t watchdog; /* wakes the loop while an input runs, so a hang is seen */
    struct fz_upconn *upconns;
    const struct fz_exchange *ex; /* the input being run */
    unsigned upstream_requests, upstream_conns;
    unsigned upstream_reads; /* fz_upread.seq */
    unsigned activity;       /* bytes or connections seen by the client or the upstream */
    struct fz_uplog *uplogs; /* of the connections closed during this input */
    unsigned nuplogs, uplogs_cap;
    unsigned baseline_handles;
    bool show; /* FZ_SHOW=1: print what the client received after each input */
} H;

static struct fz_client client;

bool fz_listen_h2;
unsigned fz_hold_turns;

static const llhttp_settings_t upstream_settings;

/* A hold restarts while something still moves (bytes to the client or the
 * upstream, a new upstream connection), so that a stream waiting on a new
 * upstream connection or on a slow answer is not cut by the client's EOF;
 * bounded, so that an input that keeps streaming still ends. */
#define FZ_HOLD_RESTARTS 64

/* ------------------------------------------------------------ helpers */

static void append(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n)
            ncap *= 2;
        uint8_t *nb = realloc(*buf, ncap);
        if (!nb)
            abort();
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static void on_wbuf_written(uv_write_t *req, int status)
{
    (void)status; /* the peer may be gone: what it missed is its business */
    free(req->data);
}

/* Writes a copy of p[0..n) (the caller's memory may go before the write ends). */
static void write_copy(uv_stream_t *s, const void *p, size_t n)
{
    if (n == 0)
        return;
    struct fz_wbuf *b = malloc(sizeof *b + n);
    if (!b)
        abort();
    memcpy(b->data, p, n);
    b->len = n;
    b->req.data = b;
    uv_buf_t buf = uv_buf_init(b->data, (unsigned)n);
    if (uv_write(&b->req, s, &buf, 1, on_wbuf_written) != 0)
        free(b);
}

static void count_handle(uv_handle_t *h, void *arg)
{
    (void)h;
    (*(unsigned *)arg)++;
}

static unsigned loop_handles(void)
{
    unsigned n = 0;
    uv_walk(&H.w.ctx.loop, count_handle, &n);
    return n;
}

/* ------------------------------------------------------------ upstream server */

static void uplogs_clear(void)
{
    for (unsigned i = 0; i < H.nuplogs; i++) {
        free(H.uplogs[i].bytes);
        free(H.uplogs[i].reads);
    }
    H.nuplogs = 0;
}

static void upconn_closed(uv_handle_t *h)
{
    struct fz_upconn *u = h->data;
    if (H.show)
        fprintf(stderr, "fuzz: the upstream received %zu bytes:\n%.*s\n", u->log.len,
                (int)u->log.len, (const char *)u->log.bytes);
    struct fz_upconn **pp = &H.upconns;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = u->next;
        /* A listed connection is one of this input's: keep what it received. */
        if (H.nuplogs == H.uplogs_cap) {
            H.uplogs_cap = H.uplogs_cap ? 2 * H.uplogs_cap : 8;
            H.uplogs = realloc(H.uplogs, H.uplogs_cap * sizeof *H.uplogs);
            if (!H.uplogs)
                abort();
        }
        H.uplogs[H.nuplogs++] = u->log;
    } else {
        free(u->log.bytes);
        free(u->log.reads);
    }
    free(u);
}

static void upconn_close(struct fz_upconn *u)
{
    if (u->closing)
        return;
    u->closing = true;
    uv_close((uv_handle_t *)&u->tcp, upconn_closed);
}

static int up_on_url(llhttp_t *p, const char *at, size_t len)
{
    struct fz_upconn *u = p->data;
    size_t room = sizeof u->path - u->path_len;
    size_t n = len < room ? len : room;
    memcpy(u->path + u->path_len, at, n);
    u->path_len += n;
    return 0;
}

static int up_on_message_begin(llhttp_t *p)
{
    struct fz_upconn *u = p->data;
    u->path_len = 0;
    u->want_tunnel = false;
    return 0;
}

static int up_on_headers_complete(llhttp_t *p)
{
    struct fz_upconn *u = p->data;
    u->want_tunnel = p->upgrade && p->method != HTTP_CONNECT;
    return 0;
}

static void answer_fixed(struct fz_upconn *u, llhttp_t *p)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: fixed\r\n";
    bool chunked = u->path_len >= 8 && memcmp(u->path, "/chunked", 8) == 0;
    bool body = p->method != HTTP_HEAD;
    char out[256];
    int n = snprintf(out, sizeof out, "%s%s\r\n\r\n%s", head,
                     chunked ? "Transfer-Encoding: chunked" : "Content-Length: 2",
                     !body     ? ""
                     : chunked ? "2\r\nok\r\n0\r\n\r\n"
                               : "ok");
    write_copy((uv_stream_t *)&u->tcp, out, (size_t)n);
}

static void pump_start(void);

static int up_on_message_complete(llhttp_t *p)
{
    struct fz_upconn *u = p->data;
    H.upstream_requests++;
    if (H.mode == FZ_UP_RAW) {
        if (!u->answered) {
            u->answered = true;
            u->npieces = fz_split(H.ex->upstream, H.ex->upstream_len, 0x5eed, u->cuts);
            u->next_piece = 0;
            pump_start();
        }
        return p->upgrade ? 0 : HPE_PAUSED;
    }
    if (!u->want_tunnel)
        answer_fixed(u, p);
    /* Pause so the next head gets its own scan; an upgrade (or CONNECT) must not
     * pause, or llhttp would not report HPE_PAUSED_UPGRADE. */
    return p->upgrade ? 0 : HPE_PAUSED;
}

static const llhttp_settings_t upstream_settings = {
    .on_message_begin = up_on_message_begin,
    .on_url = up_on_url,
    .on_headers_complete = up_on_headers_complete,
    .on_message_complete = up_on_message_complete,
};

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char space[64 * 1024];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(space, sizeof space);
}

/* What the gateway sends must be HTTP/1.1 that a strict parser takes, and every
 * head must keep the rules the gateway enforces on what it receives (its own
 * head scan: no bare CR or LF, no obs-fold, no whitespace before a colon).
 * Anything else means the gateway forwarded what it should have refused. */
static void up_parse(struct fz_upconn *u, const char *data, size_t len)
{
    while (len > 0 && !u->tunnel) {
        if (u->scanning) {
            size_t used = 0;
            enum mg_headscan_result r = mg_headscan_feed(&u->scan, data, len, &used);
            if (r >= MG_HEADSCAN_BARE_CR) {
                fprintf(stderr, "forwarded head: %s\n", mg_headscan_result_text(r));
                fz_fail("the gateway forwarded a head that breaks its own head rules", u->log.bytes,
                        u->log.len);
            }
            u->scanning = r == MG_HEADSCAN_MORE;
        }
        llhttp_errno_t e = llhttp_execute(&u->parser, data, len);
        if (e == HPE_OK)
            return;
        if (e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE)
            fz_fail("the gateway sent the upstream bytes a strict HTTP/1.1 parser rejects",
                    u->log.bytes, u->log.len);
        size_t used = (size_t)(llhttp_get_error_pos(&u->parser) - data);
        data += used;
        len -= used;
        mg_headscan_init(&u->scan, 1024 * 1024);
        u->scanning = true;
        if (e == HPE_PAUSED) {
            llhttp_resume(&u->parser);
        } else if (u->want_tunnel && H.mode == FZ_UP_FIXED) {
            static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                                     "Upgrade: websocket\r\n\r\n";
            write_copy((uv_stream_t *)&u->tcp, sw, sizeof sw - 1);
            u->tunnel = true;
            /* up_read logged this read before parsing it (whole, unless truncated). */
            u->log.tunnel_at = u->log.len >= len ? u->log.len - len : 0;
        } else {
            /* CONNECT answered 200 (or RAW mode): go on parsing requests. */
            llhttp_init(&u->parser, HTTP_REQUEST, &upstream_settings);
            u->parser.data = u;
        }
    }
    if (u->tunnel)
        write_copy((uv_stream_t *)&u->tcp, data, len); /* echo */
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fz_upconn *u = s->data;
    if (nread < 0) {
        upconn_close(u);
        return;
    }
    if (nread == 0)
        return;
    H.activity++;
    size_t keep = (size_t)nread;
    if (u->log.len + keep > FZ_UPLOG_MAX) {
        keep = FZ_UPLOG_MAX - u->log.len;
        u->log.truncated = true;
    }
    append(&u->log.bytes, &u->log.len, &u->seen_cap, buf->base, keep);
    if (u->log.nreads == u->log.reads_cap) {
        u->log.reads_cap = u->log.reads_cap ? 2 * u->log.reads_cap : 16;
        u->log.reads = realloc(u->log.reads, u->log.reads_cap * sizeof *u->log.reads);
        if (!u->log.reads)
            abort();
    }
    u->log.reads[u->log.nreads++] =
        (struct fz_upread){.end = u->log.len, .seq = H.upstream_reads++};
    if (H.mode == FZ_UP_RAW && u->answered)
        return; /* only the first request is answered */
    up_parse(u, buf->base, (size_t)nread);
}

static void on_upstream_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct fz_upconn *u = calloc(1, sizeof *u);
    if (!u)
        abort();
    uv_tcp_init(&H.w.ctx.loop, &u->tcp);
    u->tcp.data = u;
    if (uv_accept(server, (uv_stream_t *)&u->tcp) != 0) {
        u->closing = true;
        uv_close((uv_handle_t *)&u->tcp, upconn_closed); /* not listed yet: just freed */
        return;
    }
    u->next = H.upconns;
    H.upconns = u;
    H.upstream_conns++;
    H.activity++;
    u->log.tunnel_at = SIZE_MAX;
    llhttp_init(&u->parser, HTTP_REQUEST, &upstream_settings);
    u->parser.data = u;
    mg_headscan_init(&u->scan, 1024 * 1024);
    u->scanning = true;
    uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read);
}

/* ------------------------------------------------------------ client */

static void client_closed(uv_handle_t *h)
{
    (void)h;
    client.closed = true;
}

static void client_finish(bool reset)
{
    if (client.done)
        return;
    client.done = true;
    client.reset = reset;
    uv_close((uv_handle_t *)&client.tcp, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char space[64 * 1024];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(space, sizeof space);
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    if (nread < 0) {
        client_finish(nread != UV_EOF);
        return;
    }
    if (nread > 0)
        H.activity++;
    if (nread > 0 && client.got_len < 4 * 1024 * 1024)
        append(&client.got, &client.got_len, &client.got_cap, buf->base, (size_t)nread);
}

static void client_written(uv_write_t *req, int status)
{
    (void)status; /* EPIPE/ECONNRESET: the gateway closed early, as it may */
    free(req);
}

static void client_shut(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_client_connect(uv_connect_t *req, int status)
{
    (void)req;
    if (status < 0) {
        fprintf(stderr, "fuzz: cannot connect to the gateway: %s\n", uv_strerror(status));
        abort();
    }
    client.connected = true;
    uv_read_start((uv_stream_t *)&client.tcp, client_alloc, client_read);
    pump_start();
}

/* ------------------------------------------------------------ the pump */

/* One piece per loop turn for each writer that has pieces left. */
static void on_pump(uv_idle_t *idle)
{
    bool busy = false;
    if (client.connected && !client.done && !client.shut) {
        if (client.next_piece < client.npieces) {
            unsigned i = client.next_piece++;
            size_t a = client.cuts[i], b = client.cuts[i + 1];
            if (b > a) {
                uv_write_t *w = malloc(sizeof *w);
                if (!w)
                    abort();
                uv_buf_t buf = uv_buf_init((char *)client.data + a, (unsigned)(b - a));
                if (uv_write(w, (uv_stream_t *)&client.tcp, &buf, 1, client_written) != 0)
                    free(w);
            }
            busy = true;
        } else if (client.hold > 0) {
            if (H.activity != client.seen && client.restarts < FZ_HOLD_RESTARTS) {
                client.seen = H.activity;
                client.restarts++;
                client.hold = fz_hold_turns;
            }
            client.hold--;
            busy = true;
        } else {
            client.shut = true;
            uv_shutdown(&client.shutdown, (uv_stream_t *)&client.tcp, client_shut);
        }
    }
    for (struct fz_upconn *u = H.upconns; u; u = u->next) {
        if (!u->answered || u->shut || u->closing)
            continue;
        if (u->next_piece < u->npieces) {
            unsigned i = u->next_piece++;
            size_t a = u->cuts[i], b = u->cuts[i + 1];
            write_copy((uv_stream_t *)&u->tcp, H.ex->upstream + a, b - a);
            busy = true;
        } else {
            u->shut = true;
            uv_shutdown(&u->shutdown, (uv_stream_t *)&u->tcp, NULL);
        }
    }
    if (!busy && (client.shut || client.done))
        uv_idle_stop(idle);
}

static void pump_start(void)
{
    uv_idle_start(&H.pump, on_pump);
}

/* ------------------------------------------------------------ setup */

static const char config_template[] =
    "# written by tests/fuzz/harness.c\n"
    "listen: [{address: \"127.0.0.1:%u\", http2: %s}]\n"
    "http2: {idle_timeout: 500ms, max_resets_per_second: 50}\n"
    "workers: 1\n"
    "access_log: off\n"
    "pid_file: /tmp/moongate-fuzz.pid\n"
    "client:\n"
    "  header_timeout: 50ms\n"
    "  body_timeout: 50ms\n"
    "  keepalive_timeout: 50ms\n"
    "  max_header_size: 8k\n"
    "  max_body_size: 64k\n"
    "upstreams:\n"
    "  u:\n"
    "    targets: [{address: \"127.0.0.1:%u\", weight: 1}, {address: \"127.0.0.1:%u\", weight: "
    "2}]\n"
    "    keepalive: 4\n"
    "    timeouts: {connect: 200ms, send: 200ms, read: 200ms}\n"
    "    retry:\n"
    "      max_retries: 1\n"
    "      on: [connect_failure, reset, timeout, 502, 503, 504]\n"
    "      backoff: {base: 1ms, max: 2ms}\n"
    "      budget: {ratio: 0.5, min_per_second: 1000}\n"
    "    # Never open: an open breaker would answer 503 without touching the code under test.\n"
    "    circuit_breaker: {consecutive_failures: 1000000000, failure_rate: 1, min_requests: "
    "1000000000}\n"
    "    bulkhead: {max_concurrent: 64, max_queue: 8, queue_timeout: 50ms}\n"
    "routes:\n"
    "  - name: lua\n"
    "    match: {paths: [\"/lua\"]}\n"
    "    upstream: u\n"
    "    timeout: 500ms\n"
    "    balancer: {name: consistent_hash, config: {key: \"header:X-User\"}}\n"
    "    plugins:\n"
    "      - {name: request_id}\n"
    "      - {name: key_auth, config: {keys: [\"k1\"], hide_credentials: true}}\n"
    "  - name: idem\n"
    "    match: {paths: [\"/idem\"], methods: [POST, PUT, PATCH]}\n"
    "    upstream: u\n"
    "    timeout: 500ms\n"
    "    idempotency: {ttl: 1ms, lock_ttl: 200ms, max_body: 4k, store: memory}\n"
    "  - name: strip\n"
    "    match: {hosts: [\"*.example.org\"], paths: [\"/strip/\"]}\n"
    "    strip_prefix: true\n"
    "    upstream: u\n"
    "    timeout: 500ms\n"
    "  - name: all\n"
    "    match: {paths: [\"/\"]}\n"
    "    upstream: u\n"
    "    timeout: 500ms\n";

/* A listening socket on 127.0.0.1, port chosen by the kernel; the loop adopts it
 * once the worker (and so the loop) exists. */
static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "fuzz: upstream socket: %s\n", strerror(errno));
        abort();
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* The config wants a real port for the gateway's listener. A socket bound (never
 * listening) with SO_REUSEPORT reserves one for the life of the process: the
 * worker's own SO_REUSEPORT listener binds beside it, and only a listening
 * socket takes connections, so all of them go to the worker. */
static uint16_t reserve_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "fuzz: cannot reserve a port: %s\n", strerror(errno));
        abort();
    }
    return ntohs(a.sin_port); /* fd stays open on purpose */
}

static struct mg_config *load_config(uint16_t p1, uint16_t p2)
{
    char path[] = "/tmp/moongate-fuzz-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f ||
        fprintf(f, config_template, reserve_port(), fz_listen_h2 ? "true" : "false", p1, p2) < 0 ||
        fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
    char err[1024];
    struct mg_config *cfg = mg_config_load(path, err, sizeof err);
    if (cfg && mg_lua_check_config(cfg, err, sizeof err) != 0) {
        mg_config_unref(cfg);
        cfg = NULL;
    }
    unlink(path);
    if (!cfg) {
        fprintf(stderr, "fuzz: harness config rejected: %s\n", err);
        abort();
    }
    return cfg;
}

void fz_harness_init(enum fz_upstream_mode mode)
{
    if (H.ready)
        return;
    H.mode = mode;
    H.show = getenv("FZ_SHOW") != NULL;
    /* Warnings (upstream failures) are the normal course of a fuzz run: keep
     * stderr for errors unless MOONGATE_LOG_LEVEL asks for more. */
    mg_log_threshold = MG_LOG_ERROR;
    const char *lvl = getenv("MOONGATE_LOG_LEVEL");
    if (lvl && strcmp(lvl, "debug") == 0)
        mg_log_threshold = MG_LOG_DEBUG;
    else if (lvl && strcmp(lvl, "warn") == 0)
        mg_log_threshold = MG_LOG_WARN;
    signal(SIGPIPE, SIG_IGN);

    uint16_t p1, p2;
    int fd1 = listen_any(&p1), fd2 = listen_any(&p2);
    H.cfg = load_config(p1, p2);
    /* As gateway/main.c's start_workers(), for one worker. */
    mg_registry_init(1);
    H.metrics = mg_metrics_new(H.cfg, 1);
    mg_workers_set_idem_table(mg_idem_memtable_new(H.cfg->idempotency_memory));
    struct mg_lua *vm = NULL;
    struct mg_lua_metrics *hook = NULL;
    char err[512];
    if (mg_lua_needed(H.cfg) &&
        !(vm = mg_lua_new_counted(H.cfg, 0, H.metrics, &hook, err, sizeof err))) {
        fprintf(stderr, "fuzz: plugin VM: %s\n", err);
        abort();
    }
    if (mg_worker_init(&H.w, 0, H.cfg, H.metrics, vm, hook) != 0)
        abort();
    mg_workers_register(&H.w, 1);

    for (int i = 0; i < 2; i++) {
        uv_tcp_init(&H.w.ctx.loop, &H.servers[i]);
        if (uv_tcp_open(&H.servers[i], i ? fd2 : fd1) != 0 ||
            uv_listen((uv_stream_t *)&H.servers[i], 128, on_upstream_connection) != 0)
            abort();
    }
    uv_idle_init(&H.w.ctx.loop, &H.pump);
    uv_timer_init(&H.w.ctx.loop, &H.watchdog);

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (!H.w.listeners || getsockname(H.w.listeners->fd, (struct sockaddr *)&ss, &len) != 0) {
        fprintf(stderr, "fuzz: the gateway has no listener\n");
        abort();
    }
    memcpy(&H.gateway_addr, &ss, sizeof H.gateway_addr);
    H.baseline_handles = loop_handles();
    H.ready = true;
}

/* ------------------------------------------------------------ one input */

static void check_settled(void)
{
    struct mg_loopctx *w = &H.w.ctx;
    if (w->nconns != 0 || w->conns != NULL)
        fz_fail("a client connection outlived its input (w->nconns != 0)", H.ex->client,
                H.ex->client_len);
    if (w->rt->hold.n != 1)
        fz_fail("an exchange still holds the runtime", H.ex->client, H.ex->client_len);
    for (size_t i = 0; i < w->rt->cfg->nupstreams; i++) {
        struct mg_upstream_rt *ur = &w->rt->ups[i];
        if (mg_bulkhead_in_use(&ur->stats->bulkhead) != 0 ||
            mg_bulkhead_queued(&ur->stats->bulkhead) != 0)
            fz_fail("a bulkhead slot or queue place was not given back", H.ex->client,
                    H.ex->client_len);
        for (size_t j = 0; j < ur->conf->ntargets; j++)
            if (ur->targets[j].active != 0 || atomic_load(&ur->targets[j].stats->active) != 0)
                fz_fail("a target's in-flight count did not return to 0", H.ex->client,
                        H.ex->client_len);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t; /* only wakes uv_run(UV_RUN_ONCE) */
}

static void close_idle_pools(void)
{
    struct mg_runtime *rt = H.w.ctx.rt;
    for (size_t i = 0; i < rt->cfg->nupstreams; i++)
        for (size_t j = 0; j < rt->ups[i].conf->ntargets; j++)
            mg_upconn_close_idle(&rt->ups[i].targets[j]);
}

void fz_harness_run(const struct fz_exchange *e, struct fz_outcome *out)
{
    uv_loop_t *loop = &H.w.ctx.loop;
    H.ex = e;
    H.upstream_requests = H.upstream_conns = H.upstream_reads = 0;
    uplogs_clear();
    uint8_t *got = client.got;
    size_t got_cap = client.got_cap;
    memset(&client, 0, sizeof client);
    client.got = got;
    client.got_cap = got_cap;
    client.data = e->client;
    client.npieces = fz_split(e->client, e->client_len, 0xc11e, client.cuts);
    client.hold = fz_hold_turns;

    uv_tcp_init(loop, &client.tcp);
    if (uv_tcp_connect(&client.connect, &client.tcp, (struct sockaddr *)&H.gateway_addr,
                       on_client_connect) != 0)
        abort();
    uv_update_time(loop);
    uint64_t start = uv_now(loop);
    uv_timer_start(&H.watchdog, on_watchdog, 100, 100);
    while (!client.closed) {
        uv_run(loop, UV_RUN_ONCE);
        if (uv_now(loop) - start > FZ_HANG_MS)
            fz_fail("the gateway neither answered nor closed in time (hang)", e->client,
                    e->client_len);
    }
    /* The client is gone: everything else must wind down on its own, but for
     * idle pooled upstream connections, which the harness closes so that no
     * input inherits one from the input before. */
    for (;;) {
        if (H.w.ctx.nconns == 0)
            close_idle_pools();
        if (H.w.ctx.nconns == 0 && !H.upconns && loop_handles() == H.baseline_handles)
            break;
        uv_run(loop, UV_RUN_ONCE);
        if (uv_now(loop) - start > FZ_HANG_MS) {
            fprintf(stderr, "fuzz: nconns %u, upstream conns open %s, handles %u (baseline %u)\n",
                    H.w.ctx.nconns, H.upconns ? "yes" : "no", loop_handles(), H.baseline_handles);
            fz_fail("connections or handles were not closed after the input (leak)", e->client,
                    e->client_len);
        }
    }
    uv_timer_stop(&H.watchdog);
    if (H.show)
        fprintf(stderr,
                "fuzz: %" PRIu64
                " ms, %u upstream connection(s), %u request(s); client got %zu bytes%s:\n%.*s\n",
                uv_now(loop) - start, H.upstream_conns, H.upstream_requests, client.got_len,
                client.reset ? " (reset)" : "", (int)client.got_len, (const char *)client.got);
    check_settled();
    fz_check_no_sanitizer_report();
    out->got = client.got;
    out->got_len = client.got_len;
    out->reset = client.reset;
    out->upstream_requests = H.upstream_requests;
    out->upstream_conns = H.upstream_conns;
    out->uplogs = H.uplogs;
    out->nuplogs = H.nuplogs;
}
