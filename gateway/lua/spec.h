/*
 * `moongate test SPEC.lua` (DESIGN.md 10.4): runs a plugin spec against the
 * real plugin VM. The spec sets `config` (the YAML of the routes and plugins
 * under test, `listen` optional) and uses describe/it/assert and
 * request{...} from lua/moongate/spec.lua; each request{} is run by the core
 * through the route's real phases with a fake ctx built here.
 */
#ifndef MG_LUA_SPEC_H
#define MG_LUA_SPEC_H

/* Runs the spec; prints one line per test and a summary to stdout. Returns
 * 0 when every test passed, 1 when one failed, 2 on a bad spec or config. */
int mg_lua_spec_main(const char *spec_path);

#endif
