/* The access log's field names and their ids (accesslog_fields.h). */
#include "config/accesslog_fields.h"

#include <string.h>

static const char *const names[MG_AF__COUNT] = {
    [MG_AF_TIME] = "time",
    [MG_AF_REQUEST_ID] = "request_id",
    [MG_AF_CLIENT_IP] = "client_ip",
    [MG_AF_METHOD] = "method",
    [MG_AF_HOST] = "host",
    [MG_AF_PATH] = "path",
    [MG_AF_STATUS] = "status",
    [MG_AF_BYTES_IN] = "bytes_in",
    [MG_AF_BYTES_OUT] = "bytes_out",
    [MG_AF_ROUTE] = "route",
    [MG_AF_UPSTREAM] = "upstream",
    [MG_AF_UPSTREAM_STATUS] = "upstream_status",
    [MG_AF_ATTEMPTS] = "attempts",
    [MG_AF_DURATION] = "duration",
    [MG_AF_UPSTREAM_DURATION] = "upstream_duration",
    [MG_AF_USER_AGENT] = "user_agent",
    [MG_AF_TLS] = "tls",
    [MG_AF_PROTOCOL] = "protocol",
    [MG_AF_ERROR] = "error",
    [MG_AF_TLS_PROTOCOL] = "tls_protocol",
    [MG_AF_TLS_CIPHER] = "tls_cipher",
    [MG_AF_TLS_CLIENT_SUBJECT] = "tls_client_subject",
};

const char *mg_access_field_name(enum mg_access_field f)
{
    return names[f];
}

int mg_access_field_id(const char *name)
{
    for (int i = 0; i < MG_AF__COUNT; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *mg_access_field_names(void)
{
    static const char list[] = "time, request_id, client_ip, method, host, path, status, "
                               "bytes_in, bytes_out, route, upstream, upstream_status, attempts, "
                               "duration, upstream_duration, user_agent, tls, protocol, error, "
                               "tls_protocol, tls_cipher, tls_client_subject";
    return list;
}
