/*
 * moongate_connections_rejected_total{reason}: client connections the gateway
 * could not take. Process-wide atomic counters (every worker counts, the admin
 * thread renders), kept apart from the metrics generations because a rejection
 * belongs to no route and survives reloads. Add a reason by extending the enum
 * and the name table in rejected.c.
 */
#ifndef MG_REJECTED_H
#define MG_REJECTED_H

struct mg_textbuf;

enum mg_reject_reason {
    MG_REJECT_FD_LIMIT,        /* accept() failed with EMFILE/ENFILE: backing off */
    MG_REJECT_MAX_CONNECTIONS, /* over client.max_connections */
    MG_REJECT_DRAINING,        /* accepted while the worker drains */
    MG_REJECT_PROXY_PROTOCOL,  /* no valid PROXY header, or one from an untrusted peer */
    MG_REJECT_NREASONS
};

/* Any thread. */
void mg_rejected_count(enum mg_reject_reason r);
unsigned long long mg_rejected_get(enum mg_reject_reason r);
/* Appends the family in Prometheus text format. */
void mg_rejected_render(struct mg_textbuf *out);

#endif
