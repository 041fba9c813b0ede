/*
 * Request ids (see reqid.h).
 */
#include "exchange/reqid.h"

#include <string.h>

#include "http/request.h"
#include "loopctx.h"

/* 16 lower-case hex digits of r, eight at a time: each byte of `n` holds one
 * nibble, and the ones of 10 and up (n + 6 carries into bit 4) move from
 * after '9' to 'a'. The digits come out in no particular order of r's
 * nibbles, which are random anyway. */
static void put_hex16(char *o, uint64_t r)
{
    const uint64_t nib = 0x0f0f0f0f0f0f0f0full, ones = 0x0101010101010101ull;
    for (int half = 0; half < 2; half++, r >>= 4) {
        uint64_t n = r & nib;
        uint64_t letter = ((n + ones * 6) >> 4) & ones;
        uint64_t digits = n + ones * '0' + letter * ('a' - '0' - 10);
        memcpy(o + 8 * half, &digits, 8);
    }
}

void mg_xreqid_generate(struct mg_exchange *x)
{
    put_hex16(x->request_id, mg_loopctx_random(x->ctx));
    put_hex16(x->request_id + 16, mg_loopctx_random(x->ctx));
    x->request_id[32] = '\0';
}

void mg_xreqid_make(struct mg_exchange *x)
{
    struct mg_slice given =
        x->rid_idx >= 0 ? x->req_hdrs.v[x->rid_idx].value : (struct mg_slice){NULL, 0};
    if (mg_http_request_id_valid(given, MG_REQUEST_ID_MAX)) {
        memcpy(x->request_id, given.p, given.len);
        x->request_id[given.len] = '\0';
        return;
    }
    mg_xreqid_generate(x);
}
