/*
 * Whether a listen address can be bound, checked on the main thread before a
 * reload is published: the workers open the sockets later, on their own loops,
 * where a failure could no longer fail the reload.
 */
#ifndef MG_PROBE_H
#define MG_PROBE_H

#include <stddef.h>

#include "config/config-t.h"

/* Returns 0 when every address of `next` that `prev` does not listen on can be
 * bound; else -1 with "listen 127.0.0.1:80: permission denied" in err. */
int mg_probe_new_listeners(const struct mg_config *prev, const struct mg_config *next, char *err,
                           size_t errlen);

#endif
