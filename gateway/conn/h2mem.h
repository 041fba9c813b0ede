/*
 * The memory nghttp2 allocates for one HTTP/2 session (nghttp2_mem): the
 * stream, the HEADERS and DATA items and the copied header list of every
 * stream come from small free lists of the session instead of a malloc and a
 * free each. The session's own, larger blocks are plain malloc memory. At
 * most H2MEM_KEEP blocks of each class wait per session (about 64 KiB when
 * all are full, as after 32 or more streams in flight at once), and a
 * session without streams for a second gives them back.
 */
#ifndef MG_CONN_H2MEM_H
#define MG_CONN_H2MEM_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>

#define H2MEM_CLASSES 5  /* blocks of 64, 128, 256, 512 and 1024 bytes */
#define H2MEM_KEEP    32 /* freed blocks kept per class (10 streams in flight use ~30 of one) */

struct mg_h2mem {
    nghttp2_mem mem; /* for nghttp2_session_server_new3; user data: this */
    void *free[H2MEM_CLASSES];
    unsigned nfree[H2MEM_CLASSES];
};

void mg_h2mem_init(struct mg_h2mem *m);
/* Frees the blocks kept (none is in use): after nghttp2_session_del, and
 * when the session has had no stream for a while. */
void mg_h2mem_release(struct mg_h2mem *m);

#endif
