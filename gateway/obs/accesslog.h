/*
 * The access log: one JSON object per line and per request (DESIGN.md section 3,
 * `access_log: stderr | off | PATH`), written without ever blocking a worker.
 *
 * Each worker formats its line into its own scratch buffer and copies it into
 * its own lock-free single-producer ring (MG_ACCESSLOG_RING_BYTES per worker).
 * One writer thread drains every ring with write(2)/writev(2) every
 * MG_ACCESSLOG_FLUSH_MS, or sooner when a ring is half full. When the disk (or
 * the pipe behind stderr) cannot keep up and a ring is full, the line is dropped
 * and counted (mg_accesslog_stats); the worker never waits. Memory is bounded by
 * nworkers x MG_ACCESSLOG_RING_BYTES plus one scratch line per worker.
 *
 * Line format: the fields of `access_log_fields` in its order (DESIGN 10.8),
 * by default:
 *   {"time":"2026-11-28T00:00:00.123Z","request_id":"...","client_ip":"...",
 *    "method":"GET","host":"api.example.org","path":"/orders?id=1","status":200,
 *    "bytes_in":120,"bytes_out":512,"route":"orders-api",
 *    "upstream":"127.0.0.1:9001","upstream_status":200,"attempts":1,
 *    "duration":0.012345,"upstream_duration":0.011,"user_agent":"curl/7.88.1",
 *    "tls_protocol":"TLSv1.3","tls_cipher":"TLS_AES_128_GCM_SHA256",
 *    "tls_client_subject":null,"protocol":"http/1.1","error":null}
 * (the field `tls` writes tls_protocol, tls_cipher and tls_client_subject, the
 * verified client certificate's subject on mTLS listeners; each may also be
 * chosen alone; upstream_status is null when no upstream answered).
 * Strings are JSON-escaped (control characters and invalid UTF-8 bytes as
 * \u00XX; valid UTF-8 is copied as is, so \u0080..\u00ff in a line always
 * stands for a raw byte that was not valid UTF-8); absent strings, a negative
 * upstream_duration, MG_ERR_NONE and the TLS fields of a plain connection are
 * null. Durations are seconds with
 * microsecond resolution.
 *
 * On a pipe or a terminal (stderr), lines are written in batches of whole lines
 * of at most PIPE_BUF bytes, so they never interleave with error-log lines.
 *
 * A pipe whose reader went away raises SIGPIPE: the process must ignore it
 * (main.c does).
 *
 * Threads: mg_accesslog_write from worker `worker`'s thread only; reopen,
 * retarget, flush and stats from any thread; open/close from the main thread
 * (close only after every worker stopped writing).
 */
#ifndef MG_ACCESSLOG_H
#define MG_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/accesslog_fields.h"
#include "core/errors.h"
#include "http/message.h"

#define MG_ACCESSLOG_RING_BYTES (1u << 20) /* per worker; a power of two */
#define MG_ACCESSLOG_FLUSH_MS   100        /* longest a line waits in memory */

/* What the proxy knows at the end of an exchange. Slices may point into the
 * exchange's arena or read buffers: mg_accesslog_write copies what it needs
 * before returning. */
struct mg_access_entry {
    int64_t time_ms;            /* wall clock when the request began, unix ms; 0 = now */
    struct mg_slice request_id; /* {NULL, 0} -> null */
    struct mg_slice client_ip;
    struct mg_slice method;
    struct mg_slice path;           /* the request target as received (path and query) */
    int status;                     /* sent to the client; 0 when nothing was sent */
    uint64_t bytes_in;              /* bytes read from the client for this exchange */
    uint64_t bytes_out;             /* bytes written to the client for this exchange */
    const char *route;              /* route name, NULL when no route matched */
    const char *upstream;           /* last target's address text, NULL if none tried */
    unsigned attempts;              /* upstream attempts, retries included */
    uint64_t duration_ns;           /* whole exchange */
    int64_t upstream_duration_ns;   /* connect to end of response, last attempt; < 0 = none */
    enum mg_error error;            /* gateway-generated error, MG_ERR_NONE when none */
    const char *tls_protocol;       /* the client's TLS version, NULL on a plain connection */
    const char *tls_cipher;         /* its cipher suite (OpenSSL's name), NULL likewise */
    const char *tls_client_subject; /* the verified client certificate's subject (mTLS), or NULL */
    struct mg_slice host;           /* the authority the request names; {NULL, 0} -> null */
    struct mg_slice user_agent;
    int upstream_status;   /* the upstream's final status, 0 -> null */
    const char *protocol;  /* "http/1.0", "http/1.1", "h2" (ctx.protocol); NULL -> null */
    const uint8_t *fields; /* enum mg_access_field in line order; NULL: the default */
    size_t nfields;
};

struct mg_accesslog;

/* Opens the log for `dest` ("off", "stderr" or a file path, opened in append
 * mode and created 0644, relative to the working directory) with one ring per
 * worker, and starts the writer thread. Returns NULL and a message in `err` if
 * the file cannot be opened. The caller owns the result (mg_accesslog_close). */
struct mg_accesslog *mg_accesslog_open(const char *dest, unsigned nworkers, char *err,
                                       size_t errlen);

/* False when the destination is "off" (or l is NULL): the proxy can skip
 * building the entry. */
bool mg_accesslog_enabled(const struct mg_accesslog *l);

/* Formats `e` and queues it on worker `worker`'s ring, or drops and counts it
 * when the ring is full. Never waits for I/O; the only lock it may take (when a
 * ring passes half full, to wake the writer) is held by others for a few
 * instructions at a time. Allocates nothing once the worker's scratch buffer
 * has grown to its largest line. No-op when disabled or l == NULL. */
void mg_accesslog_write(struct mg_accesslog *l, unsigned worker, const struct mg_access_entry *e);

/* SIGUSR1 (log rotation): reopens the file path by name, so that after
 * `mv access.log access.log.1` new lines go to a new access.log: lines queued
 * before the call go to the old file, lines queued after it to the new one,
 * none is lost. The open happens on the calling
 * thread (an error is returned, and the old file kept); the swap happens on the
 * writer thread, asynchronously. Returns 0, or -errno. No-op for stderr/off.
 * Thread-safe, but not async-signal-safe: call it from a uv_signal_t callback. */
int mg_accesslog_reopen(struct mg_accesslog *l);

/* Config reload: switches to another destination ("off", "stderr", a path) the
 * same way. On failure returns -errno, writes `err` and keeps the old one. */
int mg_accesslog_retarget(struct mg_accesslog *l, const char *dest, char *err, size_t errlen);

/* Waits until every line queued before the call (by threads that
 * happen-before it) has been written, and any reopen/retarget requested before
 * it is done. For tests and shutdown; may block on the disk. */
void mg_accesslog_flush(struct mg_accesslog *l);

/* Lines queued so far, and lines dropped (full ring, or a failed write). */
void mg_accesslog_stats(struct mg_accesslog *l, uint64_t *lines, uint64_t *dropped);

/* Flushes, stops the writer thread, closes the file and frees everything.
 * NULL is ignored. */
void mg_accesslog_close(struct mg_accesslog *l);

#endif
