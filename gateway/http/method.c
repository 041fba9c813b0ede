/*
 * Method lookup (method.h): dispatched on the length, then on the first
 * character, so a request pays one or two comparisons, not a walk over
 * llhttp's 46 names (tests/unit/test_method.c checks it against
 * HTTP_METHOD_MAP and RTSP_METHOD_MAP).
 */
#include "http/method.h"

#include <llhttp.h>
#include <string.h>

/* num when p is exactly the literal `lit` of the caller's length. */
#define IS(lit, num) (memcmp(p, lit, sizeof lit - 1) == 0 ? (num) : -1)

static int len3(const char *p)
{
    switch (p[0]) {
    case 'G':
        return IS("GET", HTTP_GET);
    case 'P':
        return IS("PUT", HTTP_PUT);
    case 'A':
        return IS("ACL", HTTP_ACL);
    default:
        return -1;
    }
}

static int len4(const char *p)
{
    switch (p[0]) {
    case 'P':
        return IS("POST", HTTP_POST);
    case 'H':
        return IS("HEAD", HTTP_HEAD);
    case 'C':
        return IS("COPY", HTTP_COPY);
    case 'L':
        return p[1] == 'O' ? IS("LOCK", HTTP_LOCK) : IS("LINK", HTTP_LINK);
    case 'M':
        return IS("MOVE", HTTP_MOVE);
    case 'B':
        return IS("BIND", HTTP_BIND);
    default:
        return -1;
    }
}

static int len5(const char *p)
{
    switch (p[0]) {
    case 'P':
        return p[1] == 'A' ? IS("PATCH", HTTP_PATCH) : IS("PURGE", HTTP_PURGE);
    case 'T':
        return IS("TRACE", HTTP_TRACE);
    case 'M':
        return p[1] == 'K' ? IS("MKCOL", HTTP_MKCOL) : IS("MERGE", HTTP_MERGE);
    default:
        return -1;
    }
}

static int len6(const char *p)
{
    switch (p[0]) {
    case 'D':
        return IS("DELETE", HTTP_DELETE);
    case 'S':
        return p[1] == 'E' ? IS("SEARCH", HTTP_SEARCH) : IS("SOURCE", HTTP_SOURCE);
    case 'U':
        if (p[2] == 'B')
            return IS("UNBIND", HTTP_UNBIND);
        return p[3] == 'O' ? IS("UNLOCK", HTTP_UNLOCK) : IS("UNLINK", HTTP_UNLINK);
    case 'R':
        return p[2] == 'B' ? IS("REBIND", HTTP_REBIND) : IS("REPORT", HTTP_REPORT);
    case 'N':
        return IS("NOTIFY", HTTP_NOTIFY);
    default:
        return -1;
    }
}

static int len_long(const char *p, size_t len)
{
    switch (len) {
    case 7:
        return p[0] == 'O' ? IS("OPTIONS", HTTP_OPTIONS) : IS("CONNECT", HTTP_CONNECT);
    case 8:
        if (p[0] == 'P')
            return IS("PROPFIND", HTTP_PROPFIND);
        return p[0] == 'C' ? IS("CHECKOUT", HTTP_CHECKOUT) : IS("M-SEARCH", HTTP_MSEARCH);
    case 9:
        return p[0] == 'P' ? IS("PROPPATCH", HTTP_PROPPATCH) : IS("SUBSCRIBE", HTTP_SUBSCRIBE);
    case 10:
        return p[2] == 'A' ? IS("MKACTIVITY", HTTP_MKACTIVITY) : IS("MKCALENDAR", HTTP_MKCALENDAR);
    case 11:
        return IS("UNSUBSCRIBE", HTTP_UNSUBSCRIBE);
    default:
        return -1;
    }
}

int mg_http_method(const char *p, size_t len)
{
    switch (len) {
    case 3:
        return len3(p);
    case 4:
        return len4(p);
    case 5:
        return len5(p);
    case 6:
        return len6(p);
    default:
        return len_long(p, len);
    }
}
