/*
 * fuzz_h2: the HTTP/2 server codec (conn/h2server.c, h2stream.c, h2request.c over
 * libnghttp2). The input is everything an h2c client sends after the
 * connection preface, which the target puts in front of it, so the fuzzer
 * spends its time on frames: SETTINGS, HEADERS and CONTINUATION with HPACK,
 * DATA with and without windows, RST_STREAM, PING, GOAWAY, WINDOW_UPDATE,
 * PRIORITY, and what arrives in pieces. Every stream runs through the same
 * gateway as fuzz_request (harness.h): routing, Lua plugins, idempotency,
 * the upstream pools. The client waits before half-closing, since its EOF
 * ends every stream of the connection: 48 loop turns after the last thing
 * that moved (harness.c restarts the hold, a bounded number of times).
 *
 * Checked: the harness's invariants (no connection, handle, runtime or
 * bulkhead slot left after the input, no sanitizer report, no hang, and every
 * request forwarded upstream is strictly valid HTTP/1.1 that keeps the
 * gateway's head rules), so what an h2 client sends can never reach an
 * upstream as a request that a strict parser would frame differently.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_listen_h2 = true;
    fz_hold_turns = 48;
    fz_harness_init(FZ_UP_FIXED);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[sizeof preface - 1 + 256 * 1024];
    if (size > sizeof buf - (sizeof preface - 1))
        return 0;
    memcpy(buf, preface, sizeof preface - 1);
    if (size)
        memcpy(buf + sizeof preface - 1, data, size);
    struct fz_exchange e = {buf, sizeof preface - 1 + size, NULL, 0};
    struct fz_outcome out;
    fz_harness_run(&e, &out);
    return 0;
}
