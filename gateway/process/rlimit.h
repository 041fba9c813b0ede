/*
 * The process's file-descriptor limit. Every client connection costs one fd and
 * usually one upstream fd, so the soft RLIMIT_NOFILE (1024 by default under
 * systemd) is raised to the hard limit at start.
 */
#ifndef MG_RLIMIT_H
#define MG_RLIMIT_H

#include <stdint.h>

/* Raises the soft limit to the hard one and warns when `max_connections` client
 * connections (and as many upstream ones) cannot fit. Returns the soft limit now
 * in force. Main thread, at start. */
uint64_t mg_rlimit_raise(uint64_t max_connections);

#endif
