/*
 * The downstream HTTP/2 codec (see h2server.h), on libnghttp2: nghttp2 does
 * the framing, HPACK, flow control and RFC 9113 section 8.1 message checks
 * (pseudo-headers, connection-specific fields, TE, content-length against
 * DATA); this file turns each stream into an exchange.
 *
 * Reentrancy: nghttp2's callbacks only record what happened on a stream and
 * put it on the connection's wake list; exchanges run from the codec's own
 * handlers after nghttp2 returned (service), or from their own events, where
 * a flush only submits and marks the session (mg_h2_dirty): `turn`, a check
 * handle run at the end of the loop turn, serializes and writes once for all
 * the streams made ready in that turn (one write per connection per turn,
 * not per stream). Work that must not happen inside an exchange's step
 * (running woken streams, dropping the pins of sent body pieces, whose
 * release may wake an upstream connection's owner) waits for service's loop,
 * `turn`, or `later`, an idle handle run at the loop's next turn.
 *
 * Request bodies: DATA is copied into the stream's own buffer (at most one
 * window of it) and handed to the exchange pinned by that buffer; the window
 * is re-opened (nghttp2_session_consume) only once nothing points into the
 * bytes any more, i.e. the upstream took them: flow control is the
 * backpressure. Responses: body pieces point into the upstream's read buffer
 * (held by a pin while queued) and leave as DATA frames without a copy
 * (NGHTTP2_DATA_FLAG_NO_COPY), except payloads up to COPY_MAX, copied
 * into `ctl` next to their frame header; a stream without bytes to send
 * defers its data provider until the next piece (nghttp2_session_resume_data).
 * Frames nghttp2 serializes itself go through `ctl`, a buffer reused once
 * the write queue is idle, and join the queue as one iovec per run.
 *
 * Memory: struct mg_h2s (malloc, c->codec) lives from the take-over to the
 * connection's on_free; a stream (calloc) until both its exchange's timers
 * are closed and nghttp2 forgot it (or the session is deleted). A stream that
 * finished cleanly is parked instead (s->spares, at most SPARES_MAX): its
 * exchange stays open and idle, as an HTTP/1 keep-alive exchange, its arena
 * block back with the worker, until a new stream takes it or the connection
 * closes it. nghttp2 allocates through the session's mg_h2mem (h2mem.c),
 * released after nghttp2_session_del.
 */
#include "conn/h2server.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "config/config.h"
#include "conn/conn.h"
#include "core/log.h"
#include "http/fields.h"
#include "http/request.h"
#include "http/writer.h"
#include "lua/edits.h"
#include "obs/metrics.h"
#include "loopctx.h"

#include "conn/h2server-t.h"

static void service(struct mg_h2s *s);

static void count(struct mg_h2s *s, enum mg_h2_reset_reason reason)
{
    mg_metrics_h2_reset(s->c->ctx->rt->metrics, (unsigned)s->c->ctx->id, reason);
}

void mg_h2_wake(struct mg_h2stream *st)
{
    if (st->woken)
        return;
    st->woken = true;
    st->wake_next = st->s->wake;
    st->s->wake = st;
}

void mg_h2_unwake(struct mg_h2stream *st)
{
    if (!st->woken)
        return;
    for (struct mg_h2stream **p = &st->s->wake; *p; p = &(*p)->wake_next)
        if (*p == st) {
            *p = st->wake_next;
            break;
        }
    st->woken = false;
}

static void on_later(uv_idle_t *h);
static void on_turn(uv_check_t *h);

/* Runs what waits for a quiet moment at the loop's next turn. */
void mg_h2_defer(struct mg_h2s *s)
{
    if (s->later_on || s->c->closing)
        return;
    s->later_on = true;
    uv_idle_start(&s->later, on_later);
}

/* Frames to send: serialized and written at the end of this loop turn, once
 * for all the streams made ready in it (service pumps itself). */
void mg_h2_dirty(struct mg_h2s *s)
{
    s->dirty = true;
    if (s->turn_on || s->servicing || s->c->closing)
        return;
    s->turn_on = true;
    uv_check_start(&s->turn, on_turn);
    /* A check handle does not shorten the poll: marked from a timer callback
     * (a 504, a queue timeout, a plugin after gw.sleep), the frames would wait
     * for the next wake-up, up to the connection tick. An active idle handle
     * makes the poll return at once; on_turn stops it when it was not needed. */
    mg_h2_defer(s);
}

/* ---------------------------------------------- nghttp2: what arrives */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mg_h2s *s = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct mg_h2stream *st = mg_h2_new_stream(s, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
    s->hdr_st = st; /* the header callbacks that follow are its */
    return 0;
}

static void count_reset(struct mg_h2s *s)
{
    uint64_t now = now_ms(s);
    if (now - s->reset_window_ms >= 1000) {
        s->reset_window_ms = now;
        s->resets = 0;
    }
    if (++s->resets > s->conf->max_resets_per_second)
        s->calm = true;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mg_h2s *s = user;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        count_reset(s);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct mg_h2stream *st = s->hdr_st; /* most often: the head just received */
    if (!st || st->id != frame->hd.stream_id)
        st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        st->headers_done = true;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        st->end_in = true;
    st->last_in_ms = now_ms(s);
    mg_h2_wake(st);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct mg_h2s *s = user;
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || !st->x_open || st->x.closing || st->too_large) {
        nghttp2_session_consume(ng, id, len); /* nobody reads it: the window stays open */
        return 0;
    }
    st->body_in += len;
    st->last_in_ms = now_ms(s);
    mg_h2_wake(st);
    if (st->body_in > client_conf(s)->max_body_size) {
        st->too_large = true;
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    struct mg_rbuf *b = &st->in;
    if (!b->buf) {
        /* Until our SETTINGS are acknowledged the client may use the
         * default window (RFC 9113 section 6.9.2). */
        st->incap = s->conf->initial_window_size > 65535 ? s->conf->initial_window_size : 65535;
        if (!(b->buf = malloc(st->incap)))
            mg_fatal("out of memory (h2 request body)");
    }
    if (b->end + len > st->incap) {
        /* More than the window we gave: nghttp2 would have refused it. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    memcpy(b->buf + b->end, data, len);
    b->end += len;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st)
        return 0;
    st->ng_open = false;
    if (!st->done_out)
        st->reset_in = true;
    if (st->x_open)
        mg_h2_wake(st);
    else
        mg_h2_maybe_free_stream(st);
    return 0;
}

/* A HEADERS frame that ends the stream (a DATA frame that does is seen by
 * mg_h2_send_data, which has the stream at hand). */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        /* Resets nghttp2 sends for what the client sent (a bad header, DATA
         * past content-length, a refused stream) cost us what the client's
         * own would: they count alike ("MadeYouReset", CVE-2025-8671). */
        struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (!st || !st->rst_ours)
            count_reset(user);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct mg_h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (st) {
        st->done_out = true;
        if (st->x_open)
            mg_h2_wake(st);
    }
    return 0;
}

/* ------------------------------------------------------------ the connection */

/* Sends what nghttp2 has to send, as far as the write queue takes it. Never
 * runs an exchange. */
void mg_h2_pump(struct mg_h2s *s)
{
    struct mg_conn *c = s->c;
    if (s->in_ng || c->closing)
        return;
    s->dirty = false;
    for (int round = 0; round < 64; round++) {
        if (mg_wq_idle(&c->out))
            s->ctl_len = s->ctl_run = 0;
        size_t before = s->ctl_len;
        s->in_ng = true;
        int rv = nghttp2_session_send(s->ng);
        s->in_ng = false;
        if (rv != 0) {
            mg_debug("h2: send: %s", nghttp2_strerror(rv));
            mg_conn_close(c);
            return;
        }
        /* Full: a DATA frame whose payload is copied may not have fitted. */
        bool full = s->ctl_len + 9 + COPY_MAX > CTL_SIZE;
        mg_h2_ctl_commit(s);
        mg_conn_flush(c);
        if (c->closing)
            return;
        if (!full || !mg_wq_idle(&c->out) || s->ctl_len == before)
            break; /* all sent, or on_written resumes */
    }
    if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng) &&
        mg_wq_idle(&c->out))
        mg_conn_close(c); /* GOAWAY sent and every stream done, or the session ended */
}

static void run_wakes(struct mg_h2s *s)
{
    while (s->wake && !s->c->closing) {
        struct mg_h2stream *st = s->wake;
        s->wake = st->wake_next;
        st->woken = false;
        st->wake_next = NULL;
        if (st->x_open && !st->x.closing)
            s->hooks->event(&st->x, MG_XEV_RUN);
    }
}

/* At the top of a handler: runs woken streams and sends until both rest. */
static void service(struct mg_h2s *s)
{
    if (s->servicing)
        return;
    s->servicing = true;
    for (int round = 0; round < 16 && !s->c->closing; round++) {
        mg_h2_release_pieces(s);
        if (s->calm) {
            nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
            s->calm = false;
            s->goaway = true;
            mg_warn("h2: %s passed http2.max_resets_per_second: GOAWAY", s->c->client_ip);
            count(s, MG_H2R_RAPID_RESET);
        }
        mg_h2_pump(s);
        /* What was sent is in the kernel or pinned by the write queue. */
        mg_h2_release_pieces(s);
        if (!s->wake && !s->release && !s->dirty && !s->calm)
            break;
        run_wakes(s);
    }
    s->servicing = false;
    if (!s->c->closing && (s->wake || s->release || s->dirty))
        mg_h2_defer(s);
}

static void on_later(uv_idle_t *h)
{
    struct mg_h2s *s = h->data;
    uv_idle_stop(h);
    s->later_on = false;
    if (!s->c->closing)
        service(s);
}

static void on_turn(uv_check_t *h)
{
    struct mg_h2s *s = h->data;
    uv_check_stop(h);
    s->turn_on = false;
    if (s->c->closing)
        return;
    service(s);
    if (s->later_on && !s->wake && !s->release && !s->dirty) {
        uv_idle_stop(&s->later); /* service did what it was started for */
        s->later_on = false;
    }
}

static void h2_on_read(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    if (c->eof) {
        mg_conn_close(c); /* the client is gone: every stream with it */
        return;
    }
    struct mg_rbuf *in = &c->in;
    if (in->start < in->end) {
        s->in_ng = true;
        ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)in->buf + in->start,
                                              in->end - in->start);
        s->in_ng = false;
        if (rv < 0) {
            mg_debug("h2: %s: %s", c->client_ip, nghttp2_strerror((int)rv));
            count(s, MG_H2R_PROTOCOL);
            mg_h2_pump(s); /* the GOAWAY nghttp2 queued, if any */
            mg_conn_close(c);
            return;
        }
        in->start = in->end = 0; /* everything was copied or acted on */
    }
    service(s);
    mg_conn_update_reading(c, true);
}

static void h2_on_written(struct mg_conn *c, int status)
{
    struct mg_h2s *s = c->codec;
    if (mg_wq_idle(&c->out))
        for (struct mg_h2stream *st = s->streams, *next; st; st = next) {
            next = st->next;
            if (!st->x_open)
                mg_h2_maybe_free_stream(st); /* it waited for its arena's DATA */
            else if ((st->done_out || st->reset_in) && st->arena_out)
                mg_h2_wake(st); /* drained now */
        }
    service(s);
}

static void h2_on_unpinned(struct mg_conn *c)
{
}

/* The periodic check: idle connection, request bodies that stopped, and
 * responses the client's window holds back. */
static uint64_t tick_ms(struct mg_h2s *s)
{
    uint64_t t = client_conf(s)->body_timeout_ms / 4;
    if (client_conf(s)->header_timeout_ms / 4 < t)
        t = client_conf(s)->header_timeout_ms / 4;
    if (s->conf->idle_timeout_ms / 4 < t)
        t = s->conf->idle_timeout_ms / 4;
    return t < 50 ? 50 : t > 1000 ? 1000 : t;
}

/* A header block must end within client.header_timeout, as an HTTP/1.1 head
 * must. Until its END_HEADERS no other frame may come (RFC 9113 section
 * 6.10), and the stream counts as open, so neither the idle nor the body
 * timeout would ever end a block left unfinished: the connection goes. */
static bool head_stalled(struct mg_h2s *s, uint64_t now)
{
    for (struct mg_h2stream *st = s->streams; st; st = st->next)
        if (st->x_open && !st->spare && !st->headers_done &&
            now - st->last_in_ms >= client_conf(s)->header_timeout_ms) {
            mg_debug("h2: %s: stream %d's header block unfinished after client.header_timeout",
                     s->c->client_ip, st->id);
            return true;
        }
    return false;
}

static void h2_on_timer(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    uint64_t now = now_ms(s), body = client_conf(s)->body_timeout_ms;
    if (s->goaway && s->nx == 0) {
        /* Drained (GOAWAY sent, mg_conn_drain's grace over): nothing more comes. */
        mg_h2_pump(s);
        mg_conn_close(c);
        return;
    }
    if ((s->nx == 0 && now - s->idle_since_ms >= s->conf->idle_timeout_ms) ||
        head_stalled(s, now)) {
        count(s, MG_H2R_IDLE);
        if (!s->goaway)
            nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        s->goaway = true;
        mg_h2_pump(s);
        mg_conn_close(c);
        return;
    }
    for (struct mg_h2stream *st = s->streams; st && !c->closing;) {
        struct mg_h2stream *next = st->next;
        if (st->x_open && !st->x.closing && st->headers_done) {
            if (st->in.end > 0)
                st->last_in_ms = now; /* bytes not taken upstream yet: the wait is ours */
            if (!st->end_in && !st->x.req_done && now - st->last_in_ms >= body) {
                s->hooks->event(&st->x, MG_XEV_CLIENT_TIMEOUT);
            } else if (st->submitted && !st->done_out && st->out_bytes &&
                       now - st->last_out_ms >= body) {
                /* The client never opens its window: the stream goes. */
                mg_debug("h2: stream %d stalled on a closed window", st->id);
                count(s, MG_H2R_WINDOW_STALL);
                mg_h2_close_stream(&st->x);
            }
        }
        st = next;
    }
    if (c->closing)
        return;
    if (s->nx == 0 && now - s->idle_since_ms >= 1000)
        mg_h2mem_release(&s->mem); /* an idle connection keeps no spare nghttp2 blocks */
    mg_deadline_set(&c->timer, tick_ms(s));
    service(s);
}

static void on_later_closed(uv_handle_t *h)
{
    struct mg_h2s *s = h->data;
    mg_conn_handle_closed(s->c);
}

static void h2_on_close(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    for (struct mg_h2stream *st = s->streams; st; st = st->next) {
        mg_h2_unwake(st);
        if (st->x_open && !st->x.closing) {
            mg_h2_drop_out(st);
            s->hooks->close(&st->x);
            if (!st->spare)
                s->nx--;
        }
    }
    s->wake = NULL;
    /* Streams whose exchange is already closed (waiting for nghttp2, or for
     * DATA queued from their arena) go now: the session and the socket's
     * writes go with the connection. The connection is freed only once every
     * stream has given its handle back. */
    for (struct mg_h2stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (!st->x_open) {
            st->ng_open = false;
            mg_h2_maybe_free_stream(st);
        }
    }
    if (s->started) {
        uv_idle_stop(&s->later);
        uv_close((uv_handle_t *)&s->later, on_later_closed);
        uv_check_stop(&s->turn);
        uv_close((uv_handle_t *)&s->turn, on_later_closed);
    }
}

static void h2_on_free(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    while (s->streams) {
        s->streams->x_open = s->streams->ng_open = false;
        mg_h2_free_stream(s->streams);
    }
    mg_h2_release_pieces(s);
    mg_h2_free_pieces(s);
    if (s->ng)
        nghttp2_session_del(s->ng);
    mg_h2mem_release(&s->mem);
    free(s->ctl);
    if (s->cfg)
        mg_config_unref(s->cfg);
    c->codec = NULL;
    free(s);
}

/* Drain: GOAWAY with the last stream id; streams under way finish. */
static bool h2_idle(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    if (!s->goaway) {
        s->goaway = true;
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        mg_h2_pump(s);
    }
    return !c->closing && s->nx == 0;
}

static const struct mg_conn_ops h2_ops = {
    .on_read = h2_on_read,
    .on_written = h2_on_written,
    .on_unpinned = h2_on_unpinned,
    .on_timer = h2_on_timer,
    .on_close = h2_on_close,
    .on_free = h2_on_free,
    .idle = h2_idle,
};

/* ---------------------------------------------------------- the session */

static int make_session(struct mg_h2s *s)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        mg_fatal("out of memory (nghttp2)");
    nghttp2_session_callbacks_set_send_callback(cb, mg_h2_send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cb, mg_h2_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, mg_h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Floods (CVE-2019-9512/9515, CVE-2024-27316): bounded queues of ACKs,
     * SETTINGS entries and CONTINUATION frames; beyond them the session ends. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    mg_h2mem_init(&s->mem);
    int rv = nghttp2_session_server_new3(&s->ng, cb, s, opt, &s->mem.mem);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0)
        return rv;
    const struct mg_http2_conf *h = s->conf;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)h->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, (uint32_t)h->max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)client_conf(s)->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        /* RFC 9218: no RFC 7540 dependency tree to keep per stream (the
         * gateway never weighs one stream against another). */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    rv = nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (rv == 0) {
        /* The connection's window: every stream's at once (each is bounded
         * by its own buffer). */
        uint64_t conn = h->initial_window_size * h->max_concurrent_streams;
        rv = nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                                   conn > 2147483647u ? 2147483647 : (int32_t)conn);
    }
    return rv;
}

static void start(struct mg_h2s *s)
{
    struct mg_conn *c = s->c;
    s->started = true;
    s->cfg = c->ctx->rt->cfg;
    mg_config_ref(s->cfg);
    s->conf = &s->cfg->http2;
    if (!(s->ctl = malloc(CTL_SIZE)))
        mg_fatal("out of memory (h2)");
    uv_idle_init(&c->ctx->loop, &s->later);
    s->later.data = s;
    uv_check_init(&c->ctx->loop, &s->turn);
    s->turn.data = s;
    c->handles_open += 2;
    mg_conn_take_over(c, &h2_ops, s);
    s->idle_since_ms = now_ms(s);
    if (make_session(s) != 0) {
        mg_conn_close(c);
        return;
    }
    mg_deadline_set(&c->timer, tick_ms(s));
    h2_on_read(c);
}

/* ------------------------------------------------------------ selection */

static void sel_on_read(struct mg_conn *c)
{
    struct mg_h2s *s = c->codec;
    switch (mg_conn_sniff(c)) {
    case MG_CONN_PROTO_UNKNOWN:
        return; /* the preface is not all there yet */
    case MG_CONN_PROTO_H1:
        mg_conn_give_back(c);
        free(s);
        c->ops->on_read(c);
        return;
    case MG_CONN_PROTO_H2:
        start(s);
        return;
    }
}

static void sel_on_written(struct mg_conn *c, int status)
{
    c->first_ops->on_written(c, status);
}

static void sel_on_unpinned(struct mg_conn *c)
{
    c->first_ops->on_unpinned(c);
}

static void sel_on_timer(struct mg_conn *c)
{
    c->first_ops->on_timer(c);
}

static void sel_on_close(struct mg_conn *c)
{
}

static void sel_on_free(struct mg_conn *c)
{
    free(c->codec);
    c->codec = NULL;
}

static bool sel_idle(struct mg_conn *c)
{
    return c->first_ops->idle(c);
}

static const struct mg_conn_ops select_ops = {
    .on_read = sel_on_read,
    .on_written = sel_on_written,
    .on_unpinned = sel_on_unpinned,
    .on_timer = sel_on_timer,
    .on_close = sel_on_close,
    .on_free = sel_on_free,
    .idle = sel_idle,
};

void mg_h2s_offer(struct mg_conn *c, const struct mg_exchange_hooks *hooks)
{
    struct mg_h2s *s = calloc(1, sizeof *s);
    if (!s)
        mg_fatal("out of memory (h2)");
    s->c = c;
    s->hooks = hooks;
    mg_conn_take_over(c, &select_ops, s);
}
