/*
 * Chunk framing checks (see chunk.h). State is two small fields so it survives
 * any split of the body across reads.
 */
#include "http/chunk.h"

bool mg_chunk_crlf_ok(struct mg_chunk_check *k, const char *p, const char *end)
{
    for (; k->crlf && p < end; p++, k->crlf--)
        if (*p != (k->crlf == 2 ? '\r' : '\n'))
            return false;
    return true;
}

bool mg_chunk_data(struct mg_chunk_check *k, const char *at, size_t len, const char *end)
{
    k->left -= len < k->left ? len : k->left;
    if (k->left)
        return true;
    k->crlf = 2;
    return mg_chunk_crlf_ok(k, at + len, end);
}
