/*
 * Request ids (see reqid.h).
 */
#include "exchange/reqid.h"

#include <string.h>

#include "http/request.h"
#include "loopctx.h"

/* Two hex digits per table entry: half the steps of a digit at a time. */
#define HEX2(n)    "0123456789abcdef"[(n) >> 4], "0123456789abcdef"[(n)&15]
#define HEX2x4(n)  HEX2(n), HEX2((n) + 1), HEX2((n) + 2), HEX2((n) + 3)
#define HEX2x16(n) HEX2x4(n), HEX2x4((n) + 4), HEX2x4((n) + 8), HEX2x4((n) + 12)
static const char hex_pairs[512] = {HEX2x16(0),   HEX2x16(16),  HEX2x16(32),  HEX2x16(48),
                                    HEX2x16(64),  HEX2x16(80),  HEX2x16(96),  HEX2x16(112),
                                    HEX2x16(128), HEX2x16(144), HEX2x16(160), HEX2x16(176),
                                    HEX2x16(192), HEX2x16(208), HEX2x16(224), HEX2x16(240)};

void mg_xreqid_generate(struct mg_exchange *x)
{
    char *o = x->request_id;
    for (int half = 0; half < 2; half++) {
        uint64_t r = mg_loopctx_random(x->ctx);
        for (int i = 0; i < 8; i++, r >>= 8, o += 2)
            memcpy(o, &hex_pairs[(r & 255) * 2], 2);
    }
    *o = '\0';
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
