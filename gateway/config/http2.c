/*
 * The top-level `http2` section (DESIGN.md section 10.2): the limits of the
 * HTTP/2 server codec (conn/h2server.c) on listeners with `http2: true`. The
 * header list size is not here: it follows client.max_header_size.
 */
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "config/parse.h"

#define H2(m) offsetof(struct mg_http2_conf, m)

/* RFC 9113 section 6.5.2: a window is at most 2^31-1 bytes. */
static int check_window(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    if (*(uint64_t *)dst > 2147483647u)
        return mg_conf_fail(ld, n, "must be at most 2147483647 (2^31-1)");
    return 0;
}

/* ... and a frame payload 16k..16M-1. */
static int check_frame(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    if (*(uint64_t *)dst > 16777215u)
        return mg_conf_fail(ld, n, "must be at most 16777215 (2^24-1)");
    return 0;
}

const struct mg_conf_field mg_conf_http2_fields[] = {
    ROW("max_concurrent_streams", MG_K_UINT, H2(max_concurrent_streams), "128", .lo = 1,
        .hi = 100000),
    ROW("initial_window_size", MG_K_SIZE, H2(initial_window_size), "64k", .lo = 1024,
        .fn = check_window),
    ROW("max_frame_size", MG_K_SIZE, H2(max_frame_size), "16k", .lo = 16384, .fn = check_frame),
    ROW("idle_timeout", MG_K_DURATION, H2(idle_timeout_ms), "75s", .lo = 1),
    ROW("max_resets_per_second", MG_K_UINT, H2(max_resets_per_second), "100", .lo = 1),
    END,
};
