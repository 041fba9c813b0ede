/*
 * Request-line and header rules the proxy applies on top of llhttp: Host syntax,
 * the absolute form of request targets, acceptable request ids. Pure functions
 * on slices: no allocation, no state.
 */
#ifndef MG_HTTP_REQUEST_H
#define MG_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "http/message.h"

/* RFC 9112 section 3.2: uri-host [ ":" port ] characters only (an empty Host is
 * allowed); spaces, slashes, '@' and the like make it invalid. */
bool mg_http_host_valid(struct mg_slice host);

/* RFC 9112 section 3.2.2: "http://host/path?q" (or https) as the target. When
 * *url is in absolute form, sets *authority to its host[:port] and rewrites *url
 * to the origin form ("/path?q", or "/" when the path is empty). Leaves both alone
 * for an origin-form target. Returns -1 for a malformed absolute form (no host,
 * userinfo, a bad host, "http://h?q"). */
int mg_http_absolute_form(struct mg_slice *url, struct mg_slice *authority);

/* A client's X-Request-Id is kept when it is 1..max visible ASCII characters
 * without quotes or backslashes (it is echoed into JSON and logs). */
bool mg_http_request_id_valid(struct mg_slice id, size_t max);

/* A request-target without whitespace, control bytes, raw bytes >= 0x80 or
 * '#'. The target is ASCII (RFC 9112 section 3.2, RFC 3986 section 2: other
 * octets are percent-encoded); raw UTF-8 or Latin-1 is read differently by
 * different upstreams (HAProxy refuses it by default too). llhttp 8.1.0 lets
 * HTAB and FF through inside it (found by tests/fuzz/fuzz_request); an upstream
 * that splits the request line on any whitespace would read another target. A
 * fragment is never part of a request-target (RFC 9112 section 3.2, RFC 9113
 * section 8.3.1); upstream URL parsers drop it, so "/admin#x" would be routed as
 * one path and served as another. */
bool mg_http_target_valid(struct mg_slice url);

/* A path the router can match without ambiguity: no dot segment, no "%00", no
 * raw '\'. A dot segment is "." or ".." (also spelled "%2e") after a separator
 * and ended by the end of the path, a separator or ';', where a separator is
 * '/', '\', "%2F" or "%5C" (either case): "/../", "/a/.", "/x/..;/admin"
 * (path parameters, Tomcat/Spring/Jetty), "/x/..%2fadmin" (servers that decode
 * %2F before splitting), "/x/..%5cadmin" (Windows). Upstreams and the router
 * would otherwise disagree on what such a path names ("/public/../admin"
 * matching the /public route), so the gateway refuses them (400) instead of
 * normalising: the target is forwarded byte for byte. `path` starts with '/'. */
bool mg_http_path_safe(struct mg_slice path);

/* The form of a safe path the router matches (RFC 3986 section 6.2.2):
 * percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) decoded, the hex
 * digits of the other escapes in upper case ("/%61dmin%2f" -> "/admin%2F"); other
 * bytes unchanged. Writes at most path.len bytes to `out` (which may be path.p)
 * and returns the length written. */
size_t mg_http_path_route_form(struct mg_slice path, char *out);

/* How many bytes of `path` make the first `n` bytes of its route form
 * (strip_prefix cuts the raw path after the prefix the route form matched). */
size_t mg_http_path_raw_len(struct mg_slice path, size_t n);

/* Why a target would be refused (the plugin API explains its refusals). */
enum mg_http_target_fault {
    MG_TARGET_OK,
    MG_TARGET_NOT_ORIGIN,  /* empty, or not starting with '/' */
    MG_TARGET_CONTROL,     /* whitespace, a control byte or DEL */
    MG_TARGET_NON_ASCII,   /* a raw byte >= 0x80 */
    MG_TARGET_FRAGMENT,    /* '#' */
    MG_TARGET_QUERY,       /* '?' where only a path is expected */
    MG_TARGET_UNSAFE_PATH, /* refused by mg_http_path_safe() */
};

/* The verdict on an origin-form target (path, then an optional "?query"), or
 * with `path_only` a bare path: mg_http_target_valid() and mg_http_path_safe()
 * together, as the codecs apply them (h2 calls this; h1 checks the bytes before
 * taking the absolute form apart), so a target a plugin sets (ctx:set_path)
 * obeys the rules of one a client sends. */
enum mg_http_target_fault mg_http_path_fault(struct mg_slice target, bool path_only);

#endif
