/*
 * The end of an exchange as operators see it: the golden-signal counters and
 * the access log line (see record.h).
 */
#include "exchange/record.h"

#include <string.h>

#include "config/config-t.h"
#include "exchange/plugins.h"
#include "net/tls.h"
#include "obs/accesslog.h"
#include "obs/metrics.h"
#include "loopctx.h"

static struct mg_accesslog *access_log;

void mg_exchange_set_accesslog(struct mg_accesslog *l)
{
    access_log = l;
}

/* The exchange is over (answered, or abandoned when `status` is 0): count it and
 * write its access log line. */
void mg_xrecord(struct mg_exchange *x, int status)
{
    struct mg_metrics *m = x->rt ? x->rt->metrics : x->ctx->rt->metrics;
    unsigned w = (unsigned)x->ctx->id;
    int route = x->route ? (int)x->route->index : -1;
    uint64_t now = uv_hrtime();
    if (x->in_flight_counted)
        mg_metrics_in_flight(m, w, route, -1);
    mg_xplug_finish(x, status, now);
    /* A client that left before its answer is counted as nginx's 499. */
    mg_metrics_request_done(m, w, route, status ? status : 499, now - x->started_ns);
    if (x->attempts && x->status > 0 && x->ups)
        mg_metrics_upstream_response(m, w, x->ups->index, now - x->att.start_ns);
    if (!mg_accesslog_enabled(access_log))
        return;
    const struct mg_config *cfg = x->rt ? x->rt->cfg : NULL;
    int ua = x->head_parsed ? mg_headers_find(&x->req_hdrs, MG_SLICE_LIT("user-agent")) : -1;
    const struct mg_tls_info *tls = mg_tls_info(x->client);
    const char *method = x->head_parsed ? llhttp_method_name((llhttp_method_t)x->method) : NULL;
    struct mg_access_entry e = {
        .request_id = {x->request_id, strlen(x->request_id)},
        .client_ip = {mg_x_client_ip(x), strlen(mg_x_client_ip(x))},
        .method = {method, method ? strlen(method) : 0},
        .path = x->url,
        .status = status,
        .bytes_in = x->headlen + x->req_body_bytes,
        .bytes_out = x->bytes_out,
        .route = x->route ? x->route->name : NULL,
        .upstream = x->att.target ? x->att.target->conf->address.text : NULL,
        .attempts = x->attempts,
        .duration_ns = now - x->started_ns,
        .upstream_duration_ns = x->attempts ? (int64_t)(now - x->att.start_ns) : -1,
        .error = x->error,
        .tls_protocol = tls ? tls->protocol : NULL,
        .tls_cipher = tls ? tls->cipher : NULL,
        .tls_client_subject = tls ? tls->client_subject : NULL,
        .host = x->head_parsed ? mg_x_request_host(x) : (struct mg_slice){NULL, 0},
        .user_agent = ua >= 0 ? x->req_hdrs.v[ua].value : (struct mg_slice){NULL, 0},
        .upstream_status = x->attempts ? x->status : 0,
        .protocol = !x->head_parsed      ? NULL
                    : x->h2              ? "h2"
                    : x->http_minor == 0 ? "http/1.0"
                                         : "http/1.1",
        .fields = cfg ? cfg->access_log_field_ids : NULL,
        .nfields = cfg ? cfg->naccess_log_fields : 0,
    };
    mg_accesslog_write(access_log, w, &e);
}
