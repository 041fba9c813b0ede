/*
 * The fields an access log line may hold: the names `access_log_fields` takes
 * and each line's keys. The config checks and stores them as ids (so the
 * request path never compares strings); obs/accesslog.c writes them.
 */
#ifndef MG_CONFIG_ACCESSLOG_FIELDS_H
#define MG_CONFIG_ACCESSLOG_FIELDS_H

/* The fields a line may hold (`access_log_fields`). */
enum mg_access_field {
    MG_AF_TIME,
    MG_AF_REQUEST_ID,
    MG_AF_CLIENT_IP,
    MG_AF_METHOD,
    MG_AF_HOST,
    MG_AF_PATH,
    MG_AF_STATUS,
    MG_AF_BYTES_IN,
    MG_AF_BYTES_OUT,
    MG_AF_ROUTE,
    MG_AF_UPSTREAM,
    MG_AF_UPSTREAM_STATUS,
    MG_AF_ATTEMPTS,
    MG_AF_DURATION,
    MG_AF_UPSTREAM_DURATION,
    MG_AF_USER_AGENT,
    MG_AF_TLS,
    MG_AF_PROTOCOL,
    MG_AF_ERROR,
    MG_AF_TLS_PROTOCOL,
    MG_AF_TLS_CIPHER,
    MG_AF_TLS_CLIENT_SUBJECT,
    MG_AF__COUNT
};

/* The name of field `f` (f < MG_AF__COUNT). */
const char *mg_access_field_name(enum mg_access_field f);
/* The field called `name`, or -1. */
int mg_access_field_id(const char *name);
/* Every name, comma-separated, for error messages. */
const char *mg_access_field_names(void);

#endif
