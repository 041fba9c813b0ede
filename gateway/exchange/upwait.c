/*
 * The current try's connection as the exchange waits on it (see upwait.h).
 */
#include "exchange/upwait.h"

#include "config/config-t.h"
#include "exchange/attempt.h"

/* The upstream taking our bytes (send timeout) or answering (read timeout).
 * Time the client makes us wait (a slow upload, a slow reader) is not the
 * upstream's fault and runs no upstream timer. */
void mg_xup_sync_timer(struct mg_exchange *x, bool progress)
{
    struct mg_attempt *a = &x->att;
    if (x->state != MG_X_FORWARD || !a->up)
        return;
    const struct mg_upstream_conf *uc = x->ups;
    uint8_t want = MG_UPT_NONE;
    if (x->upstream->writes(a) > 0)
        want = MG_UPT_SEND;
    else if (x->req_done && !x->resp_done && a->reading)
        want = MG_UPT_READ;
    if (want == a->timer && !progress)
        return;
    a->timer = want;
    uint64_t ms = want == MG_UPT_SEND   ? uc->send_timeout_ms
                  : want == MG_UPT_READ ? uc->read_timeout_ms
                                        : 0;
    x->upstream->set_timeout(a, mg_attempt_timeout_ms(x, ms));
}

void mg_xup_update_reading(struct mg_exchange *x)
{
    struct mg_attempt *a = &x->att;
    if (!a->up || !a->ready || (x->state != MG_X_FORWARD && x->state != MG_X_TUNNEL))
        return;
    x->upstream->set_reading(a, x->upstream->has_room(a) && !x->resp_done && !a->closed);
    mg_xup_sync_timer(x, false);
}

void mg_xup_reset_response(struct mg_exchange *x)
{
    x->resp_head = NULL;
    x->resp_headlen = x->resp_headcap = 0;
    x->reason = (struct mg_slice){NULL, 0};
    x->resp_hdrs = (struct mg_headers){NULL, 0, 0};
    x->status = 0;
    x->att.timer = MG_UPT_NONE;
}

void mg_xup_note_read(struct mg_exchange *x, ssize_t nread)
{
    struct mg_attempt *a = &x->att;
    if (nread >= 0) {
        mg_xup_sync_timer(x, true);
        return;
    }
    a->closed = true; /* the response reader decides what that means */
    a->read_error = (int)nread;
    a->reusable = false;
    if (x->state == MG_X_TUNNEL)
        x->upstream->set_reading(a, false);
}

const char *mg_xup_timeout_what(const struct mg_exchange *x)
{
    const struct mg_attempt *a = &x->att;
    return a->try_cut                ? "per-try timeout"
           : !a->ready               ? "connect timeout"
           : a->timer == MG_UPT_SEND ? "upstream send timeout"
                                     : "upstream read timeout";
}
