/*
 * systemd's readiness protocol (Type=notify) through libsystemd's sd_notify:
 * READY once the workers serve, RELOADING/READY around a reload, STATUS with the
 * config version, STOPPING at the first SIGTERM. Without NOTIFY_SOCKET (not
 * under systemd) every call does nothing.
 */
#ifndef MG_NOTIFY_H
#define MG_NOTIFY_H

#include <stdint.h>

void mg_notify_ready(uint64_t config_version);
void mg_notify_reloading(void);
/* After a reload attempt: READY again, STATUS tells the version or the error. */
void mg_notify_reloaded(uint64_t config_version, const char *error);
void mg_notify_stopping(void);
/* A binary upgrade handed over: systemd follows the new main pid. */
void mg_notify_mainpid(long pid);

#endif
