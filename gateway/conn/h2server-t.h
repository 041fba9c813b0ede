/*
 * The HTTP/2 codec's private types (conn/h2server.c: the connection and its
 * nghttp2 session; conn/h2stream.c: each stream as an exchange's downstream;
 * conn/h2request.c: the request head's translation). Only those files
 * include it.
 */
#ifndef MG_H2SERVER_T_H
#define MG_H2SERVER_T_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "conn/conn-t.h"
#include "conn/h2mem.h"
#include "exchange/exchange-t.h"
#include "net/wq.h"
#include "obs/metrics.h"
#include "loopctx.h"

#define CTL_SIZE (64 * 1024) /* frames nghttp2 serializes itself (s->ctl) */
/* DATA payloads up to this size are copied into ctl: one iovec with the
 * frames around them, and no pin of the upstream's buffer in the write. */
#define COPY_MAX 1024
/* Finished streams kept per session with their exchange open (no arena
 * block), for the next streams: no calloc, no timer init/close per stream. */
#define SPARES_MAX      16
#define FREE_PIECES_MAX 32

struct mg_h2piece {
    struct mg_h2piece *next;
    const char *p;
    size_t len;
    struct mg_rbuf *pin; /* held (one pin) while the piece is ours; NULL: arena or static */
};

struct mg_h2s;

#define MAX_INTERIMS 8 /* 1xx responses passed on per stream */

struct mg_h2stream {
    struct mg_exchange x; /* first: an exchange pointer is a stream pointer */
    struct mg_h2s *s;
    struct mg_h2stream *next, *prev; /* the connection's streams (spares too) */
    struct mg_h2stream *spare_next;  /* on s->spares */
    /* Per stream: everything from here is zeroed when a stream starts. */
    struct mg_h2stream *wake_next;
    bool spare; /* finished, its exchange idle: waits on s->spares for a next stream */
    int32_t id;
    bool woken;
    bool x_open;       /* the exchange's timers are not closed yet */
    bool ng_open;      /* nghttp2 still knows the stream */
    bool headers_done; /* the request head is complete: the exchange may read it */
    bool end_in;       /* END_STREAM received */
    bool reset_in;     /* the stream ended before our last frame (RST_STREAM, error) */
    bool submitted;    /* the response head went to nghttp2 */
    uint8_t interims;  /* 1xx responses passed on (send_interim) */
    bool end_out;      /* the exchange queued the end of the response */
    bool done_out;     /* the frame with END_STREAM was serialized */
    bool deferred;     /* the data provider waits for a piece */
    bool arena_out;    /* a piece pointed into memory the exchange frees at its end */
    bool too_large;    /* the request body passed client.max_body_size */
    bool bodyless;     /* the response head ends the stream */
    bool rst_ours;     /* we reset it (other RST_STREAMs sent are the client's doing) */
    nghttp2_nv *nva;   /* a response head not submitted yet */
    size_t nvlen;
    struct mg_h2piece *out, *out_tail;
    size_t out_bytes;
    /* The request head, gathered by the header callbacks (arena copies). */
    int method_no; /* llhttp's number of :method plus 1 (0: none or unknown) */
    struct mg_slice path;
    char *cookie;
    size_t cookielen, cookiecap;
    uint64_t head_bytes;
    /* The request body: one window's worth, pinned by writes to the upstream. */
    struct mg_rbuf in;
    size_t incap;
    uint64_t body_in;
    uint64_t last_in_ms, last_out_ms;
};

struct mg_h2s {
    struct mg_conn *c;
    const struct mg_exchange_hooks *hooks;
    nghttp2_session *ng;
    struct mg_h2mem mem;              /* nghttp2's allocations (outlives ng) */
    const struct mg_http2_conf *conf; /* of the config the session started on */
    struct mg_config *cfg;            /* held for conf */
    bool started;                     /* h2 chosen (else still selecting) */
    bool in_ng;                       /* inside an nghttp2 call: no other */
    bool servicing;
    bool goaway;   /* GOAWAY queued (drain, idle): no new stream will come */
    bool calm;     /* the client passed max_resets_per_second */
    bool later_on; /* `later` is started */
    bool dirty;    /* frames may wait to be serialized: `turn` pumps */
    bool turn_on;  /* `turn` is started */
    struct mg_h2stream *streams, *wake;
    struct mg_h2stream *spares; /* finished streams to reuse (spare_next) */
    struct mg_h2stream *hdr_st; /* the stream whose header block is arriving */
    unsigned nx;                /* streams whose exchange is open (not spares) */
    unsigned nspares, nfree_pieces;
    struct mg_h2piece *release; /* sent pieces whose pins wait for `later` */
    struct mg_h2piece *free_pieces;
    char *ctl;
    size_t ctl_len;
    size_t ctl_run; /* ctl[ctl_run..ctl_len) is not in the write queue yet */
    bool rid_named; /* an x-request-id went with indexing, at rid_named_ms */
    uint64_t rid_named_ms;
    uint64_t idle_since_ms;
    uint64_t reset_window_ms;
    uint32_t resets;
    uv_idle_t later;
    /* End of the loop turn (after every read of this turn): the streams made
     * ready in it leave in one write per connection. */
    uv_check_t turn;
};

static inline struct mg_h2stream *of_x(struct mg_exchange *x)
{
    return (struct mg_h2stream *)x;
}

static inline uint64_t now_ms(struct mg_h2s *s)
{
    return uv_now(&s->c->ctx->loop);
}

static inline const struct mg_client_conf *client_conf(struct mg_h2s *s)
{
    return &s->cfg->client;
}

/* h2server.c: the connection. */
void mg_h2_pump(struct mg_h2s *s);       /* serializes frames, writes them */
void mg_h2_defer(struct mg_h2s *s);      /* runs `later` at the loop's next turn */
void mg_h2_dirty(struct mg_h2s *s);      /* pumps at the end of this loop turn */
void mg_h2_wake(struct mg_h2stream *st); /* runs its exchange from service */
void mg_h2_unwake(struct mg_h2stream *st);

/* h2stream.c: streams, response translation, the data provider. */
struct mg_h2stream *mg_h2_new_stream(struct mg_h2s *s, int32_t id);
void mg_h2_free_stream(struct mg_h2stream *st);
void mg_h2_maybe_free_stream(struct mg_h2stream *st);
void mg_h2_close_stream(struct mg_exchange *x);
void mg_h2_drop_out(struct mg_h2stream *st);
void mg_h2_release_pieces(struct mg_h2s *s);
void mg_h2_free_pieces(struct mg_h2s *s);
void mg_h2_ctl_commit(struct mg_h2s *s);
ssize_t mg_h2_send_cb(nghttp2_session *ng, const uint8_t *data, size_t length, int flags,
                      void *user);
int mg_h2_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *source, void *user);

/* h2request.c: the request head (RFC 9113 section 8). */
int mg_h2_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *data);
/* The complete head checked; the fields the gateway acts on found. */
enum mg_error mg_h2_inspect(struct mg_h2stream *st);

#endif
