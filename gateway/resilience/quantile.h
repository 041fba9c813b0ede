/*
 * Recent-latency quantile (see quantile-t.h): a ring of the last samples, the
 * quantile recomputed by selection every MG_QUANTILE_EVERY samples, so the
 * request path pays a store per sample and a few thousand instructions every
 * 32 requests. Worker-local: no atomics. Pure.
 */
#ifndef MG_QUANTILE_H
#define MG_QUANTILE_H

#include "resilience/quantile-t.h"

/* Adds a sample; recomputes the `permille` quantile (e.g. 950 for p95) when
 * due and at least MG_QUANTILE_RING / 4 samples were seen. */
void mg_quantile_add(struct mg_quantile *q, uint32_t us, uint32_t permille);
/* The last computed quantile in microseconds, 0 while there are too few samples. */
static inline uint32_t mg_quantile_us(const struct mg_quantile *q)
{
    return q->value_us;
}

#endif
