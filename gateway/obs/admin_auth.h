/*
 * The admin listener's optional bearer token (DESIGN 10.6: `admin.token` or
 * `admin.token_file`), required for everything but /healthz and /ready so that
 * probes need no secret while metrics, status and the dashboard do.
 */
#ifndef MG_OBS_ADMIN_AUTH_H
#define MG_OBS_ADMIN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* True when `authorization` (the field's value, `len` bytes, NULL when absent)
 * is "Bearer <token>" (scheme case-insensitive). The comparison takes the
 * same time whatever prefix of the token matches. token NULL: always true. */
bool mg_admin_auth_ok(const char *token, const char *authorization, size_t len);

/* Paths open without the token. */
bool mg_admin_auth_exempt(const char *path, size_t len);

#endif
