/*
 * Types of the idempotency fingerprint (fingerprint.h): an incremental SHA-256
 * the proxy embeds in its exchange and feeds while the request body streams in.
 */
#ifndef MG_IDEM_FINGERPRINT_T_H
#define MG_IDEM_FINGERPRINT_T_H

#include <stddef.h>
#include <stdint.h>

#define MG_IDEM_FP_LEN 32 /* SHA-256 */

/* A borrowed byte string; {NULL, 0} stands for an absent value. */
struct mg_idem_slice {
    const char *p;
    size_t len;
};

struct evp_md_ctx_st; /* OpenSSL's EVP_MD_CTX, kept out of this header */

struct mg_idem_fp {
    struct evp_md_ctx_st *md; /* owned; NULL before init and after final/dispose */
    uint64_t body_len;        /* body bytes fed so far, hashed last as a suffix */
};

#endif
