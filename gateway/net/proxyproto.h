/*
 * The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy specifies
 * it (doc/proxy-protocol.txt): the header an L4 load balancer writes before
 * the client's first byte, naming the client's address. A pure parser over
 * bytes: it never reads past the header, so what follows (an HTTP request, a
 * TLS ClientHello) stays where it is for the code above.
 *
 * Strict: anything the specification does not allow is invalid (a connection
 * on a PROXY listener that does not start with a valid header is refused), and
 * garbage is refused as soon as a byte shows it, without waiting for more.
 */
#ifndef MG_NET_PROXYPROTO_H
#define MG_NET_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A v1 line is at most 107 bytes with its CRLF (the specification's bound). */
#define MG_PROXY_V1_MAX 107
/* The largest v2 header accepted (its 16 fixed bytes included): the
 * specification allows 16 + 65535, but real TLVs (AWS, GCP, HAProxy's SSL
 * ones) are a few hundred bytes, and the header must fit one read buffer. */
#define MG_PROXY_V2_MAX 4096

enum mg_proxy_verdict {
    MG_PROXY_MORE,    /* a valid prefix: wait for more bytes */
    MG_PROXY_OK,      /* a whole header: see struct mg_proxy_header */
    MG_PROXY_INVALID, /* not a valid header: refuse the connection */
};

struct mg_proxy_header {
    size_t len;                       /* bytes of the header (what follows is the client's) */
    int version;                      /* 1 or 2 */
    bool has_addr;                    /* false: v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or UNIX: keep the
                                         connection's own address */
    struct sockaddr_storage src, dst; /* AF_INET or AF_INET6, when has_addr */
};

/* Parses the start of a connection's bytes `p[0..n)`. On MG_PROXY_OK, *h
 * holds the header; otherwise *h is untouched but for h->len. */
enum mg_proxy_verdict mg_proxy_parse(const char *p, size_t n, struct mg_proxy_header *h);

/* The address of `ss` (AF_INET / AF_INET6) as text, "" when neither. */
void mg_proxy_addr_text(const struct sockaddr_storage *ss, char *out, size_t len);

#endif
