/*
 * TLS contexts (OpenSSL 3, libssl) built from the config on the main thread
 * (they read certificate and key files), shared read-only by every worker of
 * the snapshot that owns them, freed with it.
 *
 * Server contexts: several certificates chosen by SNI against each one's SAN
 * names (wildcards included; the first is the default), RSA and ECDSA, the
 * configured protocol versions (TLS 1.2 and 1.3 by default), Mozilla
 * "intermediate" ciphers by default, ALPN "http/1.1", session resumption
 * (tickets with process-wide keys rotated every 12 h, two kept; a server
 * session cache bounded in bytes), optional client certificates (mTLS).
 * Client contexts (upstream TLS): verification against the system store or a
 * CA file, an optional client certificate.
 */
#ifndef MG_TLS_CONTEXT_H
#define MG_TLS_CONTEXT_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "config/config-t.h"

/* Builds a server context. NULL on failure, with err holding the reason
 * (which file, and OpenSSL's words: "api.crt: no such file", "key does not
 * match the certificate", ...), without the file:line:col (the caller adds it). */
struct mg_tls_ctx *mg_tls_server_new(const struct mg_tls_conf *c, char *err, size_t errlen);
/* Builds a client context for an upstream. NULL on failure, as above. */
struct mg_tls_ctx *mg_tls_client_new(const struct mg_upstream_tls_conf *c, char *err,
                                     size_t errlen);
/* NULL is ignored. Connections made from it keep their own reference. */
void mg_tls_ctx_free(struct mg_tls_ctx *t);
/* The OpenSSL context (SSL_new on a worker thread is safe). */
SSL_CTX *mg_tls_ssl_ctx(const struct mg_tls_ctx *t);
/* The handshake timeout of a server context (its listener's). */
uint64_t mg_tls_handshake_timeout_ms(const struct mg_tls_ctx *t);

/* The name an upstream target is reached by over TLS (SNI, and checked against
 * its certificate): the configured `sni`, else the host of its address when
 * that is a name rather than an IP literal. malloc'd, or NULL for none. Shared
 * by the pool's connections and the active health checks, so both present
 * the same name. */
char *mg_tls_upstream_name(const struct mg_upstream_tls_conf *tc, const struct mg_address *a);

/* Process-wide session-ticket keys: made at start, rotated by the main thread
 * every 12 h (the previous key still decrypts). Thread-safe. */
void mg_tls_tickets_init(void);
void mg_tls_tickets_rotate(void);
void mg_tls_tickets_free(void);

#endif
