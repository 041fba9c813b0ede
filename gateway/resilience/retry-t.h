/*
 * Types of the retry budget (DESIGN.md section 5): one per upstream, in
 * process-wide memory shared by every worker, updated with atomics only.
 * Whoever owns the upstream's process-wide state owns it.
 */
#ifndef MG_RETRY_T_H
#define MG_RETRY_T_H

#include "resilience/window-t.h"

/* The budget looks back 10 s in 1 s buckets: long enough to smooth a burst,
 * short enough that a recovered upstream regains its full budget quickly. */
#define MG_RETRY_BUDGET_BUCKET_MS 1000
#define MG_RETRY_BUDGET_WINDOW_MS (MG_RETRY_BUDGET_BUCKET_MS * MG_WINDOW_BUCKETS)

struct mg_retry_budget {
    struct mg_window window; /* a = requests (first tries), b = retries spent */
};

#endif
