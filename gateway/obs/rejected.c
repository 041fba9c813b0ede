/* Rejected client connections (see rejected.h). */
#include "obs/rejected.h"

#include <stdatomic.h>

#include "obs/textbuf.h"

static atomic_ullong counts[MG_REJECT_NREASONS];
static const char *const names[MG_REJECT_NREASONS] = {"fd_limit", "max_connections", "draining",
                                                      "proxy_protocol"};

void mg_rejected_count(enum mg_reject_reason r)
{
    atomic_fetch_add_explicit(&counts[r], 1, memory_order_relaxed);
}

unsigned long long mg_rejected_get(enum mg_reject_reason r)
{
    return atomic_load_explicit(&counts[r], memory_order_relaxed);
}

void mg_rejected_render(struct mg_textbuf *out)
{
    mg_textbuf_puts(out, "# HELP moongate_connections_rejected_total Client connections not "
                         "taken, by reason (fd_limit: accept paused on EMFILE/ENFILE).\n"
                         "# TYPE moongate_connections_rejected_total counter\n");
    for (int r = 0; r < MG_REJECT_NREASONS; r++)
        mg_textbuf_printf(out, "moongate_connections_rejected_total{reason=\"%s\"} %llu\n",
                          names[r], mg_rejected_get((enum mg_reject_reason)r));
}
