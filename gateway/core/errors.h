/*
 * The errors the gateway itself answers with (DESIGN.md section 4), as one table
 * that generates the enum, the status and the name used in the JSON body, the
 * access log and the metric labels.
 */
#ifndef MG_ERRORS_H
#define MG_ERRORS_H

#define MG_ERROR_MAP(XX)                                                                           \
    XX(BAD_REQUEST, 400, "bad_request")                                                            \
    XX(CLIENT_TIMEOUT, 408, "client_timeout")                                                      \
    XX(BODY_TOO_LARGE, 413, "body_too_large")                                                      \
    XX(HEADER_TOO_LARGE, 431, "header_too_large")                                                  \
    XX(NO_ROUTE, 404, "no_route")                                                                  \
    XX(UPSTREAM_UNAVAILABLE, 502, "upstream_unavailable")                                          \
    XX(UPSTREAM_TIMEOUT, 504, "upstream_timeout")                                                  \
    XX(CIRCUIT_OPEN, 503, "circuit_open")                                                          \
    XX(BULKHEAD_FULL, 503, "bulkhead_full")                                                        \
    XX(NO_TARGETS, 503, "no_targets")                                                              \
    XX(IDEMPOTENCY_KEY_MISSING, 400, "idempotency_key_missing")                                    \
    XX(IDEMPOTENCY_KEY_INVALID, 400, "idempotency_key_invalid")                                    \
    XX(IDEMPOTENCY_CONFLICT, 409, "idempotency_conflict")                                          \
    XX(IDEMPOTENCY_MISMATCH, 422, "idempotency_mismatch")                                          \
    XX(IDEMPOTENCY_STORE_UNAVAILABLE, 503, "idempotency_store_unavailable")                        \
    XX(IDEMPOTENCY_REPLAY_UNAVAILABLE, 409, "idempotency_replay_unavailable")                      \
    XX(PLUGIN_ERROR, 500, "plugin_error")                                                          \
    XX(BALANCER_REFUSED, 503, "balancer_refused")                                                  \
    XX(NOT_IMPLEMENTED, 501, "not_implemented")

enum mg_error {
    MG_ERR_NONE = 0,
#define XX(id, status, name) MG_ERR_##id,
    MG_ERROR_MAP(XX)
#undef XX
        MG_ERR__COUNT
};

static inline int mg_error_status(enum mg_error e)
{
    static const short statuses[] = {0,
#define XX(id, status, name) status,
                                     MG_ERROR_MAP(XX)
#undef XX
    };
    return statuses[e];
}

static inline const char *mg_error_name(enum mg_error e)
{
    static const char *const names[] = {"",
#define XX(id, status, name) name,
                                        MG_ERROR_MAP(XX)
#undef XX
    };
    return names[e];
}

#endif
