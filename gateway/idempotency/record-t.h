/*
 * Types of stored idempotency records (record.h). The record itself is opaque:
 * it is one contiguous blob (the Redis value, byte for byte) plus a refcount.
 */
#ifndef MG_IDEM_RECORD_T_H
#define MG_IDEM_RECORD_T_H

/* Size of the fixed blob head; an in-flight or too-big record is exactly this. */
#define MG_IDEM_RECORD_HEAD 79

/* Suggested bound on a stored response (status + headers + body + framing) for
 * the proxy's mg_idem_record_new(); no config key exists for it yet. */
#define MG_IDEM_RECORD_MAX_DEFAULT (1024 * 1024)

/* What a key's record says. The byte is the blob's state byte (record.h). */
enum mg_idem_record_state {
    MG_IDEM_REC_IN_FLIGHT = 'I', /* a lock: owner token + fingerprint, no response */
    MG_IDEM_REC_DONE = 'D',      /* a completed response: status, headers, body */
    MG_IDEM_REC_TOO_BIG = 'B',   /* completed, but the response exceeded the bound:
                                    status only, headers and body dropped */
};

struct mg_idem_record;

#endif
