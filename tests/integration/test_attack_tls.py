"""TLS towards the upstream under attack (attack pass): a close-delimited
response body cut by a TCP FIN that no close_notify announced (the TLS
truncation attack, RFC 8446 section 6.1; RFC 9112 section 9.8: a close
without close_notify is an incomplete response)."""

import socket
import time

from conftest import IncompleteResponse, fetch
from test_tls import certs, plain_gateway, tls_origin  # noqa: F401 (fixtures)


def close_delimited(clean):
    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"items\": [1, 2")
        time.sleep(0.1)
        if clean:
            conn.sock.unwrap()  # close_notify, then the FIN: the body really ends here
        else:
            # a FIN alone, as an attacker on the path can forge it: SSLSocket.shutdown
            # does not send close_notify
            conn.sock.shutdown(socket.SHUT_WR)
            time.sleep(0.1)
        conn.sock.close()
        conn.closed = True
        return False
    return handler


def test_close_delimited_body_cut_without_close_notify_is_not_complete(gateway, certs, tls_origin):
    o = tls_origin(certs, "default", handler=close_delimited(clean=False))
    gw = plain_gateway(gateway, certs, o)
    try:
        r = fetch(gw.port, "GET", "/list")
    except IncompleteResponse:
        return  # the client sees the cut: right
    assert r.status == 502, (
        "a body the upstream's TLS never closed (FIN without close_notify) reached the client "
        "as a complete response: %r %r" % (r, r.body))
