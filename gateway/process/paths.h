/*
 * Where the bundled Lua files are (DESIGN.md 10.6): $MOONGATE_HOME/{lua,plugins}
 * when set; else share/moongate next to the binary (BIN/../share/moongate, so an
 * installed tree can be moved); else the compiled-in install prefix's share
 * dir; the source tree only for the binary of the build tree itself.
 */
#ifndef MG_PATHS_H
#define MG_PATHS_H

/* The Lua runtime library dir (moongate/runner.lua ...). Any thread. */
const char *mg_paths_lua(void);
/* The bundled plugins dir. Any thread. */
const char *mg_paths_plugins(void);

#endif
