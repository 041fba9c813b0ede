/*
 * TLS contexts: config -> SSL_CTX (OpenSSL 3.0), built on the main thread at
 * load, then only read (SSL_new) by the workers.
 *
 * A server context is one SSL_CTX per certificate, all configured alike. SNI
 * picks one in the servername callback with SSL_set_SSL_CTX, as nginx does:
 * no per-handshake key loading (SSL_use_cert_and_key), and any number of RSA
 * and ECDSA certificates (one SSL_CTX holds one per key type). Resumption
 * stays on the SSL's first context (session_ctx): the default's cache and
 * tickets serve every name. Verification, the client CA list and ALPN are
 * read from the switched-to context, hence "configured alike".
 *
 * Ownership: struct mg_tls_ctx holds one reference on the default SSL_CTX.
 * The SNI table (the other SSL_CTXs and their SAN names) hangs off the default
 * SSL_CTX as ex_data and is freed with it, so a connection that outlives its
 * config snapshot (its SSL holds the default SSL_CTX as session_ctx) still has
 * a valid table. Session-ticket keys are process-wide (below).
 */
#include "tls/context.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/log.h"

/* Mozilla "intermediate" (v5) TLS 1.2 suites, in their order. The DHE-RSA
 * suites are left out: every client that lacks ECDHE is long gone, and DHE
 * costs more CPU per handshake. TLS 1.3 suites stay at OpenSSL's defaults. */
#define INTERMEDIATE_CIPHERS                                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Bytes per cached server session, to turn `session_cache` into OpenSSL's
 * count (10m -> 8192 sessions). Measured with OpenSSL 3.0 (heap growth per
 * cached session over 2000 handshakes): ~1.1 KB (the SSL_SESSION, its ids,
 * SNI, ALPN, the hash and list links); ~6.2 KB with mTLS, the session then
 * keeping the client's parsed certificate (an ECDSA P-256 one; RSA ones are
 * larger). TLS 1.3 without tickets caches one session per ticket sent (two
 * per connection, OpenSSL's default). */
#define SESSION_BYTES      1280
#define SESSION_BYTES_MTLS 6656

#define MODES                                                                                      \
    (SSL_MODE_RELEASE_BUFFERS /* idle keep-alive conns hold no 34 KiB buffers */                   \
     | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER /* queued writes */)

static const unsigned char ALPN_H1[] = "\x08http/1.1";

struct mg_tls_ctx {
    SSL_CTX *ssl;                  /* the default context; SSL_new uses it */
    uint64_t handshake_timeout_ms; /* 0 for client contexts */
};

struct site {
    SSL_CTX *ctx; /* sites[0] is the default (owner of the table, not referenced) */
    char **names; /* the leaf's SAN DNS names, lowercased; "*.x" is a wildcard */
    size_t nnames;
};

struct sni_table {
    size_t n;
    struct site sites[];
};

/* "WHAT: reason", the reason being OpenSSL's for the first error queued (the
 * root cause; later entries are the callers' wrappers). Clears the queue. */
static int ssl_fail(char *err, size_t errlen, const char *what)
{
    /* "error:80000002:system library::No such file or directory": the reason
     * is the fifth field (ERR_reason_error_string has none for system errors) */
    char full[256] = "error:0:::failed", *p = full;
    if (ERR_peek_error())
        ERR_error_string_n(ERR_peek_error(), full, sizeof full);
    for (int i = 0; i < 4 && strchr(p, ':'); i++)
        p = strchr(p, ':') + 1;
    /* "No such file or directory" -> "no such ...", as OpenSSL's own reasons read */
    if (isupper((unsigned char)p[0]) && islower((unsigned char)p[1]))
        p[0] = (char)tolower((unsigned char)p[0]);
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, p);
    return -1;
}

/* Every worker and every context shares them, so a ticket from one worker (or
 * from before a reload) resumes on any other. The current key encrypts; the
 * previous one still decrypts and the ticket is then renewed under the
 * current one. A mutex guards a 80-byte copy per handshake: cheap next to
 * the handshake itself, and simpler to prove than a seqlock. */
struct ticket_key {
    unsigned char name[16], hmac[32], aes[32];
};

static struct {
    pthread_mutex_t mu;
    struct ticket_key cur, prev;
    bool have_cur, have_prev;
} keys = {.mu = PTHREAD_MUTEX_INITIALIZER};

void mg_tls_tickets_init(void)
{
    pthread_mutex_lock(&keys.mu);
    if (!keys.have_cur)
        keys.have_cur = RAND_bytes((unsigned char *)&keys.cur, sizeof keys.cur) == 1;
    pthread_mutex_unlock(&keys.mu);
}

void mg_tls_tickets_rotate(void)
{
    struct ticket_key k;
    if (RAND_bytes((unsigned char *)&k, sizeof k) != 1)
        return; /* keep the current key rather than issue none */
    pthread_mutex_lock(&keys.mu);
    keys.prev = keys.cur;
    keys.have_prev = keys.have_cur;
    keys.cur = k;
    keys.have_cur = true;
    pthread_mutex_unlock(&keys.mu);
    OPENSSL_cleanse(&k, sizeof k);
}

void mg_tls_tickets_free(void)
{
    pthread_mutex_lock(&keys.mu);
    OPENSSL_cleanse(&keys.cur, sizeof keys.cur);
    OPENSSL_cleanse(&keys.prev, sizeof keys.prev);
    keys.have_cur = keys.have_prev = false;
    pthread_mutex_unlock(&keys.mu);
}

/* SSL_CTX_set_tlsext_ticket_key_evp_cb: 1 = use these keys, 2 = decrypted
 * with the previous key (issue a fresh ticket), 0 = no such key (full
 * handshake) or no ticket, -1 = error. */
static int on_ticket_key(SSL *s, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key k = {0};
    int rc = 0;
    pthread_mutex_lock(&keys.mu);
    if (keys.have_cur && (enc || memcmp(name, keys.cur.name, 16) == 0)) {
        k = keys.cur;
        rc = 1;
    } else if (!enc && keys.have_prev && memcmp(name, keys.prev.name, 16) == 0) {
        k = keys.prev;
        rc = 2;
    }
    pthread_mutex_unlock(&keys.mu);
    if (rc == 0)
        return 0;
    if (enc) {
        if (RAND_bytes(iv, 16) != 1) /* AES-CBC's IV; EVP_MAX_IV_LENGTH is 16 */
            rc = -1;
        memcpy(name, k.name, 16);
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (rc > 0 && (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
                   EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv, enc) != 1))
        rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

static void table_free(struct sni_table *tb, size_t from)
{
    if (!tb)
        return;
    for (size_t i = 0; i < tb->n; i++) {
        for (size_t j = 0; j < tb->sites[i].nnames; j++)
            free(tb->sites[i].names[j]);
        free(tb->sites[i].names);
        if (i >= from)
            SSL_CTX_free(tb->sites[i].ctx);
    }
    free(tb);
}

/* ex_data free callback: the default SSL_CTX is going away, take the rest. */
static void on_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    table_free(ptr, 1);
}

static int table_index = -1;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void make_table_index(void)
{
    table_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, on_table_free);
}

/* Copies the leaf's subjectAltName DNS names, lowercased. The subject CN is
 * not consulted, as browsers no longer do. */
static void site_names(struct site *st)
{
    X509 *leaf = SSL_CTX_get0_certificate(st->ctx);
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int n = sk_GENERAL_NAME_num(gens);
    if (n > 0 && !(st->names = calloc((size_t)n, sizeof *st->names)))
        mg_fatal("out of memory");
    for (int i = 0; i < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len <= 0 || len > 253 || memchr(p, '\0', (size_t)len))
            continue; /* not a host name; never matches */
        char *s = strndup((const char *)p, (size_t)len);
        if (!s)
            mg_fatal("out of memory");
        for (char *q = s; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        st->names[st->nnames++] = s;
    }
    GENERAL_NAMES_free(gens);
}

/* An exact name anywhere beats a wildcard anywhere (as nginx's server_name
 * does); "*.example.org" matches exactly one non-empty leading label. */
static SSL_CTX *table_find(const struct sni_table *tb, const char *host)
{
    const char *dot = strchr(host, '.');
    SSL_CTX *wild = NULL;
    for (size_t i = 0; i < tb->n; i++)
        for (size_t j = 0; j < tb->sites[i].nnames; j++) {
            const char *nm = tb->sites[i].names[j];
            if (strcmp(nm, host) == 0)
                return tb->sites[i].ctx;
            if (!wild && dot && dot != host && nm[0] == '*' && strcmp(nm + 1, dot) == 0)
                wild = tb->sites[i].ctx;
        }
    return wild;
}

static int on_servername(SSL *s, int *alert, void *arg)
{
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    char host[256];
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof host)
        return SSL_TLSEXT_ERR_OK; /* no (usable) SNI: the default certificate */
    for (size_t i = 0; i < n; i++)
        host[i] = (char)tolower((unsigned char)name[i]);
    if (host[n - 1] == '.') /* "api.example.org." is the same host */
        n--;
    host[n] = '\0';
    SSL_CTX *pick = table_find(arg, host);
    if (pick && pick != SSL_get_SSL_CTX(s) && !SSL_set_SSL_CTX(s, pick)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ALPN: h2 first where the listener serves it (`arg` non-NULL), else
 * http/1.1, else http/1.0, when offered. A client offering none of them gets
 * no_application_protocol, as RFC 7301 section 3.2 asks, rather than a
 * connection speaking a protocol it did not ask for. */
static int on_alpn(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const unsigned char *pick = NULL;
    unsigned char len = 0;
    int rank = 0; /* 3 h2, 2 http/1.1, 1 http/1.0 */
    for (unsigned int i = 0; i < inlen && i + 1u + in[i] <= inlen; i += 1u + in[i]) {
        int r = 0;
        if (arg && in[i] == 2 && memcmp(in + i + 1, "h2", 2) == 0)
            r = 3;
        else if (in[i] == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0)
            r = 2;
        else if (in[i] == 8 && memcmp(in + i + 1, "http/1.0", 8) == 0)
            r = 1;
        if (r > rank) {
            rank = r;
            pick = in + i + 1;
            len = in[i];
        }
    }
    if (!pick)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = pick;
    *outlen = len;
    return SSL_TLSEXT_ERR_OK;
}

/* Encrypted keys are refused rather than prompting on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* Certificate chain (leaf first) and its key, checked against each other. */
static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return ssl_fail(err, errlen, cert);
    BIO *b = BIO_new_file(key, "r");
    EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!pk)
        return ssl_fail(err, errlen, key);
    int rc = X509_check_private_key(SSL_CTX_get0_certificate(ctx), pk) == 1 ? 0 : -1;
    if (rc) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: key does not match certificate %s", key, cert);
    } else if (SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
        rc = ssl_fail(err, errlen, key);
    }
    EVP_PKEY_free(pk);
    return rc;
}

/* Everything but the certificate, identical on every site (see the top). */
static int server_setup(SSL_CTX *ctx, const struct mg_tls_conf *c, char *err, size_t errlen)
{
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE |
                    SSL_OP_PRIORITIZE_CHACHA; /* clients without AES hardware put ChaCha first */
    if (!c->session_tickets)
        opts |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_set_mode(ctx, MODES);
    int lo = c->protocols & MG_TLS_V12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    int hi = c->protocols & MG_TLS_V13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (!SSL_CTX_set_min_proto_version(ctx, lo) || !SSL_CTX_set_max_proto_version(ctx, hi))
        return ssl_fail(err, errlen, "protocols");
    /* Mozilla intermediate's groups. OpenSSL's defaults also take the finite
     * field groups up to ffdhe8192: a client offering only that one costs a
     * worker about 138 ms of CPU per handshake (found by the TLS bench). */
    if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1)
        return ssl_fail(err, errlen, "groups");
    const char *ciphers =
        c->ciphers && strcmp(c->ciphers, "intermediate") != 0 ? c->ciphers : INTERMEDIATE_CIPHERS;
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        char what[300];
        snprintf(what, sizeof what, "ciphers \"%.256s\"", ciphers);
        return ssl_fail(err, errlen, what);
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, c->http2 ? (void *)"h2" : NULL);

    if (c->session_cache) {
        uint64_t per = c->client_ca ? SESSION_BYTES_MTLS : SESSION_BYTES;
        uint64_t n = c->session_cache / per;
        /* 0 would mean "unbounded" to OpenSSL; a full cache drops its oldest */
        SSL_CTX_sess_set_cache_size(ctx, n == 0 ? 1 : n > LONG_MAX ? LONG_MAX : (long)n);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (!c->session_tickets) /* else TLS 1.3 would still send useless tickets */
            SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (c->session_tickets)
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);

    if (c->client_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->client_ca);
        if (!names || SSL_CTX_load_verify_file(ctx, c->client_ca) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return ssl_fail(err, errlen, c->client_ca); /* an empty file: "no start line" */
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return 0;
}

/* The session id context: sessions and tickets resume only where they were
 * made. It hashes the certificates and the client CA names (as nginx does),
 * so a ticket from a listener without mTLS never resumes on one with it, yet
 * the same listener config keeps resuming across reloads (the ticket keys
 * are process-wide). */
static int session_context(struct sni_table *tb, char *err, size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE], fp[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, fplen = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < tb->n; i++)
        ok = X509_digest(SSL_CTX_get0_certificate(tb->sites[i].ctx), EVP_sha256(), fp, &fplen) &&
             EVP_DigestUpdate(h, fp, fplen);
    STACK_OF(X509_NAME) *cas = SSL_CTX_get_client_CA_list(tb->sites[0].ctx);
    for (int i = 0; ok && i < sk_X509_NAME_num(cas); i++) {
        unsigned char *der = NULL;
        int len = i2d_X509_NAME(sk_X509_NAME_value(cas, i), &der);
        ok = len > 0 && EVP_DigestUpdate(h, der, (size_t)len);
        OPENSSL_free(der);
    }
    ok = ok && EVP_DigestFinal_ex(h, md, &mdlen); /* 32 bytes = SSL_MAX_SID_CTX_LENGTH */
    EVP_MD_CTX_free(h);
    for (size_t i = 0; ok && i < tb->n; i++)
        ok = SSL_CTX_set_session_id_context(tb->sites[i].ctx, md, mdlen);
    return ok ? 0 : ssl_fail(err, errlen, "session id context");
}

struct mg_tls_ctx *mg_tls_server_new(const struct mg_tls_conf *c, char *err, size_t errlen)
{
    pthread_once(&table_once, make_table_index);
    if (c->ncerts == 0 || !(c->protocols & (MG_TLS_V12 | MG_TLS_V13)) || table_index < 0) {
        snprintf(err, errlen, "%s",
                 !c->ncerts         ? "no certificate"
                 : table_index >= 0 ? "no protocol (TLSv1.2, TLSv1.3)"
                                    : "cannot register TLS context data");
        return NULL;
    }
    mg_tls_tickets_init(); /* idempotent: the main thread normally did it */
    struct mg_tls_ctx *t = calloc(1, sizeof *t);
    struct sni_table *tb = calloc(1, sizeof *tb + c->ncerts * sizeof tb->sites[0]);
    if (!t || !tb)
        mg_fatal("out of memory");
    for (size_t i = 0; i < c->ncerts; i++) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx) {
            ssl_fail(err, errlen, "SSL_CTX_new");
            goto fail;
        }
        tb->sites[tb->n++].ctx = ctx;
        if (server_setup(ctx, c, err, errlen) ||
            load_pair(ctx, c->certs[i].cert, c->certs[i].key, err, errlen))
            goto fail;
        site_names(&tb->sites[i]);
    }
    if (session_context(tb, err, errlen))
        goto fail;
    t->ssl = tb->sites[0].ctx;
    if (!SSL_CTX_set_ex_data(t->ssl, table_index, tb)) {
        ssl_fail(err, errlen, "SSL_CTX_set_ex_data");
        goto fail;
    }
    /* from here the default SSL_CTX owns the table (on_table_free) */
    SSL_CTX_set_tlsext_servername_callback(t->ssl, on_servername);
    SSL_CTX_set_tlsext_servername_arg(t->ssl, tb);
    t->handshake_timeout_ms = c->handshake_timeout_ms;
    return t;
fail:
    table_free(tb, 0);
    free(t);
    return NULL;
}

struct mg_tls_ctx *mg_tls_client_new(const struct mg_upstream_tls_conf *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_fail(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, MODES);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_set_alpn_protos(ctx, ALPN_H1, sizeof ALPN_H1 - 1) != 0) { /* 0 = success */
        ssl_fail(err, errlen, "client context");
        goto fail;
    }
    if (c->verify) {
        /* the host name is checked per connection (SSL_set1_host by the transport) */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        bool sys = !c->ca || strcmp(c->ca, "system") == 0;
        int ok = sys ? SSL_CTX_set_default_verify_paths(ctx) : SSL_CTX_load_verify_file(ctx, c->ca);
        if (ok != 1) {
            ssl_fail(err, errlen, sys ? "system CA store" : c->ca);
            goto fail;
        }
    }
    if (c->cert && load_pair(ctx, c->cert, c->key ? c->key : c->cert, err, errlen))
        goto fail;
    /* OpenSSL never looks client sessions up by itself: the pool keeps one per
     * target (SSL_get1_session / SSL_set_session). NO_INTERNAL_STORE stops the
     * internal cache from filling with sessions nobody reads. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    struct mg_tls_ctx *t = calloc(1, sizeof *t);
    if (!t)
        mg_fatal("out of memory");
    t->ssl = ctx;
    return t;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void mg_tls_ctx_free(struct mg_tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ssl); /* connections hold their own references */
    free(t);
}

SSL_CTX *mg_tls_ssl_ctx(const struct mg_tls_ctx *t)
{
    return t->ssl;
}

uint64_t mg_tls_handshake_timeout_ms(const struct mg_tls_ctx *t)
{
    return t->handshake_timeout_ms;
}

char *mg_tls_upstream_name(const struct mg_upstream_tls_conf *tc, const struct mg_address *a)
{
    if (tc->sni)
        return strdup(tc->sni);
    const char *text = a->text, *colon = strrchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : strlen(text);
    char host[256];
    if (len == 0 || len >= sizeof host || text[0] == '[')
        return NULL;
    memcpy(host, text, len);
    host[len] = '\0';
    unsigned char probe[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, probe) == 1)
        return NULL;
    return strdup(host);
}
