#!/usr/bin/env python3
"""New TLS connections per second against one HTTPS port (bench/run.sh --tls).

    tls_handshakes.py PORT SECONDS PROCESSES full|resumed

Each of PROCESSES worker processes loops for SECONDS: connect to 127.0.0.1:PORT,
TLS handshake (TLS 1.3, no certificate verification: the certificate is the
bench's own self-signed one), `GET / HTTP/1.1` with `Connection: close`, read
to EOF, close. `full`: every connection makes a full handshake (no session
offered). `resumed`: every connection offers the session (TLS 1.3 ticket) of
the worker's previous connection, so after the first one every handshake is a
PSK resumption; the line counts how many the server really resumed.

Prints one line: `HS conns=N resumed=R failed=F seconds=S rate=N/S`.
(h2load has no session resumption and `openssl s_time` runs one connection at
a time and is latency-bound here, hence this client; it is the same client for
every row, so the rows compare, and run.sh reports the proxy's CPU per
connection next to the rate.)
"""
import multiprocessing as mp
import socket
import ssl
import sys
import time

REQ = b"GET / HTTP/1.1\r\nHost: bench.moongate.test\r\nConnection: close\r\n\r\n"


def worker(port, seconds, resume, q):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    n = resumed = failed = 0
    session = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname="bench.moongate.test",
                                     session=session if resume else None) as s:
                    s.sendall(REQ)
                    got = b""
                    while True:
                        b = s.recv(4096)
                        if not b:
                            break
                        got += b
                    if not got.startswith(b"HTTP/1.1 200"):
                        failed += 1
                        continue
                    n += 1
                    resumed += s.session_reused
                    if resume:
                        session = s.session  # the ticket arrived with the response
        except (OSError, ssl.SSLError):
            failed += 1
    q.put((n, resumed, failed))


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("full", "resumed"):
        print(__doc__, file=sys.stderr)
        return 2
    port, seconds, procs = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    q = mp.Queue()
    t0 = time.monotonic()
    ps = [mp.Process(target=worker, args=(port, seconds, sys.argv[4] == "resumed", q)) for _ in range(procs)]
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    secs = time.monotonic() - t0
    n = sum(r[0] for r in res)
    print(f"HS conns={n} resumed={sum(r[1] for r in res)} failed={sum(r[2] for r in res)}"
          f" seconds={secs:.3f} rate={n / secs:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
