/*
 * fuzz_proxyproto: the PROXY protocol parser (gateway/net/proxyproto.h) over
 * arbitrary bytes, as a connection's first reads deliver them.
 *
 * Input: the bytes a client sends first.
 *
 * Invariants: the verdict is a function of the bytes alone and is stable as
 * more arrive: every prefix of an accepted header needs more, and appending
 * bytes to an accepted header changes neither the verdict nor its length;
 * once a prefix is invalid, every longer one is invalid too; an accepted
 * header's length is within the input and the protocol's bounds (v1 ends in
 * CRLF within 107 bytes, v2 is its 16 fixed bytes plus the length they give);
 * a header with an address gives an IPv4 or IPv6 one that prints. Each call
 * reads its own allocation of exactly the bytes given, so a read past them is
 * an ASan report.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "net/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static enum mg_proxy_verdict parse_copy(const uint8_t *data, size_t n, struct mg_proxy_header *h)
{
    char *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    memcpy(p, data, n);
    memset(h, 0, sizeof *h);
    enum mg_proxy_verdict v = mg_proxy_parse(p, n, h);
    free(p);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * MG_PROXY_V2_MAX)
        return 0;
    struct mg_proxy_header h, h2;
    enum mg_proxy_verdict v = parse_copy(data, size, &h);
    if (v == MG_PROXY_OK) {
        CHECK(h.len > 0 && h.len <= size);
        CHECK(h.version == 1 || h.version == 2);
        if (h.version == 1)
            CHECK(h.len <= MG_PROXY_V1_MAX && data[h.len - 2] == '\r' && data[h.len - 1] == '\n');
        else
            CHECK(h.len == 16 + ((size_t)data[14] << 8 | data[15]) && h.len <= MG_PROXY_V2_MAX);
        if (h.has_addr) {
            char text[64];
            CHECK(h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
            CHECK(h.dst.ss_family == h.src.ss_family);
            mg_proxy_addr_text(&h.src, text, sizeof text);
            CHECK(text[0] != '\0');
        }
        /* the header alone: the same; any strict prefix of it: more */
        CHECK(parse_copy(data, h.len, &h2) == MG_PROXY_OK && h2.len == h.len);
        CHECK(h2.has_addr == h.has_addr);
        for (size_t i = 0; i < h.len; i++)
            CHECK(parse_copy(data, i, &h2) == MG_PROXY_MORE);
    } else if (v == MG_PROXY_MORE) {
        CHECK(size < MG_PROXY_V2_MAX);
        for (size_t i = 0; i < size; i++)
            CHECK(parse_copy(data, i, &h2) == MG_PROXY_MORE);
    } else {
        CHECK(v == MG_PROXY_INVALID);
        /* the shortest invalid prefix: everything longer stays invalid */
        size_t first = size;
        for (size_t i = 0; i <= size; i++) {
            enum mg_proxy_verdict w = parse_copy(data, i, &h2);
            CHECK(w != MG_PROXY_OK);
            if (w == MG_PROXY_INVALID && first == size)
                first = i;
            if (i > first)
                CHECK(w == MG_PROXY_INVALID);
        }
    }
    return 0;
}
