/*
 * Response-head writer (see writer.h): the reason-phrase table, number
 * formatting without printf, status and field lines, and the gateway's tail.
 *
 * Invariant: every write lands in a buffer the caller sized from writer.h's
 * bounds, so nothing here checks room or allocates; callers assert afterwards
 * that they stayed inside (MG_ASSERT(o - start <= cap)). The tail's field order
 * (Via, X-Request-Id, framing, Connection, CRLF) is part of every response's
 * bytes: change it only on purpose.
 *
 * Ownership: none. Inputs are borrowed for the call; output goes to the caller's
 * buffer. No state, so the admin thread and the workers share it freely.
 */
#include "http/writer.h"

#include <string.h>

#define PUT(o, p, n)  (memcpy((o), (p), (n)), (o) += (n))
#define PUT_LIT(o, s) PUT(o, s, sizeof(s) - 1)

#define VIA_FIELD     "Via: 1.1 moongate\r\n"
#define RID_NAME      "X-Request-Id: "
#define LENGTH_NAME   "Content-Length: "
#define CHUNKED_FIELD "Transfer-Encoding: chunked\r\n"
#define CLOSE_FIELD   "Connection: close\r\n"
#define KEEP_FIELD    "Connection: keep-alive\r\n"
#define UPGRADE_NAME  "Connection: upgrade\r\nUpgrade: "
#define LIT_LEN(s)    (sizeof(s) - 1)

const char *mg_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 206:
        return "Partial Content";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

size_t mg_http_put_dec(char *out, uint64_t v)
{
    char tmp[MG_HTTP_DEC_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t mg_http_put_hex(char *out, uint64_t v, int min_digits)
{
    char tmp[MG_HTTP_HEX_MAX];
    int n = 0;
    if (min_digits > MG_HTTP_HEX_MAX)
        min_digits = MG_HTTP_HEX_MAX;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v || n < min_digits);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return (size_t)n;
}

size_t mg_http_chunk_head(char *out, size_t len)
{
    size_t n = mg_http_put_hex(out, len, 1);
    out[n++] = '\r';
    out[n++] = '\n';
    return n;
}

bool mg_http_reason_ok(struct mg_slice reason)
{
    for (size_t i = 0; i < reason.len; i++) {
        unsigned char c = (unsigned char)reason.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

char *mg_http_put_status_line(char *o, int status, struct mg_slice reason)
{
    PUT_LIT(o, "HTTP/1.1 ");
    *o++ = (char)('0' + status / 100 % 10);
    *o++ = (char)('0' + status / 10 % 10);
    *o++ = (char)('0' + status % 10);
    *o++ = ' ';
    if (reason.len) /* "HTTP/1.1 200\r\n" has none (and a NULL pointer) */
        PUT(o, reason.p, reason.len);
    PUT_LIT(o, "\r\n");
    return o;
}

char *mg_http_put_status(char *o, int status)
{
    const char *reason = mg_http_reason(status);
    return mg_http_put_status_line(o, status, (struct mg_slice){reason, strlen(reason)});
}

char *mg_http_put_field(char *o, struct mg_slice name, struct mg_slice value)
{
    if (name.len)
        PUT(o, name.p, name.len);
    PUT_LIT(o, ": ");
    if (value.len) /* an empty value may come with a NULL pointer */
        PUT(o, value.p, value.len);
    PUT_LIT(o, "\r\n");
    return o;
}

enum mg_http_conn mg_http_conn_for(bool close_after, unsigned http_minor)
{
    if (close_after)
        return MG_HTTP_CONN_CLOSE;
    return http_minor == 0 ? MG_HTTP_CONN_KEEP_ALIVE : MG_HTTP_CONN_NONE;
}

size_t mg_http_tail_max(const struct mg_http_tail *t)
{
    size_t n = 2; /* the empty line */
    if (t->via)
        n += LIT_LEN(VIA_FIELD);
    if (t->request_id)
        n += LIT_LEN(RID_NAME) + strlen(t->request_id) + 2;
    if (t->framing == MG_HTTP_FRAME_LENGTH)
        n += LIT_LEN(LENGTH_NAME) + MG_HTTP_DEC_MAX + 2;
    else if (t->framing == MG_HTTP_FRAME_CHUNKED)
        n += LIT_LEN(CHUNKED_FIELD);
    switch (t->conn) {
    case MG_HTTP_CONN_NONE:
        break;
    case MG_HTTP_CONN_CLOSE:
        n += LIT_LEN(CLOSE_FIELD);
        break;
    case MG_HTTP_CONN_KEEP_ALIVE:
        n += LIT_LEN(KEEP_FIELD);
        break;
    case MG_HTTP_CONN_UPGRADE:
        n += LIT_LEN(UPGRADE_NAME) + t->upgrade.len + 2;
        break;
    }
    return n;
}

char *mg_http_put_tail(char *o, const struct mg_http_tail *t)
{
    if (t->via)
        PUT_LIT(o, VIA_FIELD);
    if (t->request_id) {
        PUT_LIT(o, RID_NAME);
        PUT(o, t->request_id, strlen(t->request_id));
        PUT_LIT(o, "\r\n");
    }
    if (t->framing == MG_HTTP_FRAME_LENGTH) {
        PUT_LIT(o, LENGTH_NAME);
        o += mg_http_put_dec(o, t->length);
        PUT_LIT(o, "\r\n");
    } else if (t->framing == MG_HTTP_FRAME_CHUNKED) {
        PUT_LIT(o, CHUNKED_FIELD);
    }
    switch (t->conn) {
    case MG_HTTP_CONN_NONE:
        break;
    case MG_HTTP_CONN_CLOSE:
        PUT_LIT(o, CLOSE_FIELD);
        break;
    case MG_HTTP_CONN_KEEP_ALIVE:
        PUT_LIT(o, KEEP_FIELD);
        break;
    case MG_HTTP_CONN_UPGRADE:
        PUT_LIT(o, UPGRADE_NAME);
        if (t->upgrade.len)
            PUT(o, t->upgrade.p, t->upgrade.len);
        PUT_LIT(o, "\r\n");
        break;
    }
    PUT_LIT(o, "\r\n");
    return o;
}
