/* File-descriptor limit (see rlimit.h). */
#include "process/rlimit.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"

/* Listeners, the admin listener, log files, loop internals, Redis, plugins' files. */
#define MG_FD_RESERVE 64

uint64_t mg_rlimit_raise(uint64_t max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        mg_warn("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return 0;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            mg_warn("cannot raise the open-file limit from %" PRIu64 " to %" PRIu64 ": %s",
                    (uint64_t)before, (uint64_t)rl.rlim_max, strerror(errno));
            rl.rlim_cur = before;
        }
    }
    uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    /* A proxied connection holds a client fd and an upstream fd. */
    uint64_t need = max_connections > (UINT64_MAX - MG_FD_RESERVE) / 2
                        ? UINT64_MAX
                        : 2 * max_connections + MG_FD_RESERVE;
    if (need > limit)
        mg_warn("open-file limit %" PRIu64 " is below the %" PRIu64 " that client.max_connections "
                "%" PRIu64 " may need: raise it (ulimit -n, LimitNOFILE=); accept pauses when it "
                "is reached",
                limit, need, max_connections);
    return limit;
}
