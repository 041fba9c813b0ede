/*
 * Method names to llhttp's numbers: the one table behind the config's route
 * `methods:` and the HTTP/2 codec's `:method`. Pure, no allocation.
 */
#ifndef MG_HTTP_METHOD_H
#define MG_HTTP_METHOD_H

#include <stddef.h>

/* llhttp's number (llhttp_method_t) of the method an HTTP/1.1 request may
 * carry (llhttp's HTTP_METHOD_MAP, as h1server accepts them), or -1. Exact
 * and case-sensitive (RFC 9110 section 9.1). RTSP-only names (PLAY, SETUP...)
 * and unknown ones are -1: llhttp_method_name aborts on the numbers its map
 * skips, so a caller may pass only what this returned to it. */
int mg_http_method(const char *p, size_t len);

#endif
