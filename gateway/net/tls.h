/*
 * TLS as a transport (see transport.h): OpenSSL over a TCP transport, through
 * a BIO of its own over the socket's buffers, on the worker's loop. The
 * connection code above sees the same interface as plain TCP: plaintext reads
 * into its buffer, plaintext writes with try-write first, close.
 *
 * Reads: ciphertext from the socket goes into the SSL object; plaintext comes
 * out into the owner's buffer while the owner reads (what the owner cannot take
 * yet stays inside OpenSSL and is delivered when it reads again). Writes:
 * plaintext is encrypted at once (so pins on the owner's buffers drop at
 * once), the ciphertext is written with try-write, the rest queued; a write
 * request completes when its ciphertext has reached the kernel. Past a bound of
 * queued ciphertext, try-write takes nothing (backpressure).
 *
 * Server streams run the handshake before any plaintext and close after
 * `handshake_timeout_ms` without it; client streams (upstream TLS) report
 * their connect once the handshake is done, so the pool's connect timeout
 * covers both.
 */
#ifndef MG_NET_TLS_H
#define MG_NET_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "net/tcp.h"

struct mg_tls_stream;

/* What a finished handshake found (for logs, plugins, metrics). */
struct mg_tls_info {
    const char *protocol; /* "TLSv1.3" */
    const char *cipher;   /* OpenSSL's name */
    const char *sni;      /* the server name the client asked for, or NULL */
    /* Server streams: the verified client certificate's subject (mTLS, in
     * X509_NAME_oneline form like mg_tls_peer_subject), or NULL. */
    const char *client_subject;
    bool resumed;
};

/* Wraps an accepted TCP connection `tcp` (its callbacks are taken over) in a
 * server TLS stream for `owner`; returns the transport the owner uses, with
 * t->owner == owner (set its on_alloc/on_read/on_closed). The stream is freed
 * after on_closed. Aborts on OOM. */
struct mg_transport *mg_tls_server(struct mg_tcp *tcp, SSL_CTX *ctx, uint64_t handshake_timeout_ms,
                                   void *owner);
/* Hands server stream t ciphertext that was read from its socket before it
 * was made (what followed a PROXY header): it is processed before anything
 * the socket brings next. */
void mg_tls_server_feed(struct mg_transport *t, const char *p, size_t n);
/* Wraps a connecting TCP connection for upstream TLS: `server_name` (may be
 * NULL) is sent as SNI and, when verifying, checked against the certificate;
 * `resume` (may be NULL; not taken over) offers an earlier session.
 * Call mg_tls_client_start once the TCP connect succeeded; `on_ready` then
 * runs once, with 0 after the handshake or a negative UV_E* (the stream is
 * then to be closed). */
struct mg_transport *mg_tls_client(struct mg_tcp *tcp, SSL_CTX *ctx, const char *server_name,
                                   bool verify, SSL_SESSION *resume, void *owner);
/* The session to resume the next connection to the same server with (a new
 * reference, or NULL): pooled upstream connections then skip the full
 * handshake. For TLS 1.3 it exists once a response has been read. */
SSL_SESSION *mg_tls_get1_session(const struct mg_transport *t);
void mg_tls_client_start(struct mg_transport *t,
                         void (*on_ready)(struct mg_transport *t, int status));

/* The stream's handshake result; NULL before it finished, for plain TCP or
 * for t == NULL. Valid while the stream lives. */
const struct mg_tls_info *mg_tls_info(const struct mg_transport *t);
/* Tells the owner how the handshake of server stream t ended, for metrics:
 * `cb` runs at most once, with 0 when it completed (mg_tls_info then says
 * whether it resumed), UV_ETIMEDOUT when handshake_timeout_ms passed, or
 * another negative UV_E* when it failed. A peer that closes without having
 * sent a byte (a TCP probe) and a stream its owner closed first are not
 * reported: no handshake was tried, or the owner knows why it ended. The
 * callback may run inside a call the owner made: it must only take note. */
void mg_tls_on_handshake(struct mg_transport *t, void (*cb)(struct mg_transport *t, int status));
/* Whether ALPN chose "h2" on this stream (false for plain TCP). */
bool mg_tls_alpn_h2(const struct mg_transport *t);
/* The verified client certificate's subject (mTLS) into out, or "". */
void mg_tls_peer_subject(const struct mg_transport *t, char *out, size_t len);

#endif
