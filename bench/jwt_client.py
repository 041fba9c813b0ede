#!/usr/bin/env python3
"""bench/plugin_cost.sh's jwt_*_py rows: N GET / over one keep-alive
connection, request i carrying an HS256 token with jti = i (a different token
each time). Prints "ok N" when every answer was a 200."""
import base64, hashlib, hmac, json, socket, sys

port, n, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
reqs = []
for i in range(n):
    p = b(json.dumps({"sub": "user-42", "iss": "https://issuer.example", "aud": "api",
                      "exp": 4102444800, "iat": 1700000000, "jti": "%08d" % i}).encode())
    tok = h + b"." + p + b"." + b(hmac.new(secret, h + b"." + p, hashlib.sha256).digest())
    reqs.append(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: jwt_client\r\n"
                b"Authorization: Bearer " + tok + b"\r\n\r\n")
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
ok = 0
for r in reqs:
    s.sendall(r)
    status = f.readline().split()[1]
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    f.read(length)
    ok += status == b"200"
print("ok %d" % ok if ok == n else "only %d of %d answered 200" % (ok, n))
