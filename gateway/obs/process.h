/*
 * moongate_build_info and the standard process_* families (CPU seconds,
 * resident memory, open and max fds, start time), read at scrape time.
 * Admin thread only: reads /proc (small files, never on a worker loop).
 */
#ifndef MG_OBS_PROCESS_H
#define MG_OBS_PROCESS_H

#include "obs/textbuf.h"

void mg_process_metrics_render(struct mg_textbuf *b);

#endif
