/*
 * A worker's recent latencies of one upstream, for `hedge.after: pNN`.
 */
#ifndef MG_QUANTILE_T_H
#define MG_QUANTILE_T_H

#include <stdint.h>

#define MG_QUANTILE_RING  256 /* the last this many response heads */
#define MG_QUANTILE_EVERY 32  /* the quantile is recomputed after this many */

struct mg_quantile {
    uint32_t ring[MG_QUANTILE_RING]; /* latencies in microseconds */
    uint32_t n;                      /* samples ever added */
    uint32_t value_us;               /* the last computed quantile; 0 = not yet */
};

#endif
