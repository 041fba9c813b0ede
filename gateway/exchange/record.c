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
#include "worker.h"

static struct mg_accesslog *access_log;

void mg_exchange_set_accesslog(struct mg_accesslog *l)
{
    access_log = l;
}

/* The exchange is over (answered, or abandoned when `status` is 0): count it and
 * write its access log line. */
void mg_xrecord(struct mg_exchange *x, int status)
{
    struct mg_metrics *m = x->rt ? x->rt->metrics : x->w->rt->metrics;
    unsigned w = (unsigned)x->w->id;
    int route = x->route ? (int)x->route->index : -1;
    uint64_t now = uv_hrtime();
    if (x->in_flight_counted)
        mg_metrics_in_flight(m, w, route, -1);
    mg_xplug_finish(x, status, now);
    /* A client that left before its answer is counted as nginx's 499. */
    mg_metrics_request_done(m, w, route, status ? status : 499, now - x->started_ns);
    if (!mg_accesslog_enabled(access_log))
        return;
    const struct mg_tls_info *tls = mg_tls_info(x->client);
    const char *method = x->head_parsed ? llhttp_method_name((llhttp_method_t)x->method) : NULL;
    struct mg_access_entry e = {
        .request_id = {x->request_id, strlen(x->request_id)},
        .client_ip = {x->client_ip, strlen(x->client_ip)},
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
        .protocol = !x->head_parsed      ? NULL
                    : x->h2              ? "h2"
                    : x->http_minor == 0 ? "http/1.0"
                                         : "http/1.1",
    };
    mg_accesslog_write(access_log, w, &e);
}
