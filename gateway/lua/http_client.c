/*
 * gw.http.request (see http_client.h): llhttp for the response, a bounded
 * body, one timer for the whole call. Host names are not resolved here (that
 * would block the loop): a call names an upstream of the config or an IP
 * address.
 *
 * A call to an upstream leases a connection from the worker's pool for the
 * chosen target (upstream/pool.h), so the upstream's TLS applies and
 * connections are kept alive: the connection goes back to the pool only after
 * a complete response that allows it (framed by Content-Length or chunked, no
 * Connection: close, nothing after it), and is closed otherwise. A pooled
 * connection the upstream closed before answering is retried on another one
 * (it may have timed out idle just then), unless the method is POST or PATCH. A call to
 * "IP:port" has a one-off plain connection (Connection: close).
 *
 * Ownership: struct http_io is malloc'd; it is freed once its handles (the
 * timer; the socket of a one-off connection) are closed and its task let go
 * of it (results taken, dropped, or the call cancelled). A leased connection
 * is released or closed before that and hears nothing of the io after. Writes
 * point into `req`, which lives as long as the io; a transport that closes
 * cancels its writes without touching their bytes (TLS copies them).
 */
#include "lua/http_client.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-t.h"
#include "runtime-t.h"
#include "upstream/pool.h"
#include "resilience/breaker.h"
#include "resilience/registry-t.h"
#include "resilience/registry.h"
#include "lua/state-t.h"
#include "lua/task.h"
#include "lua/ws-t.h"

#define READ_BUF 16384

struct hdr {
    size_t name_off, name_len, val_off, val_len;
};

struct http_io {
    struct mg_lua_io io;
    /* to an upstream: a leased pool connection (NULL once given back) */
    struct mg_upconn *u;
    struct mg_target_rt *trt;
    struct mg_loopctx *ctx;
    uint64_t connect_ms;
    bool pooled;
    bool reused;     /* u came idle from the pool */
    bool got_bytes;  /* u sent something for this request */
    bool head;       /* a HEAD request: the response has no body */
    int redials;     /* stale pooled connections given up on */
    bool idempotent; /* may be sent again (not POST, PATCH) */
    /* to "IP:port": a one-off connection */
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    int handles;   /* open handles */
    bool finished; /* the outcome is set (handles closing) */
    bool released; /* the task let go */
    char *req;
    size_t reqlen;
    llhttp_t parser;
    bool in_value; /* the last header callback was a value */
    bool interim;  /* the head being read is a 1xx: the answer follows it */
    bool complete;
    int status;
    char *hbuf;
    size_t hlen, hcap;
    struct hdr *hdrs;
    size_t nh, nhcap;
    char *body;
    size_t blen, bcap, bmax;
    char err[128];
    /* a call to an upstream's target: its breaker hears the outcome */
    struct mg_target_stats *stats;
    const struct mg_breaker_conf *breaker;
    uv_loop_t *loop;
    uint32_t probe;
    char rbuf[READ_BUF];
};

static void io_maybe_free(struct http_io *h)
{
    if (h->handles || !h->released)
        return;
    free(h->req);
    free(h->hbuf);
    free(h->hdrs);
    free(h->body);
    free(h);
}

static void on_closed(uv_handle_t *hd)
{
    struct http_io *h = hd->data;
    h->handles--;
    io_maybe_free(h);
}

/* Gives the leased connection back when the response allows reuse. */
static void drop_conn(struct http_io *h, bool reusable)
{
    struct mg_upconn *u = h->u;
    if (!u)
        return;
    h->u = NULL;
    if (reusable)
        mg_upconn_release(u); /* closes it when bytes are left over or the pool is full */
    else
        mg_upconn_close(u);
}

static void close_handles(struct http_io *h)
{
    uv_timer_stop(&h->timer);
    drop_conn(h, false);
    if (!h->pooled && !uv_is_closing((uv_handle_t *)&h->tcp))
        uv_close((uv_handle_t *)&h->tcp, on_closed);
    if (!uv_is_closing((uv_handle_t *)&h->timer))
        uv_close((uv_handle_t *)&h->timer, on_closed);
}

/* The call ended (err NULL: a response is in; reusable: its connection may
 * serve another request). */
static void finish_ex(struct http_io *h, const char *err, bool reusable)
{
    if (h->finished)
        return;
    h->finished = true;
    if (err)
        snprintf(h->err, sizeof h->err, "%s", err);
    drop_conn(h, reusable && !h->err[0]);
    h->io.kind = MG_LUA_IO_HTTP;
    h->io.result = !h->err[0]                          ? MG_LUA_IO_OK
                   : strstr(h->err, "timeout") == NULL ? MG_LUA_IO_ERROR
                                                       : MG_LUA_IO_TIMEOUT;
    if (h->stats) {
        bool failure = h->err[0] || mg_breaker_is_failure_status(h->breaker, h->status);
        mg_breaker_report(&h->stats->breaker, h->breaker, uv_now(h->loop), failure, h->probe);
    }
    close_handles(h);
    mg_lua_io_complete(&h->io);
}

static void finish(struct http_io *h, const char *err)
{
    finish_ex(h, err, false);
}

static void io_cancel(struct mg_lua_io *io)
{
    struct http_io *h = (struct http_io *)io;
    if (h->stats && !h->finished)
        mg_breaker_cancel(&h->stats->breaker, h->probe);
    h->finished = true;
    h->released = true;
    close_handles(h);
    io_maybe_free(h);
}

static void io_release(struct mg_lua_io *io)
{
    struct http_io *h = (struct http_io *)io;
    h->released = true;
    io_maybe_free(h);
}

static int io_push(lua_State *L, struct mg_lua_io *io)
{
    struct http_io *h = (struct http_io *)io;
    if (h->err[0]) {
        lua_pushnil(L);
        lua_pushstring(L, h->err);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, h->status);
    lua_setfield(L, -2, "status");
    lua_newtable(L);
    for (size_t i = 0; i < h->nh; i++) {
        char *name = h->hbuf + h->hdrs[i].name_off;
        for (size_t k = 0; k < h->hdrs[i].name_len; k++)
            if (name[k] >= 'A' && name[k] <= 'Z')
                name[k] = (char)(name[k] + 32);
        lua_pushlstring(L, name, h->hdrs[i].name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_rawset(L, -5);
        }
        lua_pushlstring(L, h->hbuf + h->hdrs[i].val_off, h->hdrs[i].val_len);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, h->body ? h->body : "", h->blen);
    lua_setfield(L, -2, "body");
    return 1;
}

/* ------------------------------------------------------------ parsing */

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p)
        return -1;
    *buf = p;
    *cap = c;
    return 0;
}

static struct http_io *of(llhttp_t *p)
{
    return p->data;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    struct http_io *h = of(p);
    if (h->in_value || h->nh == 0) {
        if (h->nh == h->nhcap) {
            size_t c = h->nhcap ? h->nhcap * 2 : 16;
            struct hdr *n = c <= 512 ? realloc(h->hdrs, c * sizeof *n) : NULL;
            if (!n)
                return HPE_USER;
            h->hdrs = n;
            h->nhcap = c;
        }
        h->hdrs[h->nh++] = (struct hdr){h->hlen, 0, 0, 0};
        h->in_value = false;
    }
    if (h->hlen + len > 64 * 1024 || grow(&h->hbuf, &h->hcap, h->hlen + len) < 0)
        return HPE_USER;
    memcpy(h->hbuf + h->hlen, at, len);
    h->hlen += len;
    h->hdrs[h->nh - 1].name_len += len;
    return 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    struct http_io *h = of(p);
    if (h->nh == 0)
        return HPE_USER;
    struct hdr *e = &h->hdrs[h->nh - 1];
    if (!h->in_value) {
        e->val_off = h->hlen;
        h->in_value = true;
    }
    if (h->hlen + len > 64 * 1024 || grow(&h->hbuf, &h->hcap, h->hlen + len) < 0)
        return HPE_USER;
    memcpy(h->hbuf + h->hlen, at, len);
    h->hlen += len;
    e->val_len += len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct http_io *h = of(p);
    if (p->status_code < 100) {
        snprintf(h->err, sizeof h->err, "invalid status code %d", p->status_code);
        return -1;
    }
    if (p->status_code < 200 && p->status_code != 101) {
        /* 100 or 103 before the answer (RFC 9110 15.2): its fields are not
         * the answer's; llhttp reads the next head on the same parser. */
        h->interim = true;
        h->nh = h->hlen = 0;
        h->in_value = false;
        return 0;
    }
    h->status = p->status_code;
    if (!h->head && (p->flags & F_CONTENT_LENGTH) && p->content_length > h->bmax) {
        /* known now: no need to wait for the bytes (or the timeout) */
        snprintf(h->err, sizeof h->err, "response body larger than %zu bytes", h->bmax);
        return -1;
    }
    return h->head ? 1 : 0; /* 1: no body follows */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct http_io *h = of(p);
    if (h->blen + len > h->bmax) {
        snprintf(h->err, sizeof h->err, "response body larger than %zu bytes", h->bmax);
        return HPE_USER;
    }
    if (grow(&h->body, &h->bcap, h->blen + len) < 0)
        return HPE_USER;
    memcpy(h->body + h->blen, at, len);
    h->blen += len;
    return 0;
}

static int on_complete(llhttp_t *p)
{
    struct http_io *h = of(p);
    if (h->interim) {
        h->interim = false;
        return 0;
    }
    h->complete = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* ------------------------------------------------------------ I/O */

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct http_io *h = hd->data;
    *buf = uv_buf_init(h->rbuf, sizeof h->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_io *h = s->data;
    if (h->finished || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && llhttp_finish(&h->parser) == HPE_OK && h->complete)
            finish(h, NULL);
        else
            finish(h, "connection closed before the response was complete");
        return;
    }
    llhttp_errno_t e = llhttp_execute(&h->parser, buf->base, (size_t)nread);
    if (h->complete) {
        finish(h, NULL);
    } else if (e != HPE_OK) {
        char msg[sizeof h->err + 16];
        snprintf(msg, sizeof msg, "bad response: %.100s",
                 h->err[0] ? h->err : llhttp_errno_name(e));
        h->err[0] = '\0';
        finish(h, msg);
    }
}

static void on_written(uv_write_t *w, int status)
{
    struct http_io *h = w->data;
    if (status < 0 && !h->finished) {
        char msg[96];
        snprintf(msg, sizeof msg, "send: %s", uv_strerror(status));
        finish(h, msg);
    }
}

static void on_connect(uv_connect_t *c, int status)
{
    struct http_io *h = c->data;
    if (h->finished)
        return;
    if (status < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "connect: %s", uv_strerror(status));
        finish(h, msg);
        return;
    }
    uv_buf_t b = uv_buf_init(h->req, (unsigned)h->reqlen);
    h->wreq.data = h;
    int rc = uv_write(&h->wreq, (uv_stream_t *)&h->tcp, &b, 1, on_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&h->tcp, on_alloc, on_read);
    if (rc < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "send: %s", uv_strerror(rc));
        finish(h, msg);
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct http_io *h = t->data;
    finish(h, h->err[0] ? NULL : "timeout"); /* a connect that could not start set err */
}

/* ------------------------------------------------------------ pooled I/O */

/* A pooled connection can be one the upstream closed while it sat idle: the
 * request then goes on another (each stale one leaves the pool, so this
 * ends). */
#define MAX_REDIALS 4

static void reset_response(struct http_io *h)
{
    llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
    h->parser.data = h;
    h->in_value = false;
    h->complete = h->interim = false;
    h->status = 0;
    h->hlen = h->nh = h->blen = 0;
}

static const struct mg_upconn_ops pooled_ops;

/* Sends the request on h->u (connected). Returns 0 or a negative UV_E*. */
static int pooled_send(struct http_io *h)
{
    struct mg_upconn *u = h->u;
    mg_upconn_set_timeout(u, 0); /* the call's own timer covers the rest */
    mg_upconn_set_reading(u, true);
    mg_wq_add(&u->out, h->req, h->reqlen, NULL);
    int rc = mg_wq_flush(&u->out);
    return rc < 0 ? rc : 0;
}

/* Leases a connection and sends when it is ready. Returns 0 or a negative
 * UV_E* (nothing leased). */
static int pooled_start(struct http_io *h)
{
    bool reused = false;
    int rc = mg_upconn_acquire(h->ctx, h->trt, h, &pooled_ops, h->connect_ms, &h->u, &reused);
    if (rc < 0) {
        h->u = NULL;
        return rc;
    }
    h->reused = reused;
    h->got_bytes = false;
    if (reused && (rc = pooled_send(h)) < 0)
        drop_conn(h, false);
    return rc;
}

/* The connection failed: on a stale pooled one, try another. */
static void pooled_failed(struct http_io *h, const char *what, int status)
{
    if (h->reused && !h->got_bytes && h->idempotent && h->redials < MAX_REDIALS) {
        h->redials++;
        drop_conn(h, false);
        reset_response(h);
        int rc = pooled_start(h);
        if (rc == 0)
            return;
        status = rc;
        what = "connect";
    }
    char msg[96];
    snprintf(msg, sizeof msg, "%s: %s", what, uv_strerror(status));
    finish(h, msg);
}

static void pooled_on_connect(struct mg_upconn *u, int status)
{
    struct http_io *h = u->owner;
    if (status == 0)
        status = pooled_send(h);
    if (status < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "connect: %s", uv_strerror(status));
        finish(h, msg);
    }
}

static void pooled_on_read(struct mg_upconn *u, ssize_t nread)
{
    struct http_io *h = u->owner;
    if (nread < 0) {
        if (nread == UV_EOF && h->got_bytes && llhttp_finish(&h->parser) == HPE_OK && h->complete)
            finish(h, NULL); /* a body that ran to the close */
        else if (h->got_bytes || nread != UV_EOF)
            pooled_failed(h, "read", (int)nread);
        else
            pooled_failed(h, "connection closed before the response", (int)nread);
        return;
    }
    h->got_bytes = true;
    const char *base = u->in.buf + u->in.start;
    llhttp_errno_t e = llhttp_execute(&h->parser, base, u->in.end - u->in.start);
    if (e == HPE_PAUSED)
        u->in.start += (size_t)(llhttp_get_error_pos(&h->parser) - base);
    else
        u->in.start = u->in.end;
    if (h->complete) {
        finish_ex(h, NULL, llhttp_should_keep_alive(&h->parser) != 0);
    } else if (e != HPE_OK) {
        char msg[sizeof h->err + 16];
        snprintf(msg, sizeof msg, "bad response: %.100s",
                 h->err[0] ? h->err : llhttp_errno_name(e));
        h->err[0] = '\0';
        finish(h, msg);
    }
}

static void pooled_on_timeout(struct mg_upconn *u)
{
    finish(u->owner, "connect: timeout"); /* the pool's timer runs only while connecting */
}

static void pooled_on_unpinned(struct mg_upconn *u)
{
    (void)u; /* nothing of ours points into its buffer */
}

static void pooled_on_written(struct mg_upconn *u, int status)
{
    if (status < 0)
        pooled_failed(u->owner, "send", status);
}

static const struct mg_upconn_ops pooled_ops = {
    .on_connect = pooled_on_connect,
    .on_read = pooled_on_read,
    .on_timeout = pooled_on_timeout,
    .on_unpinned = pooled_on_unpinned,
    .on_written = pooled_on_written,
};

/* ------------------------------------------------------------ start */

static int fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* The address to call; for an upstream, its targets in turn, skipping those
 * whose breaker is open or whose health check failed (then admitted by the
 * breaker: h->stats and h->probe are set). */
static int resolve(lua_State *L, struct mg_lua *vm, const char *kind, const char *target,
                   struct sockaddr_storage *ss, uint64_t *default_ms, struct http_io *h, char *msg,
                   size_t cap)
{
    if (strcmp(kind, "upstream") == 0) {
        const struct mg_config *cfg = vm->cfg;
        for (size_t i = 0; i < cfg->nupstreams; i++) {
            const struct mg_upstream_conf *uc = &cfg->upstreams[i];
            if (strcmp(uc->name, target) != 0)
                continue;
            uint64_t now = uv_now(vm->ws->loop);
            for (size_t k = 0; k < uc->ntargets; k++) {
                size_t ti = vm->ws->http_rr++ % uc->ntargets;
                const struct mg_target_conf *t = &uc->targets[ti];
                struct mg_target_stats *st = mg_registry_target(uc->name, t->address.text);
                if (atomic_load(&st->unhealthy) ||
                    !mg_breaker_acquire(&st->breaker, &uc->breaker, now, &h->probe))
                    continue;
                memcpy(ss, &t->address.addr, sizeof *ss);
                *default_ms = uc->read_timeout_ms;
                if (vm->ws->ups && vm->ws->loopctx) {
                    h->pooled = true;
                    h->trt = &vm->ws->ups[i].targets[ti];
                    h->ctx = vm->ws->loopctx;
                    h->connect_ms = uc->connect_timeout_ms;
                }
                h->stats = st;
                h->breaker = &uc->breaker;
                return 0;
            }
            snprintf(msg, cap, "circuit open (no available target of upstream %.64s)", target);
            return -1;
        }
        snprintf(msg, cap, "no upstream '%.64s' in the config", target);
        return -1;
    }
    (void)L;
    char host[64];
    const char *colon = strrchr(target, ':');
    size_t hl = colon ? (size_t)(colon - target) : 0;
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || hl == 0 || hl >= sizeof host || !end || *end || port < 1 || port > 65535) {
        snprintf(msg, cap, "host must be \"IP:port\" (got %.64s)", target);
        return -1;
    }
    memcpy(host, target, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
    } else if (host[0] == '[' && hl > 2 && host[hl - 1] == ']' &&
               (host[hl - 1] = '\0', inet_pton(AF_INET6, host + 1, &sin6->sin6_addr) == 1)) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
    } else {
        snprintf(msg, cap,
                 "host must be an IP address (names are not resolved here: declare an "
                 "upstream), got %.64s",
                 target);
        return -1;
    }
    *default_ms = 10000;
    return 0;
}

int mg_lua_http_start(lua_State *L)
{
    struct mg_lua *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *kind = luaL_checkstring(L, 1);
    const char *target = luaL_checkstring(L, 2);
    size_t reqlen;
    const char *req = luaL_checklstring(L, 3, &reqlen);
    double timeout_s = luaL_optnumber(L, 4, 0);
    double max_body = luaL_optnumber(L, 5, 1024 * 1024);
    uv_loop_t *loop = mg_lua_loop(vm);
    if (!mg_lua_waiting_task(vm) || !loop)
        return luaL_error(L, "gw.http.request: cannot wait here (only in access, log and timer "
                             "callbacks)");
    struct sockaddr_storage ss;
    uint64_t def_ms;
    char msg[160];
    struct http_io *h = calloc(1, sizeof *h);
    char *copy = malloc(reqlen ? reqlen : 1);
    if (!h || !copy) {
        free(h);
        free(copy);
        mg_lua_io_failed(vm, MG_LUA_IO_HTTP);
        return fail(L, "out of memory");
    }
    if (resolve(L, vm, kind, target, &ss, &def_ms, h, msg, sizeof msg) < 0) {
        free(h);
        free(copy);
        mg_lua_io_failed(vm, MG_LUA_IO_HTTP);
        return fail(L, msg);
    }
    h->loop = loop;
    uint64_t ms = timeout_s > 0 ? (uint64_t)ceil(timeout_s * 1000) : def_ms;
    memcpy(copy, req, reqlen);
    h->req = copy;
    h->reqlen = reqlen;
    h->bmax = max_body >= 0 && max_body < 1e12 ? (size_t)max_body : 1024 * 1024;
    h->io.cancel = io_cancel;
    h->io.release = io_release;
    h->io.push = io_push;
    h->head = reqlen >= 5 && memcmp(req, "HEAD ", 5) == 0;
    h->idempotent = !(reqlen >= 5 && memcmp(req, "POST ", 5) == 0) &&
                    !(reqlen >= 6 && memcmp(req, "PATCH ", 6) == 0);
    llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
    h->parser.data = h;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->handles = 1;
    mg_lua_io_begin(vm, &h->io);
    uv_timer_start(&h->timer, on_timeout, ms, 0);
    int rc;
    if (h->pooled) {
        rc = pooled_start(h);
    } else {
        uv_tcp_init(loop, &h->tcp);
        h->tcp.data = h;
        h->creq.data = h;
        h->handles++;
        rc = uv_tcp_connect(&h->creq, &h->tcp, (const struct sockaddr *)&ss, on_connect);
    }
    if (rc < 0) {
        /* Complete from the loop, never inside this Lua call: the timer fires
         * at once. */
        snprintf(h->err, sizeof h->err, "connect: %s", uv_strerror(rc));
        uv_timer_start(&h->timer, on_timeout, 0, 0);
    }
    lua_pushboolean(L, 1);
    return 1;
}

void mg_lua_http_bind(struct mg_lua *vm, struct mg_loopctx *ctx, struct mg_upstream_rt *ups)
{
    if (!vm || !vm->ws)
        return;
    vm->ws->loopctx = ctx;
    vm->ws->ups = ups;
}
