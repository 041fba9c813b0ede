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

/* A request-target without whitespace or control bytes. llhttp 8.1.0 lets HTAB
 * and FF through inside it (found by tests/fuzz/fuzz_request); an upstream that
 * splits the request line on any whitespace would read another target. */
bool mg_http_target_valid(struct mg_slice url);

/* A path the router can match without ambiguity: no dot segment ("/./",
 * "/../", a trailing "/." or "/..", also percent-encoded as "%2e") and no "%00".
 * Upstreams and the router would otherwise disagree on what such a path names
 * ("/public/../admin" matching the /public route), so the gateway refuses them
 * (400) instead of normalising: what is routed is exactly what is forwarded.
 * `path` starts with '/'. */
bool mg_http_path_safe(struct mg_slice path);

#endif
