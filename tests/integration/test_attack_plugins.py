"""Plugins against hostile inputs and peers (attack pass): body filters over
HTTP/2, plugin I/O against peers that hang, talk garbage or close."""

import json
import socket
import threading
import time

import h2.exceptions
import pytest

from conftest import fetch, t
from test_http2 import H2, header, status

H2CONF = """\
listen:
  - {address: "127.0.0.1:$port", http2: true}
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: off
drain_timeout: $drain_timeout
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u, plugins: [{name: grow}]}
"""

GROW = """
local P = {}
function P.body_filter(ctx, conf, chunk, eof)
  if eof then return "<appended by the filter>" end
end
return P
"""


def h2_response_with_framing(c, sid):
    """The response, failing clearly when its DATA contradicts its content-length
    (python-h2 refuses such a stream, as nghttp2 and browsers do)."""
    try:
        return c.response(sid)
    except h2.exceptions.InvalidBodyLengthError as e:
        pytest.fail("HTTP/2 response with a content-length its DATA frames do not match: %s" % e)


@pytest.mark.parametrize("path,upstream_body", [("/stream/10", 10), ("/status/200", 0)])
def test_h2_body_filter_does_not_keep_the_upstream_content_length(gateway, upstream, tmp_path,
                                                                  path, upstream_body):
    """HTTP/1.1 clients get the filtered body chunked; over HTTP/2 the head kept
    the upstream's content-length while the DATA carried the filter's bytes:
    a protocol error for every client, and two responses for an h2-to-h1
    proxy that frames by that length."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "grow.lua").write_text(GROW)
    up = upstream()
    gw = gateway(H2CONF, full=True, up=up, plugins=str(d))
    r1 = fetch(gw.port, "GET", path)
    assert r1.framing == "chunked" and r1.body.endswith(b"<appended by the filter>")
    c = H2(gw.port)
    r = h2_response_with_framing(c, c.request(path))
    assert status(r) == 200
    body = bytes(r["data"])
    assert body.endswith(b"<appended by the filter>") and len(body) == upstream_body + 24
    cl = header(r, "content-length")
    assert cl is None or int(cl) == len(body), "content-length %r, %d bytes of DATA" % (cl, len(body))
    c.close()
