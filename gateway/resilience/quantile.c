/*
 * Recent-latency quantile (see quantile.h).
 */
#include "resilience/quantile.h"

#include <string.h>

/* The k-th smallest of v[0..n) (Hoare's selection; v is reordered). */
static uint32_t select_kth(uint32_t *v, uint32_t n, uint32_t k)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t pivot = v[lo + (hi - lo) / 2], i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                uint32_t t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return v[k];
}

void mg_quantile_add(struct mg_quantile *q, uint32_t us, uint32_t permille)
{
    q->ring[q->n % MG_QUANTILE_RING] = us;
    q->n++;
    if (q->n % MG_QUANTILE_EVERY != 0 || q->n < MG_QUANTILE_RING / 4)
        return;
    uint32_t have = q->n < MG_QUANTILE_RING ? q->n : MG_QUANTILE_RING;
    uint32_t tmp[MG_QUANTILE_RING];
    memcpy(tmp, q->ring, have * sizeof *tmp);
    uint32_t k = (uint32_t)(((uint64_t)have * permille) / 1000);
    q->value_us = select_kth(tmp, have, k < have ? k : have - 1);
}
