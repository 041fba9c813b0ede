/*
 * The live dashboard page served on GET / and /dashboard of the admin listener:
 * one self-contained HTML document (its CSS and JavaScript inlined, no external
 * request but its own polls of /status/live).
 *
 * The bytes are generated at build time from dashboard/ (index.html with
 * dashboard.css and dashboard.js inlined) by cmake/embed_dashboard.cmake into
 * the build tree, so the sources stay plain files a browser can open and the
 * binary needs nothing at run time.
 */
#ifndef MG_DASHBOARD_H
#define MG_DASHBOARD_H

#include <stddef.h>

extern const unsigned char mg_dashboard_html[]; /* not NUL-terminated */
extern const size_t mg_dashboard_html_len;

#endif
