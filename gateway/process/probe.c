/* Listen address probe (see probe.h). */
#include "process/probe.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool listens_on(const struct mg_config *cfg, const struct mg_address *a)
{
    for (size_t i = 0; i < cfg->nlisten; i++) {
        const struct mg_address *b = &cfg->listen[i].address;
        if (a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0)
            return true;
    }
    return false;
}

/* Bound as the workers bind (SO_REUSEPORT), so it coexists with them. */
static int probe(const struct mg_address *a)
{
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (a->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int err = bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) == 0 ? 0 : errno;
    close(fd);
    return err;
}

int mg_probe_new_listeners(const struct mg_config *prev, const struct mg_config *next, char *err,
                           size_t errlen)
{
    for (size_t i = 0; i < next->nlisten; i++) {
        const struct mg_address *a = &next->listen[i].address;
        if (listens_on(prev, a))
            continue;
        int e = probe(a);
        if (e) {
            snprintf(err, errlen, "%s: listen %s: %s", next->path, a->text, strerror(e));
            return -1;
        }
    }
    return 0;
}
