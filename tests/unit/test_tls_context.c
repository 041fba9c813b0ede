/* tests for gateway/tls/context.c: contexts build from the config, errors name
 * the file and OpenSSL's reason, SNI picks the certificate (exact, wildcard,
 * default), ALPN, protocol bounds, session resumption by tickets (across
 * contexts, across a key rotation) and by the server cache, mTLS, and client
 * verification. Keys and certificates are made at test time with the openssl
 * CLI in a temporary directory (none are committed); handshakes run in memory
 * over BIO pairs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/context.h"

static char dir[64];
static char paths[16][160]; /* see F() */

/* The files, made by make_files(). */
enum {
    CA,
    INT_PEM,
    RSA_CRT,
    RSA_KEY,
    ECW_CRT,
    ECW_KEY,
    API_PEM,
    API_KEY,
    CLI_CRT,
    CLI_KEY,
    ROGUE_CRT,
    ROGUE_KEY,
    EXPIRED_CRT,
    MISSING,
    NFILES
};
static const char *names[NFILES] = {
    "ca.crt",  "int.crt",    "rsa.crt",    "rsa.key",   "ecw.crt",   "ecw.key",     "api.pem",
    "api.key", "client.crt", "client.key", "rogue.crt", "rogue.key", "expired.crt", "missing.crt"};
#define F(i) paths[i]

/* CA -> {rsa (default.example.com), ecw (EC P-256: *.example.org, example.net),
 * client (EC, clientAuth)}; CA -> intermediate -> api (api.example.org, served
 * with the intermediate); rogue: a self-signed client certificate. */
static const char *SCRIPT =
    "set -e; cd %s\n"
    "cat > c.cnf <<'X'\n"
    "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
    "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
    "[rsa]\nsubjectAltName = DNS:default.example.com\n"
    "[ecw]\nsubjectAltName = DNS:*.example.org,DNS:example.net\n"
    "[api]\nsubjectAltName = DNS:api.example.org\n"
    "[client]\nextendedKeyUsage = clientAuth\n"
    "X\n"
    "R=rsa:2048; E='ec -pkeyopt ec_paramgen_curve:P-256'\n"
    "csr() { openssl req -config c.cnf -new -newkey $2 -nodes -keyout $1.key -out $1.csr "
    "-subj /CN=$1; }\n"
    "sign() { openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -set_serial $3 -days 2 "
    "-extfile c.cnf -extensions $4 -out $1.crt; }\n"
    "openssl req -config c.cnf -x509 -newkey $R -nodes -keyout ca.key -out ca.crt -subj /CN=root "
    "-days 2 -extensions ca\n"
    "csr int $R; sign int ca 2 ca\n"
    "csr rsa $R; sign rsa ca 3 rsa\n"
    "csr ecw \"$E\"; sign ecw ca 4 ecw\n"
    "csr api $R; sign api int 5 api; cat api.crt int.crt > api.pem\n"
    "csr client \"$E\"; sign client ca 6 client\n"
    "openssl req -config c.cnf -x509 -newkey $E -nodes -keyout rogue.key -out rogue.crt "
    "-subj /CN=rogue -days 2 -extensions client\n";

static EVP_PKEY *read_key(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    assert_non_null(b);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(k);
    return k;
}

/* The CLI cannot back-date (x509 -days must be positive): sign it here. */
static void make_expired(void)
{
    char p[200];
    snprintf(p, sizeof p, "%s/ca.key", dir);
    EVP_PKEY *cakey = read_key(p), *key = read_key(F(RSA_KEY));
    BIO *b = BIO_new_file(F(CA), "r");
    X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"expired", -1, -1, 0);
    assert_true(ca && x && X509_set_version(x, X509_VERSION_3) &&
                ASN1_INTEGER_set(X509_get_serialNumber(x), 7) &&
                X509_set_issuer_name(x, X509_get_subject_name(ca)) && X509_set_subject_name(x, n) &&
                X509_gmtime_adj(X509_getm_notBefore(x), -2 * 86400) &&
                X509_gmtime_adj(X509_getm_notAfter(x), -86400) && X509_set_pubkey(x, key) &&
                X509_sign(x, cakey, EVP_sha256()));
    b = BIO_new_file(F(EXPIRED_CRT), "w");
    assert_true(b && PEM_write_bio_X509(b, x));
    BIO_free(b);
    X509_NAME_free(n);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(cakey);
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/mg-tls-test-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    for (int i = 0; i < NFILES; i++)
        snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SCRIPT, dir);
    FILE *sh = popen("sh >/dev/null 2>&1", "w");
    if (!sh)
        return -1;
    fputs(cmd, sh);
    if (pclose(sh) != 0)
        return -1;
    make_expired();
    mg_tls_tickets_init();
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    mg_tls_tickets_free();
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static struct mg_tls_cert_conf sites[3]; /* rsa (default), ecw, api */

static struct mg_tls_conf server_conf(void)
{
    sites[0] = (struct mg_tls_cert_conf){F(RSA_CRT), F(RSA_KEY)};
    sites[1] = (struct mg_tls_cert_conf){F(ECW_CRT), F(ECW_KEY)};
    sites[2] = (struct mg_tls_cert_conf){F(API_PEM), F(API_KEY)};
    return (struct mg_tls_conf){.certs = sites,
                                .ncerts = 3,
                                .protocols = MG_TLS_V12 | MG_TLS_V13,
                                .ciphers = "intermediate",
                                .session_tickets = true,
                                .session_cache = 10 << 20,
                                .handshake_timeout_ms = 10000};
}

static struct mg_tls_ctx *server(const struct mg_tls_conf *c)
{
    char err[512] = "";
    struct mg_tls_ctx *t = mg_tls_server_new(c, err, sizeof err);
    if (!t)
        fail_msg("mg_tls_server_new: %s", err);
    return t;
}

static struct mg_tls_ctx *client(bool verify, char *ca, char *cert, char *key)
{
    struct mg_upstream_tls_conf c = {
        .enabled = true, .verify = verify, .ca = ca, .cert = cert, .key = key};
    char err[512] = "";
    struct mg_tls_ctx *t = mg_tls_client_new(&c, err, sizeof err);
    if (!t)
        fail_msg("mg_tls_client_new: %s", err);
    return t;
}

static void expect_server_error(const struct mg_tls_conf *c, const char *want)
{
    char err[512] = "";
    assert_null(mg_tls_server_new(c, err, sizeof err));
    assert_string_equal(err, want);
    assert_int_equal(ERR_peek_error(), 0); /* the queue is left clean */
}

struct hs {
    SSL *c, *s;
};

static int step(SSL *s, bool *done)
{
    int r = SSL_do_handshake(s);
    if (r == 1) {
        *done = true;
        return 0;
    }
    int e = SSL_get_error(s, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Runs a handshake in memory; 0 when both sides finished. The client then
 * reads one byte, so it also takes in TLS 1.3 session tickets. */
static int handshake(struct hs *h, SSL_CTX *cctx, const struct mg_tls_ctx *st, const char *sni,
                     SSL_SESSION *resume)
{
    BIO *cb, *sb;
    ERR_clear_error();
    h->c = SSL_new(cctx);
    h->s = SSL_new(mg_tls_ssl_ctx(st));
    assert_true(h->c && h->s && BIO_new_bio_pair(&cb, 0, &sb, 0));
    SSL_set_bio(h->c, cb, cb);
    SSL_set_bio(h->s, sb, sb);
    SSL_set_connect_state(h->c);
    SSL_set_accept_state(h->s);
    if (sni)
        assert_int_equal(SSL_set_tlsext_host_name(h->c, sni), 1);
    if (resume)
        assert_int_equal(SSL_set_session(h->c, resume), 1);
    bool cdone = false, sdone = false;
    for (int i = 0; i < 50 && !(cdone && sdone); i++)
        if ((!cdone && step(h->c, &cdone)) || (!sdone && step(h->s, &sdone)))
            return -1;
    if (!cdone || !sdone)
        return -1;
    char b;
    assert_int_equal(SSL_write(h->s, "x", 1), 1);
    assert_int_equal(SSL_read(h->c, &b, 1), 1);
    return 0;
}

/* Closes cleanly first: OpenSSL drops the session of a connection freed
 * without a close_notify sent, so it could not be resumed. */
static void hs_free(struct hs *h)
{
    if (SSL_is_init_finished(h->c) && SSL_is_init_finished(h->s)) {
        SSL_shutdown(h->c);
        SSL_shutdown(h->s);
    }
    SSL_free(h->c);
    SSL_free(h->s);
}

static const char *cn(X509 *x)
{
    static char buf[64];
    assert_non_null(x);
    assert_true(
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf) > 0);
    return buf;
}

/* The certificate a client offering `sni` gets. */
static void expect_cert(SSL_CTX *cctx, const struct mg_tls_ctx *st, const char *sni,
                        const char *want)
{
    struct hs h;
    assert_int_equal(handshake(&h, cctx, st, sni, NULL), 0);
    assert_string_equal(cn(SSL_get0_peer_certificate(h.c)), want);
    hs_free(&h);
}

/* ---- tests ---- */

static void contexts_build(void **state)
{
    struct mg_tls_conf c = server_conf();
    c.client_ca = F(CA);
    struct mg_tls_ctx *s = server(&c);
    assert_non_null(mg_tls_ssl_ctx(s));
    assert_int_equal(mg_tls_handshake_timeout_ms(s), 10000);
    struct mg_tls_ctx *sys = client(true, "system", NULL, NULL);
    struct mg_tls_ctx *cert = client(true, F(CA), F(CLI_CRT), F(CLI_KEY));
    assert_int_equal(mg_tls_handshake_timeout_ms(cert), 0);
    mg_tls_ctx_free(s);
    mg_tls_ctx_free(sys);
    mg_tls_ctx_free(cert);
    mg_tls_ctx_free(NULL);
}

static void errors_name_the_file_and_reason(void **state)
{
    char want[512];
    struct mg_tls_conf c = server_conf();
    c.ncerts = 1;
    sites[0].key = F(API_KEY); /* another RSA key */
    snprintf(want, sizeof want, "%s: key does not match certificate %s", F(API_KEY), F(RSA_CRT));
    expect_server_error(&c, want);
    sites[0].key = F(ECW_KEY); /* an ECDSA key for an RSA certificate */
    snprintf(want, sizeof want, "%s: key does not match certificate %s", F(ECW_KEY), F(RSA_CRT));
    expect_server_error(&c, want);

    c = server_conf();
    sites[1].cert = F(MISSING); /* not only the first one is checked */
    snprintf(want, sizeof want, "%s: no such file or directory", F(MISSING));
    expect_server_error(&c, want);
    c = server_conf();
    sites[2].key = F(MISSING);
    expect_server_error(&c, want);
    c = server_conf();
    c.client_ca = F(MISSING);
    expect_server_error(&c, want);
    c = server_conf();
    sites[0].cert = F(RSA_KEY); /* not a certificate */
    snprintf(want, sizeof want, "%s: no start line", F(RSA_KEY));
    expect_server_error(&c, want);

    c = server_conf();
    c.ciphers = "NOPE";
    expect_server_error(&c, "ciphers \"NOPE\": no cipher match");
    c.ciphers = "ECDHE-RSA-AES128-GCM-SHA256"; /* any OpenSSL cipher string is taken */
    mg_tls_ctx_free(server(&c));
    c = server_conf();
    c.protocols = 0;
    expect_server_error(&c, "no protocol (TLSv1.2, TLSv1.3)");

    struct mg_upstream_tls_conf u = {.enabled = true, .verify = true, .ca = F(MISSING)};
    char err[512];
    assert_null(mg_tls_client_new(&u, err, sizeof err));
    snprintf(want, sizeof want, "%s: no such file or directory", F(MISSING));
    assert_string_equal(err, want);
    u = (struct mg_upstream_tls_conf){.ca = "system", .cert = F(CLI_CRT), .key = F(ROGUE_KEY)};
    assert_null(mg_tls_client_new(&u, err, sizeof err));
    snprintf(want, sizeof want, "%s: key does not match certificate %s", F(ROGUE_KEY), F(CLI_CRT));
    assert_string_equal(err, want);
}

static void sni_picks_the_certificate(void **state)
{
    struct mg_tls_conf c = server_conf();
    struct mg_tls_ctx *s = server(&c);
    SSL_CTX *cl = SSL_CTX_new(TLS_client_method()); /* verify none: names only */
    expect_cert(cl, s, NULL, "rsa");                /* no SNI: the first is the default */
    expect_cert(cl, s, "default.example.com", "rsa");
    expect_cert(cl, s, "api.example.org", "api"); /* exact beats the earlier wildcard */
    expect_cert(cl, s, "API.Example.ORG.", "api");
    expect_cert(cl, s, "www.example.org", "ecw"); /* wildcard, ECDSA */
    expect_cert(cl, s, "example.net", "ecw");
    expect_cert(cl, s, "a.b.example.org", "rsa"); /* a wildcard is one label */
    expect_cert(cl, s, "example.org", "rsa");
    expect_cert(cl, s, "unknown.test", "rsa");
    SSL_CTX_free(cl);
    mg_tls_ctx_free(s);
}

static void chain_and_expiry_are_verified_by_clients(void **state)
{
    struct mg_tls_conf c = server_conf();
    struct mg_tls_ctx *s = server(&c);
    struct mg_tls_ctx *v = client(true, F(CA), NULL, NULL);
    struct hs h;
    /* api is signed by the intermediate: verifies only if the chain is sent */
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(v), s, "api.example.org", NULL), 0);
    assert_int_equal(SSL_get_verify_result(h.c), X509_V_OK);
    hs_free(&h);
    mg_tls_ctx_free(s);

    struct mg_tls_cert_conf expired = {F(EXPIRED_CRT), F(RSA_KEY)};
    c.certs = &expired; /* loads: expiry is the client's business */
    c.ncerts = 1;
    s = server(&c);
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(v), s, NULL, NULL), -1);
    assert_int_equal(SSL_get_verify_result(h.c), X509_V_ERR_CERT_HAS_EXPIRED);
    hs_free(&h);
    struct mg_tls_ctx *nv = client(false, NULL, NULL, NULL);
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(nv), s, NULL, NULL), 0);
    hs_free(&h);
    ERR_clear_error();
    mg_tls_ctx_free(nv);
    mg_tls_ctx_free(v);
    mg_tls_ctx_free(s);
}

static void alpn_and_protocols(void **state)
{
    struct mg_tls_conf c = server_conf();
    struct mg_tls_ctx *s = server(&c);
    struct mg_tls_ctx *cl = client(false, NULL, NULL, NULL);
    struct hs h;
    const unsigned char *p;
    unsigned int n;
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(cl), s, NULL, NULL), 0);
    SSL_get0_alpn_selected(h.c, &p, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "http/1.1", 8);
    assert_int_equal(SSL_version(h.c), TLS1_3_VERSION);
    hs_free(&h);

    SSL_CTX *plain = SSL_CTX_new(TLS_client_method());
    assert_int_equal(handshake(&h, plain, s, NULL, NULL), 0); /* no ALPN at all is fine */
    SSL_get0_alpn_selected(h.c, &p, &n);
    assert_int_equal(n, 0);
    hs_free(&h);
    SSL_CTX_set_alpn_protos(plain, (const unsigned char *)"\x02h2", 3);
    assert_int_equal(handshake(&h, plain, s, NULL, NULL), -1); /* h2 only: refused */
    hs_free(&h);
    ERR_clear_error();
    SSL_CTX_free(plain);
    mg_tls_ctx_free(s);

    c.protocols = MG_TLS_V13;
    s = server(&c);
    SSL_CTX_set_max_proto_version(mg_tls_ssl_ctx(cl), TLS1_2_VERSION);
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(cl), s, NULL, NULL), -1);
    hs_free(&h);
    ERR_clear_error();
    mg_tls_ctx_free(s);
    c.protocols = MG_TLS_V12;
    s = server(&c);
    SSL_CTX_set_max_proto_version(mg_tls_ssl_ctx(cl), 0);
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(cl), s, NULL, NULL), 0);
    assert_int_equal(SSL_version(h.c), TLS1_2_VERSION);
    hs_free(&h);
    mg_tls_ctx_free(s);
    mg_tls_ctx_free(cl);
}

/* A full handshake on `a`, then an attempt to resume it on `b`; returns
 * whether it resumed. Stores the first session in *first when asked. */
static bool resumes(SSL_CTX *cl, const struct mg_tls_ctx *a, const struct mg_tls_ctx *b,
                    SSL_SESSION *with)
{
    struct hs h;
    SSL_SESSION *sess = with;
    if (!sess) {
        assert_int_equal(handshake(&h, cl, a, NULL, NULL), 0);
        assert_int_equal(SSL_session_reused(h.c), 0);
        sess = SSL_get1_session(h.c);
        hs_free(&h);
    }
    assert_int_equal(handshake(&h, cl, b, NULL, sess), 0);
    bool reused = SSL_session_reused(h.c);
    hs_free(&h);
    if (!with)
        SSL_SESSION_free(sess);
    return reused;
}

static void tickets_resume_across_contexts_and_rotation(void **state)
{
    struct mg_tls_conf c = server_conf();
    c.session_cache = 0; /* tickets alone */
    struct mg_tls_ctx *a = server(&c), *b = server(&c);
    struct mg_tls_ctx *cl = client(false, NULL, NULL, NULL);
    SSL_CTX *cctx = mg_tls_ssl_ctx(cl);
    for (int v = TLS1_2_VERSION; v <= TLS1_3_VERSION; v++) {
        SSL_CTX_set_max_proto_version(cctx, v);
        assert_true(resumes(cctx, a, b, NULL));
        /* one rotation: the previous key still decrypts; two: it is gone */
        struct hs h;
        assert_int_equal(handshake(&h, cctx, a, NULL, NULL), 0);
        SSL_SESSION *old = SSL_get1_session(h.c);
        hs_free(&h);
        mg_tls_tickets_rotate();
        assert_true(resumes(cctx, a, b, old));
        mg_tls_tickets_rotate();
        assert_false(resumes(cctx, a, b, old));
        SSL_SESSION_free(old);
    }
    /* another listener config (mTLS) has another session id context */
    c.client_ca = F(CA);
    struct mg_tls_ctx *m = server(&c);
    struct mg_tls_ctx *mc = client(false, NULL, F(CLI_CRT), F(CLI_KEY));
    assert_false(resumes(mg_tls_ssl_ctx(mc), a, m, NULL));
    assert_true(resumes(mg_tls_ssl_ctx(mc), m, m, NULL));
    mg_tls_ctx_free(mc);
    mg_tls_ctx_free(m);
    mg_tls_ctx_free(cl);
    mg_tls_ctx_free(a);
    mg_tls_ctx_free(b);
}

static void session_cache_without_tickets(void **state)
{
    struct mg_tls_conf c = server_conf();
    c.session_tickets = false;
    struct mg_tls_ctx *a = server(&c), *b = server(&c);
    assert_int_equal(SSL_CTX_sess_get_cache_size(mg_tls_ssl_ctx(a)), 8192); /* 10m / 1280 */
    struct mg_tls_ctx *cl = client(false, NULL, NULL, NULL);
    SSL_CTX *cctx = mg_tls_ssl_ctx(cl);
    for (int v = TLS1_2_VERSION; v <= TLS1_3_VERSION; v++) {
        SSL_CTX_set_max_proto_version(cctx, v);
        assert_true(resumes(cctx, a, a, NULL));  /* from a's cache */
        assert_false(resumes(cctx, a, b, NULL)); /* b has its own */
    }
    mg_tls_ctx_free(b);
    c.session_cache = 0; /* neither: never resumes */
    b = server(&c);
    for (int v = TLS1_2_VERSION; v <= TLS1_3_VERSION; v++) {
        SSL_CTX_set_max_proto_version(cctx, v);
        assert_false(resumes(cctx, b, b, NULL));
    }
    c.session_cache = 1; /* below one session: one, never "unbounded" (0) */
    c.client_ca = F(CA);
    struct mg_tls_ctx *one = server(&c);
    assert_int_equal(SSL_CTX_sess_get_cache_size(mg_tls_ssl_ctx(one)), 1);
    mg_tls_ctx_free(one);
    mg_tls_ctx_free(cl);
    mg_tls_ctx_free(a);
    mg_tls_ctx_free(b);
}

static void mtls_requires_a_verified_client_certificate(void **state)
{
    struct mg_tls_conf c = server_conf();
    c.client_ca = F(CA);
    struct mg_tls_ctx *s = server(&c);
    struct mg_tls_ctx *good = client(false, NULL, F(CLI_CRT), F(CLI_KEY));
    struct mg_tls_ctx *none = client(false, NULL, NULL, NULL);
    struct mg_tls_ctx *rogue = client(false, NULL, F(ROGUE_CRT), F(ROGUE_KEY));
    struct hs h;
    for (int v = TLS1_2_VERSION; v <= TLS1_3_VERSION; v++) {
        SSL_CTX_set_max_proto_version(mg_tls_ssl_ctx(none), v);
        assert_int_equal(handshake(&h, mg_tls_ssl_ctx(none), s, NULL, NULL), -1);
        assert_int_equal(ERR_GET_REASON(ERR_peek_error()), SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE);
        hs_free(&h);
        ERR_clear_error();
    }
    assert_int_equal(handshake(&h, mg_tls_ssl_ctx(rogue), s, NULL, NULL), -1);
    assert_int_equal(SSL_get_verify_result(h.s), X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    hs_free(&h);
    ERR_clear_error();
    /* a certificate chosen by SNI verifies clients the same way */
    const char *snis[] = {NULL, "www.example.org", "api.example.org"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(handshake(&h, mg_tls_ssl_ctx(good), s, snis[i], NULL), 0);
        assert_string_equal(cn(SSL_get0_peer_certificate(h.s)), "client");
        hs_free(&h);
        assert_int_equal(handshake(&h, mg_tls_ssl_ctx(none), s, snis[i], NULL), -1);
        hs_free(&h);
        ERR_clear_error();
    }
    mg_tls_ctx_free(rogue);
    mg_tls_ctx_free(none);
    mg_tls_ctx_free(good);
    mg_tls_ctx_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(contexts_build),
        cmocka_unit_test(errors_name_the_file_and_reason),
        cmocka_unit_test(sni_picks_the_certificate),
        cmocka_unit_test(chain_and_expiry_are_verified_by_clients),
        cmocka_unit_test(alpn_and_protocols),
        cmocka_unit_test(tickets_resume_across_contexts_and_rotation),
        cmocka_unit_test(session_cache_without_tickets),
        cmocka_unit_test(mtls_requires_a_verified_client_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
