/*
 * fuzz_request: the downstream request path. The input is everything a client
 * sends on one connection (then it half-closes); it goes through the real
 * gateway (harness.h): head scan, llhttp, request checks, routing, Lua plugins,
 * idempotency, upstream head building and body forwarding, exactly as the
 * server runs them. The upstream answers every request with a fixed response.
 *
 * Checked on top of the harness's invariants (no leaked connection or handle,
 * only strictly valid HTTP forwarded, no sanitizer report): what the client gets
 * back is a sequence of well-formed HTTP/1.1 responses (llhttp, strict), cut
 * short at most by a close. Skipped when the input contains "HEAD": a response to
 * HEAD has no body whatever its Content-Length says, and which response answers a
 * HEAD request is not known from the outside.
 */
#include <llhttp.h>
#include <string.h>

#include "harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------------------------------------------------- known, reported issues */

/* Regression seeds: corpus/fuzz_request/crash-trailer-* (trailer fields of a
 * chunked body once joined the request head; proxy.c now drops them) and
 * crash-bare-lf-request-line (head scan). */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_harness_init(FZ_UP_FIXED);
    return 0;
}

static void check_responses(const uint8_t *got, size_t len)
{
    static const llhttp_settings_t settings; /* no callbacks: framing only */
    if (len == 0)
        return; /* closed without a word (got may be NULL: llhttp would add 0 to it) */
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &settings);
    llhttp_errno_t e = llhttp_execute(&p, (const char *)got, len);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) /* after a 101, tunnel bytes */
        fz_fail("the client received something other than well-formed responses", got, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_exchange e = {.client = data, .client_len = size};
    struct fz_outcome o;
    fz_harness_run(&e, &o);
    if (!memmem(data, size, "HEAD", 4))
        check_responses(o.got, o.got_len);
    return 0;
}
