/*
 * The in-process gateway that fuzz_request and fuzz_response drive.
 *
 * One real worker (gateway/worker.h) is initialised once, from a YAML file the
 * harness writes at startup, listening on 127.0.0.1 on a port the kernel picks.
 * Its upstream has two targets, both served by a small HTTP/1.1 server that runs
 * on the worker's own loop (w->ctx.loop), so one thread drives client, gateway and
 * upstream and an input always runs the same way. Per input the harness opens a
 * client connection, writes the client bytes (in up to FZ_MAX_PIECES writes, one
 * per loop turn), half-closes, and turns the loop until the client has seen the
 * gateway close; then it closes the idle pooled upstream connections and turns
 * the loop until every handle the input opened is closed.
 *
 * Invariants checked after every input (a failure prints why and aborts, which
 * libFuzzer records as a crash): the worker has no client connection left
 * (w->ctx.nconns == 0), the loop holds exactly the handles it held before the input,
 * no exchange still holds a runtime, a bulkhead slot or a target's in-flight
 * count, no sanitizer printed a report, the input finished within FZ_HANG_MS,
 * and every request the gateway forwarded parses with llhttp in strict mode and
 * keeps the gateway's own head rules (http/headscan.h).
 */
#ifndef MG_FUZZ_HARNESS_H
#define MG_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_MAX_PIECES 4
/* An input that takes longer than this is a hang: every timeout of the harness's
 * config is 50..500 ms. */
#define FZ_HANG_MS 5000

enum fz_upstream_mode {
    /* Parse each forwarded request (llhttp, strict) and answer it with a fixed
     * response: "HTTP/1.1 200 OK" with "ok" (chunked when the path starts with
     * /chunked; no body for HEAD); an Upgrade request gets 101 and an echo. */
    FZ_UP_FIXED,
    /* After the first complete request on a connection, send fz_exchange.upstream
     * (in pieces, one per loop turn), then half-close; close at the gateway's EOF. */
    FZ_UP_RAW,
};

struct fz_exchange {
    const uint8_t *client; /* what the client sends before half-closing */
    size_t client_len;
    const uint8_t *upstream; /* FZ_UP_RAW: the upstream's answer */
    size_t upstream_len;
};

/* Every read of one upstream connection, in the order the loop delivered them
 * across all connections (`seq` counts reads of every connection of the run), so
 * that messages of different connections can be put in time order. */
struct fz_upread {
    size_t end; /* offset in fz_uplog.bytes just after this read's bytes */
    unsigned seq;
};

/* The exact bytes one upstream connection received during the input. */
struct fz_uplog {
    uint8_t *bytes;
    size_t len;
    bool truncated;   /* more arrived than FZ_UPLOG_MAX: bytes is a prefix */
    size_t tunnel_at; /* where the upstream's llhttp switched to a tunnel, or SIZE_MAX */
    struct fz_upread *reads;
    size_t nreads, reads_cap;
};

#define FZ_UPLOG_MAX (256 * 1024)

struct fz_outcome {
    const uint8_t *got; /* what the client received; valid until the next run */
    size_t got_len;
    bool reset;                 /* the client's connection ended in an error, not EOF */
    unsigned upstream_requests; /* complete requests the upstream parsed */
    unsigned upstream_conns;    /* connections the upstream accepted */
    /* What each upstream connection received, in the order they closed; valid
     * until the next run. */
    const struct fz_uplog *uplogs;
    unsigned nuplogs;
};

/* Set before fz_harness_init (fuzz_h2): the listener also takes HTTP/2 with
 * prior knowledge. */
extern bool fz_listen_h2;
/* Loop turns the client waits after its last piece, and after the last byte
 * or upstream connection that moved, before half-closing (0 by default). An
 * HTTP/2 connection ends with the client's EOF, every stream with it, so
 * fuzz_h2 waits for its streams to reach the upstream. */
extern unsigned fz_hold_turns;

/* Once, before the first run (idempotent). Aborts when the gateway cannot start. */
void fz_harness_init(enum fz_upstream_mode mode);
/* Runs one input through the gateway and checks the invariants above. */
void fz_harness_run(const struct fz_exchange *e, struct fz_outcome *out);

/* Cut points for `len` bytes into at most FZ_MAX_PIECES pieces, derived from a hash
 * of the bytes (so the same input always splits the same way). Returns the number
 * of pieces; cuts[0] = 0 and cuts[n] = len. */
unsigned fz_split(const uint8_t *data, size_t len, uint32_t salt, size_t cuts[FZ_MAX_PIECES + 1]);

/* Aborts if a sanitizer reported anything since startup (reports that do not
 * stop the process, if a flag ever makes one so, still fail the input). */
void fz_check_no_sanitizer_report(void);
/* Prints `what` and the bytes (escaped, truncated) to stderr, then aborts. */
_Noreturn void fz_fail(const char *what, const uint8_t *bytes, size_t len);

#endif
