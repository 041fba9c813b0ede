/*
 * Request ids (see reqid.h).
 */
#include "exchange/reqid.h"

#include <string.h>

#include "http/request.h"
#include "worker.h"

void mg_xreqid_generate(struct mg_exchange *x)
{
    static const char digits[] = "0123456789abcdef";
    char *o = x->request_id;
    for (int half = 0; half < 2; half++) {
        uint64_t r = mg_worker_random(x->w);
        for (int i = 0; i < 16; i++, r >>= 4)
            *o++ = digits[r & 15];
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
