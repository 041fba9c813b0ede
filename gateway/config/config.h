/*
 * Loading, validating and releasing configuration snapshots.
 */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include "config/config-t.h"

/* Loads and validates the YAML file at `path`. On success returns a snapshot
 * with one reference, owned by the caller. On failure returns NULL and writes one
 * line into `err` (always NUL-terminated), shaped
 *   "FILE:LINE:COL: KEY.PATH: message"   e.g.
 *   "conf/x.yaml:12:16: upstreams.orders.timeouts.connect: invalid duration 'abc'"
 * Blocking (reads the file, may resolve host names): never call on a worker loop. */
struct mg_config *mg_config_load(const char *path, char *err, size_t errlen);

/* Same, from a string in memory; `name` stands for the file name in errors. */
struct mg_config *mg_config_load_string(const char *yaml, size_t len, const char *name, char *err,
                                        size_t errlen);

void mg_config_ref(struct mg_config *cfg);
/* Drops one reference; the last one frees the snapshot and everything in it. */
void mg_config_unref(struct mg_config *cfg);

/* Scalar parsers shared with the rest of the code. Return 0 or -1 on bad input.
 * Durations: "250ms", "10s", "5m", "24h" (a bare integer is rejected).
 * Sizes: "512", "16k", "1m", "1g" (binary multiples, case-insensitive). */
int mg_parse_duration_ms(const char *s, uint64_t *out_ms);
int mg_parse_size(const char *s, uint64_t *out_bytes);
/* "1.2.3.4:80", "[::1]:80", "*:80" / ":80" (any address), "localhost:80" (resolved
 * with getaddrinfo, first result). */
int mg_parse_address(const char *s, struct sockaddr_storage *out, socklen_t *outlen);

#endif
