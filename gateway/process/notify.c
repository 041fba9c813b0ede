/* sd_notify (see notify.h). */
#include "process/notify.h"

#include <inttypes.h>
#include <systemd/sd-daemon.h>

void mg_notify_ready(uint64_t config_version)
{
    sd_notifyf(0, "READY=1\nSTATUS=serving config version %" PRIu64, config_version);
}

void mg_notify_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading");
}

void mg_notify_reloaded(uint64_t config_version, const char *error)
{
    if (error)
        sd_notifyf(0, "READY=1\nSTATUS=serving config version %" PRIu64 " (reload failed: %s)",
                   config_version, error);
    else
        mg_notify_ready(config_version);
}

void mg_notify_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
}

void mg_notify_mainpid(long pid)
{
    sd_notifyf(0, "MAINPID=%ld\nSTATUS=upgraded to pid %ld", pid, pid);
}
