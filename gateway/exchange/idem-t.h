/*
 * Per-exchange state of the Idempotency-Key phase (exchange/idem.c), zeroed
 * with the exchange.
 */
#ifndef MG_EXCHANGE_IDEM_T_H
#define MG_EXCHANGE_IDEM_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idempotency/fingerprint-t.h"
#include "idempotency/key.h" /* MG_IDEM_OWNER_LEN: macros and prototypes only */
#include "idempotency/store-t.h"

struct mg_x_idem {
    struct mg_idem_client *store; /* NULL: this exchange is not deduplicated */
    bool keyed;                   /* a valid key on an idempotency route: retries are safe */
    bool owned;                   /* our in-flight lock holds the key: complete or release it */
    bool forwarded;               /* the request went to an upstream (it may have run) */
    struct mg_idem_req req;
    struct mg_idem_fp fp;
    uint8_t fingerprint[MG_IDEM_FP_LEN];
    char owner[MG_IDEM_OWNER_LEN + 1];
    char *skey; /* storage key, in the arena */
    size_t skey_len;
    struct mg_idem_record *rec;    /* the response being recorded */
    struct mg_idem_record *replay; /* the record being replayed: its body is being sent */
    uint16_t original_status;      /* for idempotency_replay_unavailable */
    bool answered;                 /* LOOKUP: the store's answer is in `req` */
    bool settled;                  /* COMMIT: the store kept or released the key */
    struct mg_idem_record *answer; /* the record begin() returned, until acted on */
};

#endif
