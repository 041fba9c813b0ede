"""Differential request-smuggling tests (RFC 9112 sections 6 and 7, DESIGN section 4).

Every case sends exact bytes through the gateway to a recording backend
(recording_upstream.py) that parses what it receives strictly and on its own,
then compares what the client sent with what the backend got:

  - a rejected request gets its 4xx/5xx JSON error, the connection is closed with
    nothing after the error, and nothing of it reaches the backend as a request
    (no byte at all when the head alone is faulty; when the fault is in the body,
    at most a cut-short request the gateway then abandons);
  - an accepted request reaches the backend exactly once with exactly the
    intended body, framed by the gateway itself (`Content-Length: N` or
    `Transfer-Encoding: chunked`, never both, no chunk extensions, no trailers),
    and the pipelined `GET /smuggled` behind it arrives as its own request;
  - a canary on a fresh connection then gets its own response, and the backend
    saw exactly one canary.

A response-side corpus does the same the other way: a scripted backend answers
the first of two pipelined requests with crafted bytes followed by a forged
response; the client must get a 502 or a correctly framed response, never a
byte of the forged one, and the second request must get its own answer.
"""

import time

import pytest

from conftest import IncompleteResponse, RawClient, ResponseParseError, assert_error, ms, t
from recording_upstream import RecordingUpstream, sha256

CONF = """\
client:
  header_timeout: $header_timeout
  body_timeout: $body_timeout
  keepalive_timeout: $keepalive_timeout
  max_header_size: 8k
  max_body_size: 1k
upstreams:
  u:
    targets: [{address: "$a"}]
    timeouts: {connect: 1s, send: 2s, read: $read_timeout}
    retry: {max_retries: 0}
routes:
  - name: all
    upstream: u
"""

UPSTREAM_ERRORS = [r"(?i)upstream|127\.0\.0\.1:\d+"]
EMPTY_SHA = sha256(b"")


@pytest.fixture
def backend():
    made = []

    def make(responder=None):
        b = RecordingUpstream(responder)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def start(gateway, backend, responder=None, allow_errors=()):
    be = backend(responder)
    gw = gateway(CONF, a=be, header_timeout=ms(2), body_timeout=ms(1.5), keepalive_timeout=ms(3),
                 read_timeout=ms(1), allow_errors=allow_errors)
    return gw, be


class TapClient(RawClient):
    """A RawClient that also keeps every byte it received (for evidence and the
    forged-response check)."""

    def __init__(self, port, timeout=None):
        super().__init__(port, timeout=timeout if timeout is not None else t(3))
        self.all = bytearray()

    def _fill(self, n=1 << 20):
        before = len(self.buf)
        ok = super()._fill(n)
        if ok:
            self.all += self.buf[before:]
        return ok

    def _recv_direct(self, n):
        data = super()._recv_direct(n)
        self.all += data
        return data


# ---------------------------------------------------------------------------
# expectations
# ---------------------------------------------------------------------------

class Rej:
    """Rejected: status + error name, connection closed. scope "head": the head is
    enough to refuse, the backend must receive no byte; "body": the fault is in
    the body, the backend may have got the head (never a complete request)."""

    def __init__(self, status=400, error="bad_request", scope="head"):
        self.status, self.error, self.scope = status, error, scope

    def __repr__(self):
        return "Rej(%d %s, %s)" % (self.status, self.error, self.scope)


class Fwd:
    def __init__(self, method, target, body=b"", framing=None, host="gw.test"):
        self.method, self.target, self.body, self.host = method, target, body, host
        self.framing = framing or ("length" if body else "none")

    @property
    def seen(self):
        return "%s %s %s" % (self.method, self.target, sha256(self.body))

    def __repr__(self):
        return "Fwd(%s %s %s %r)" % (self.method, self.target, self.framing, self.body[:40])


class Acc:
    """Accepted: exactly these requests reach the backend, in order, and the client
    gets one response each. closes: the connection must then be closed.
    may_close_after: the connection may close after that many responses, the
    requests after it then never reaching the backend. alt_reject: a Rej that is
    an acceptable outcome too."""

    def __init__(self, *reqs, closes=False, may_close_after=None, alt_reject=None):
        self.reqs = list(reqs)
        self.closes = closes
        self.may_close_after = may_close_after
        self.alt_reject = alt_reject

    def __repr__(self):
        return "Acc(%r)" % self.reqs


H = b"Host: gw.test\r\n"
SMUG = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"
SMUG_FWD = Fwd("GET", "/smuggled")
R400 = Rej()
B400 = Rej(scope="body")
R501 = Rej(501, "not_implemented")


def post(fields, body, target=b"/p", version=b"HTTP/1.1", pipelined=SMUG):
    return (b"POST " + target + b" " + version + b"\r\n" + H + fields + b"\r\n" + body + pipelined)


def te(body_framing, fields=b""):
    return post(b"Transfer-Encoding: chunked\r\n" + fields, body_framing)


def get(target, fields=b"", pipelined=SMUG):
    return b"GET " + target + b" HTTP/1.1\r\n" + H + fields + b"\r\n" + pipelined


HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"


def ok_len(body=b"hello", target="/p", host="gw.test"):
    return Acc(Fwd("POST", target, body, "length", host), SMUG_FWD)


def ok_chunked(body=b"hello", target="/p"):
    return Acc(Fwd("POST", target, body, "chunked"), SMUG_FWD)


REQUEST_CASES = [
    # -- baselines: a clean length body and a clean chunked body, each with a pipelined GET
    ("baseline_length", post(b"Content-Length: 5\r\n", b"hello"), ok_len()),
    ("baseline_chunked", te(HELLO_CHUNKED), ok_chunked()),
    ("baseline_chunked_two_chunks", te(b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"), ok_chunked()),

    # -- CL.TE / TE.CL
    ("cl_te", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), R400),
    ("te_cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", b"0\r\n\r\nG"), R400),
    ("te_cl_classic", post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                           b"2b\r\nGET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n\r\n0\r\n\r\n",
                           pipelined=b""), R400),
    ("cl_with_empty_te", post(b"Content-Length: 5\r\nTransfer-Encoding: \r\n", b"hello"), R400),
    ("cl_with_te_identity", post(b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n", b"hello"), R400),

    # -- TE.TE: obfuscated Transfer-Encoding next to Content-Length
    ("tete_space_colon_cl", post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("tete_xchunked_cl", post(b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("tete_chunked_identity_cl", post(b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n",
                                      b"hello"), R400),
    ("tete_tab_cl", post(b"Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("tete_two_lines_cl", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\nContent-Length: 5\r\n",
                               b"hello"), R400),
    ("tete_trailing_comma_cl", post(b"Transfer-Encoding: chunked,\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("tete_empty_name_cl", post(b": Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"), R400),
    # -- TE.TE: obfuscated Transfer-Encoding alone
    ("te_xchunked", post(b"Transfer-Encoding: xchunked\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_identity", post(b"Transfer-Encoding: chunked, identity\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_then_identity_lines", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                                            HELLO_CHUNKED), R400),
    ("te_chunked_gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", HELLO_CHUNKED), R400),
    ("te_space_colon", post(b"Transfer-Encoding : chunked\r\n", HELLO_CHUNKED), R400),
    ("te_tab_colon", post(b"Transfer-Encoding\t: chunked\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_twice_lines", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                    HELLO_CHUNKED), R400),
    ("te_chunked_twice_list", post(b"Transfer-Encoding: chunked, chunked\r\n", HELLO_CHUNKED), R400),
    ("te_trailing_comma", post(b"Transfer-Encoding: chunked,\r\n", HELLO_CHUNKED), R400),
    ("te_empty", post(b"Transfer-Encoding: \r\n", b"hello"), R400),
    ("te_empty_then_chunked", post(b"Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n", HELLO_CHUNKED),
     R400),
    ("te_gzip_chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", HELLO_CHUNKED), R501),
    ("te_gzip_then_chunked_lines", post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                                        HELLO_CHUNKED), R501),
    ("te_identity_chunked", post(b"Transfer-Encoding: identity, chunked\r\n", HELLO_CHUNKED), R501),
    ("te_tab_value", post(b"Transfer-Encoding:\tchunked\r\n", HELLO_CHUNKED), ok_chunked()),
    # HTAB is optional whitespace (RFC 9110 section 5.6.3), after the coding too, as nginx
    # and HAProxy read it; it hides nothing: with Content-Length it is still CL.TE
    ("te_chunked_htab", post(b"Transfer-Encoding: chunked\t\r\n", HELLO_CHUNKED), ok_chunked()),
    ("te_chunked_htab_sp", post(b"Transfer-Encoding:\t chunked \t \r\n", HELLO_CHUNKED), ok_chunked()),
    ("te_htab_list", post(b"Transfer-Encoding: gzip,\tchunked\t\r\n", HELLO_CHUNKED), R501),
    ("tete_chunked_htab_cl", post(b"Transfer-Encoding: chunked\t\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("tete_cl_chunked_htab", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\t\r\n", b"hello"), R400),
    ("te_chunked_htab_token", post(b"Transfer-Encoding: chunked\tx\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_htab_comma", post(b"Transfer-Encoding: chunked\t,\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_vtab", post(b"Transfer-Encoding: chunked\x0b\r\n", HELLO_CHUNKED), R400),
    ("te_chunked_ff", post(b"Transfer-Encoding: chunked\x0c\r\n", HELLO_CHUNKED), R400),
    ("te_htab_other_field_kept", post(b"X-Tab: a\tb\r\nTransfer-Encoding: chunked\t\r\n", HELLO_CHUNKED),
     ok_chunked()),
    ("te_upper_case", post(b"Transfer-Encoding: CHUNKED\r\n", HELLO_CHUNKED), ok_chunked()),
    ("te_in_trailer", te(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), ok_chunked()),
    ("cl_in_trailer", te(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"), ok_chunked()),

    # -- Connection-nominated framing fields and Host are never removed
    ("connection_content_length", post(b"Connection: Content-Length\r\nContent-Length: 5\r\n", b"hello"),
     ok_len()),
    ("connection_content_length_lower", post(b"Content-Length: 5\r\nConnection: content-length\r\n", b"hello"),
     ok_len()),
    ("connection_transfer_encoding", te(HELLO_CHUNKED, b"Connection: Transfer-Encoding\r\n"), ok_chunked()),
    ("connection_host", post(b"Connection: Host\r\nContent-Length: 5\r\n", b"hello"), ok_len()),
    ("connection_keepalive_content_length",
     post(b"Connection: keep-alive, Content-Length\r\nContent-Length: 5\r\n", b"hello"), ok_len()),
    ("connection_close_content_length",
     post(b"Connection: close, Content-Length\r\nContent-Length: 5\r\n", b"hello"),
     Acc(Fwd("POST", "/p", b"hello"), closes=True)),

    # -- bare CR / bare LF: request line, field lines, end of head
    ("request_line_bare_cr", b"GET /p HTTP/1.1\r" + H + b"\r\n" + SMUG, R400),
    ("request_line_bare_lf", b"GET /p HTTP/1.1\n" + H + b"\r\n" + SMUG, R400),
    ("request_target_bare_cr", b"GET /p\rx HTTP/1.1\r\n" + H + b"\r\n" + SMUG, R400),
    ("field_bare_cr_end", get(b"/p", b"X-A: b\rX-B: c\r\n"), R400),
    ("field_bare_lf_end_hides_te", post(b"X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                        b"hello"), R400),
    ("field_bare_lf_end", get(b"/p", b"X-A: b\nX-B: c\r\n"), R400),
    ("field_bare_cr_in_value", get(b"/p", b"X-A: b\rc\r\n"), R400),
    ("field_bare_cr_in_name", get(b"/p", b"X\rA: b\r\n"), R400),
    ("cl_value_bare_cr", post(b"Content-Length: 5\r0\r\n", b"hello"), R400),
    ("head_end_bare_cr", b"GET /p HTTP/1.1\r\n" + H + b"\r" + SMUG, R400),
    ("head_end_bare_cr_filler", b"GET /p HTTP/1.1\r\n" + H + b"\rX" + SMUG, R400),
    ("head_end_bare_lf", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\nhello" + SMUG, R400),
    ("head_end_lf_lf", b"GET /p HTTP/1.1\r\n" + b"Host: gw.test\n\n" + SMUG, R400),
    # -- bare CR / bare LF in chunked framing
    ("chunk_size_bare_cr", te(b"5\rhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_bare_lf", te(b"5\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_bare_cr", te(b"5;a=b\rhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_bare_cr_mid", te(b"5;a=\rb\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_bare_lf", te(b"5;a=b\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_data_bare_cr", te(b"5\r\nhello\r0\r\n\r\n"), B400),
    ("chunk_data_bare_lf", te(b"5\r\nhello\n0\r\n\r\n"), B400),
    ("chunk_data_no_crlf", te(b"5\r\nhelloXX0\r\n\r\n"), B400),
    ("chunk_data_too_long", te(b"5\r\nhello!\r\n0\r\n\r\n"), B400),
    ("last_chunk_bare_cr", te(b"5\r\nhello\r\n0\r\r\n"), B400),
    ("last_chunk_bare_lf", te(b"5\r\nhello\r\n0\n\r\n"), B400),
    ("trailer_bare_cr", te(b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n"), B400),
    ("trailer_bare_lf", te(b"5\r\nhello\r\n0\r\nX-T: a\n\r\n"), B400),
    ("final_crlf_bare_cr", te(b"5\r\nhello\r\n0\r\n\r"), B400),
    ("final_crlf_bare_lf", te(b"5\r\nhello\r\n0\r\n\n"), B400),
    ("final_crlf_bare_cr_after_trailer", te(b"5\r\nhello\r\n0\r\nX-T: a\r\n\r"), B400),
    ("final_crlf_bare_lf_after_trailer", te(b"5\r\nhello\r\n0\r\nX-T: a\r\n\n"), B400),

    # -- chunk extensions
    ("chunk_ext_quoted", te(b'5;foo="b;a\\"r"\r\nhello\r\n0\r\n\r\n'), ok_chunked()),
    ("chunk_ext_ws_before_semicolon", te(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), ok_chunked()),
    ("chunk_ext_several", te(b"5;a;b=c;d=\"e\"\r\nhello\r\n0;z=1\r\n\r\n"), ok_chunked()),
    ("chunk_ext_long_ok", te(b"5;" + b"a" * 3990 + b"\r\nhello\r\n0\r\n\r\n"), ok_chunked()),
    ("chunk_ext_huge", te(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_huge_quoted", te(b'5;a="' + b"b" * 5000 + b'"\r\nhello\r\n0\r\n\r\n'), B400),
    ("chunk_ext_ctl", te(b"5;a=b\x01c\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_ctl_quoted", te(b'5;a="b\x01c"\r\nhello\r\n0\r\n\r\n'), B400),
    ("chunk_ext_del", te(b"5;a=b\x7f\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_nul", te(b"5;a\x00=b\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_ext_unterminated_quote", te(b'5;a="abc\r\nhello\r\n0\r\n\r\n'), B400),
    ("chunk_ext_quote_hides_crlf", te(b'5;a="x\r\nhello\r\n0\r\n\r\n"\r\n'), B400),

    # -- chunk sizes
    ("chunk_size_leading_zeros_16", te(b"0000000000000005\r\nhello\r\n0\r\n\r\n"), ok_chunked()),
    ("chunk_size_upper_hex", te(b"A\r\n0123456789\r\n0\r\n\r\n"), ok_chunked(b"0123456789")),
    ("chunk_size_17_digits", te(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_overflow", te(b"10000000000000005\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_overflow_long", te(b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n"), B400),
    ("chunk_size_negative", te(b"-5\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_0x", te(b"0x5\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_plus", te(b"+5\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_leading_space", te(b" 5\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_trailing_space", te(b"5 \r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_empty", te(b"\r\nhello\r\n0\r\n\r\n"), B400),
    ("chunk_size_not_hex", te(b"g\r\nhello\r\n0\r\n\r\n"), B400),

    # -- trailers
    ("trailer_ok", te(b"5\r\nhello\r\n0\r\nX-T: v\r\nX-U:w\r\n\r\n"), ok_chunked()),
    ("trailer_no_colon", te(b"5\r\nhello\r\n0\r\nX-T\r\n\r\n"), B400),
    ("trailer_request_line", te(b"5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n"), B400),
    ("trailer_space_colon", te(b"5\r\nhello\r\n0\r\nX-T : v\r\n\r\n"), B400),
    ("trailer_obs_fold", te(b"5\r\nhello\r\n0\r\nX-T: v\r\n w\r\n\r\n"), B400),
    ("trailer_empty_name", te(b"5\r\nhello\r\n0\r\n: v\r\n\r\n"), B400),
    ("trailer_nul", te(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"), B400),

    # -- obs-fold, NUL, whitespace before the colon, empty names
    ("obs_fold", get(b"/p", b"X-A: a\r\n b\r\n"), R400),
    ("obs_fold_content_length", post(b"Content-Length:\r\n 5\r\n", b"hello"), R400),
    ("obs_fold_te", post(b"Transfer-Encoding: gzip\r\n\tchunked\r\n", HELLO_CHUNKED), R400),
    ("nul_in_value", get(b"/p", b"X-A: a\x00b\r\n"), R400),
    ("nul_in_name", get(b"/p", b"X-\x00A: b\r\n"), R400),
    ("nul_in_target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n" + SMUG, R400),
    ("space_before_colon_cl", post(b"Content-Length : 5\r\n", b"hello"), R400),
    ("space_before_colon_host", b"GET /p HTTP/1.1\r\nHost : gw.test\r\n\r\n" + SMUG, R400),
    ("empty_field_name", get(b"/p", b": x\r\n"), R400),
    ("empty_field_name_te_next_to_cl", post(b"Content-Length: 5\r\n: Transfer-Encoding: chunked\r\n", b"hello"),
     R400),

    # -- Content-Length
    ("cl_duplicate_equal", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), R400),
    ("cl_duplicate_differing", post(b"Content-Length: 5\r\nContent-Length: 30\r\n", b"hello"), R400),
    ("cl_list_equal", post(b"Content-Length: 5, 5\r\n", b"hello"), R400),
    ("cl_plus", post(b"Content-Length: +5\r\n", b"hello"), R400),
    ("cl_negative", post(b"Content-Length: -5\r\n", b"hello"), R400),
    ("cl_hex", post(b"Content-Length: 0x5\r\n", b"hello"), R400),
    ("cl_empty", post(b"Content-Length: \r\n", b"hello"), R400),
    ("cl_inner_space", post(b"Content-Length: 5 5\r\n", b"hello"), R400),
    ("cl_overflow", post(b"Content-Length: 99999999999999999999999\r\n", b"hello"), R400),
    ("cl_leading_zeros", post(b"Content-Length: 005\r\n", b"hello"), ok_len()),
    ("cl_at_limit", post(b"Content-Length: 1024\r\n", b"x" * 1024), ok_len(b"x" * 1024)),

    # -- request target
    ("absolute_form_vs_host", b"GET http://other.test/p HTTP/1.1\r\n" + H + b"\r\n" + SMUG,
     Acc(Fwd("GET", "/p", host="other.test"), SMUG_FWD)),
    ("path_dotdot", get(b"/a/../p"), R400),
    ("path_dot", get(b"/a/./p"), R400),
    ("path_leading_dotdot", get(b"/../p"), R400),
    ("path_trailing_dotdot", get(b"/a/.."), R400),
    ("path_trailing_dot", get(b"/a/."), R400),
    ("path_pct_dotdot", get(b"/%2e%2e/p"), R400),
    ("path_pct_dotdot_upper", get(b"/a/%2E%2E/p"), R400),
    ("path_pct_mixed", get(b"/a/.%2e/p"), R400),
    ("path_pct_dot", get(b"/a/%2e/p"), R400),
    ("path_pct_trailing_dotdot", get(b"/a/%2e%2E"), R400),
    ("path_pct00", get(b"/a%00b"), R400),
    ("path_dots_in_name_ok", get(b"/a..b/.well-known/c."),
     Acc(Fwd("GET", "/a..b/.well-known/c."), SMUG_FWD)),
    ("path_dotdot_in_query_ok", get(b"/p?x=/../y"), Acc(Fwd("GET", "/p?x=/../y"), SMUG_FWD)),

    # -- Upgrade with a body, Expect, HTTP/1.0
    ("upgrade_with_body", post(b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n", b"hello"),
     Acc(Fwd("POST", "/p", b"hello"), SMUG_FWD, may_close_after=1)),
    ("expect_continue_length", post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"), ok_len()),
    ("expect_continue_chunked", te(HELLO_CHUNKED, b"Expect: 100-continue\r\n"), ok_chunked()),
    ("http10_keepalive_body",
     post(b"Connection: keep-alive\r\nContent-Length: 5\r\n", b"hello", version=b"HTTP/1.0",
          pipelined=b"GET /smuggled HTTP/1.0\r\n" + H + b"\r\n"),
     Acc(Fwd("POST", "/p", b"hello"), SMUG_FWD, closes=True)),
    # RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; the
    # connection must close after the message (if it is processed at all)
    ("http10_chunked",
     post(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n", HELLO_CHUNKED, version=b"HTTP/1.0"),
     Acc(Fwd("POST", "/p", b"hello", "chunked"), closes=True, alt_reject=R400)),
]

# Over client.max_body_size (1k): 413 at once, before any data is sent.
LIMIT_CASES = [
    ("cl_over_limit", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 1025\r\n\r\n", Rej(413, "body_too_large")),
    ("cl_way_over_limit", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 99999999\r\n\r\n",
     Rej(413, "body_too_large")),
    ("chunk_size_over_limit", b"POST /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n401\r\n",
     Rej(413, "body_too_large", "body")),
    ("chunk_size_huge", b"POST /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
     Rej(413, "body_too_large", "body")),
    ("chunk_size_over_limit_ext", b"POST /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n800;a=b\r\n",
     Rej(413, "body_too_large", "body")),
]


def _dump(c):
    return bytes(c.all[:1500]) if c is not None else b""


def fail_msg(what, be, client):
    return "%s\n--- client received: %r\n--- backend:\n%s" % (what, _dump(client), be.describe())


def check_forwarded(req, exp, be, client):
    """One backend request against what was intended, framing included."""
    def ctx(msg):
        return fail_msg("%s: %s (expected %r)" % (msg, req, exp), be, client)
    assert (req.method, req.target) == (exp.method, exp.target), ctx("wrong request")
    assert req.body == exp.body, ctx("wrong body %r" % req.body[:200])
    assert req.header_all("host") == [exp.host], ctx("Host %r" % req.header_all("host"))
    cls, tes = req.header_all("content-length"), req.header_all("transfer-encoding")
    if exp.framing == "length":
        assert cls == [str(len(exp.body))] and not tes, ctx(
            "framing: Content-Length %r Transfer-Encoding %r" % (cls, tes))
    elif exp.framing == "chunked":
        assert [v.lower() for v in tes] == ["chunked"] and not cls, ctx(
            "framing: Content-Length %r Transfer-Encoding %r" % (cls, tes))
        assert not req.chunk_exts, ctx("chunk extensions forwarded %r" % req.chunk_exts)
        assert not req.trailers, ctx("trailers forwarded %r" % req.trailers)
    else:
        assert not tes and cls in ([], ["0"]), ctx("bodyless request framed %r %r" % (cls, tes))


def canary(gw, be):
    """A fresh connection gets its own response; returns the backend's requests."""
    with TapClient(gw.port) as c:
        c.send(b"GET /canary HTTP/1.1\r\n" + H + b"\r\n")
        try:
            r = c.read_response()
        except (IncompleteResponse, ResponseParseError, OSError) as e:
            pytest.fail(fail_msg("canary failed: %r" % e, be, c))
        assert r.status == 200 and r.header("x-seen") == "GET /canary " + EMPTY_SHA, fail_msg(
            "canary got %r %r" % (r, r.raw_head), be, c)
    reqs, _ = be.snapshot()
    canaries = [q for q in reqs if q.target == "/canary"]
    assert len(canaries) == 1, fail_msg("backend saw %d canaries" % len(canaries), be, None)
    assert reqs[-1].target == "/canary", fail_msg("requests after the canary", be, None)
    return reqs[:-1]


def expect_rejected(gw, be, c, exp):
    try:
        r = c.read_response()
    except (IncompleteResponse, ResponseParseError, OSError) as e:
        pytest.fail(fail_msg("expected %r, the client got no clean response: %r" % (exp, e), be, c))
    if r.status != exp.status:
        pytest.fail(fail_msg("expected %r, got %r %r" % (exp, r, r.body[:200]), be, c))
    assert_error(r, exp.error, exp.status)
    try:
        extra = c.wait_closed(t(2))
    except AssertionError as e:
        pytest.fail(fail_msg("after %r: %s" % (exp, e), be, c))
    assert extra == b"", fail_msg("bytes after the error response: %r" % extra[:300], be, c)


def check_backend_after_reject(gw, be, exp, client):
    before = canary(gw, be)
    assert not be.errors(), fail_msg("backend protocol error", be, client)
    assert not before, fail_msg("a rejected request reached the backend: %r" % before, be, client)
    _, conns = be.snapshot()
    canary_conn = [c for c in conns if c.requests and c.requests[-1].target == "/canary"]
    others = [c for c in conns if c not in canary_conn]
    if exp.scope == "head":
        leaked = [bytes(c.raw) for c in others if c.raw]
        if canary_conn:
            cc = canary_conn[0]
            raw = bytes(cc.raw)
            if raw != cc.requests[-1].raw:
                leaked.append(raw)
        assert not leaked, fail_msg("bytes of a rejected head reached the backend", be, client)
    else:
        # the head may have been streamed before the fault; the gateway must then
        # abandon that backend connection, never finish the request on it
        ok = be.wait_quiet(lambda b: all(c.closed for c in b.conns if c.raw and not c.requests), t(1))
        assert ok, fail_msg("a backend connection with a cut-short request stays open", be, client)
        for c in conns:
            assert b"/smuggled" not in bytes(c.raw), fail_msg("the pipelined request reached the backend",
                                                              be, client)


@pytest.mark.parametrize("name,data,exp", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_smuggling(gateway, backend, name, data, exp):
    allow = UPSTREAM_ERRORS if isinstance(exp, Rej) and exp.scope == "body" else ()
    gw, be = start(gateway, backend, allow_errors=allow)
    c = TapClient(gw.port)
    try:
        c.send(data)
        if isinstance(exp, Rej):
            expect_rejected(gw, be, c, exp)
            check_backend_after_reject(gw, be, exp, c)
            return
        responses = []
        closed_early = False
        for i, f in enumerate(exp.reqs):
            try:
                _, r = c.read_final_response(f.method)
            except IncompleteResponse as e:
                if exp.may_close_after is not None and i >= exp.may_close_after and not c.buf:
                    closed_early = True
                    break
                pytest.fail(fail_msg("response %d of %d missing: %r" % (i + 1, len(exp.reqs), e), be, c))
            except (ResponseParseError, OSError) as e:
                pytest.fail(fail_msg("response %d: %r" % (i + 1, e), be, c))
            if i == 0 and exp.alt_reject is not None and r.status == exp.alt_reject.status:
                assert_error(r, exp.alt_reject.error, exp.alt_reject.status)
                extra = c.wait_closed(t(2))
                assert extra == b"", fail_msg("bytes after the error response %r" % extra[:300], be, c)
                check_backend_after_reject(gw, be, exp.alt_reject, c)
                return
            assert r.status == 200 and r.header("x-seen") == f.seen, fail_msg(
                "response %d: expected X-Seen %r, got %r %r" % (i + 1, f.seen, r, r.raw_head), be, c)
            responses.append(r)
        if exp.closes:
            try:
                extra = c.wait_closed(t(2))
            except AssertionError as e:
                pytest.fail(fail_msg(str(e), be, c))
            assert extra == b"", fail_msg("bytes after the last response: %r" % extra[:300], be, c)
        else:
            c.is_open(t(0.1))
            assert bytes(c.buf) == b"", fail_msg("unexpected extra bytes %r" % bytes(c.buf[:300]), be, c)
        intended = exp.reqs[:len(responses)]
        got = canary(gw, be)
        assert not be.errors(), fail_msg("backend protocol error", be, c)
        assert len(got) == len(intended), fail_msg(
            "backend got %d requests, intended %d%s" % (len(got), len(intended),
                                                        " (connection closed early)" if closed_early else ""),
            be, c)
        for req, f in zip(got, intended):
            check_forwarded(req, f, be, c)
        _, conns = be.snapshot()
        stray = [cn for cn in conns if cn.incomplete or cn.buf]
        assert not stray, fail_msg("leftover bytes at the backend", be, c)
    finally:
        c.close()


@pytest.mark.parametrize("name,data,exp", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_body_limit_is_413_at_once(gateway, backend, name, data, exp):
    gw, be = start(gateway, backend, allow_errors=UPSTREAM_ERRORS if exp.scope == "body" else ())
    # only the head (and a size line) are sent: the answer must not wait for data,
    # and must come well before body_timeout (1.5 s) would produce a 408
    c = TapClient(gw.port, timeout=t(1))
    try:
        c.send(data)
        t0 = time.monotonic()
        expect_rejected(gw, be, c, exp)
        assert time.monotonic() - t0 < t(1), "413 took %.2fs" % (time.monotonic() - t0)
        check_backend_after_reject(gw, be, exp, c)
    finally:
        c.close()


# ---------------------------------------------------------------------------
# response side
# ---------------------------------------------------------------------------

FORGED = b"HTTP/1.1 200 OK\r\nX-Forged: yes\r\nContent-Length: 6\r\n\r\nFORGED"
OK_HEAD = b"HTTP/1.1 200 OK\r\n"
FINAL_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

# (name, first request's method, crafted bytes, allowed outcomes, expected status/body
#  when forwarded, client header checks when forwarded)
RESPONSE_CASES = [
    ("connection_content_length", "GET",
     OK_HEAD + b"Connection: Content-Length\r\nContent-Length: 5\r\n\r\nhello" + FORGED,
     {"ok"}, (200, b"hello"), {"content-length": "5"}),
    ("connection_transfer_encoding", "GET",
     OK_HEAD + b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"ok"}, (200, b"hello"), {}),
    ("bare_cr_chunk_size", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok", "truncated"}, (200, b"hello"), {}),
    ("bare_cr_after_chunk_data", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n" + FORGED,
     {"502", "ok", "truncated"}, (200, b"hello"), {}),
    ("bare_cr_last_chunk", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\r\n" + FORGED,
     {"502", "ok", "truncated"}, (200, b"hello"), {}),
    ("bare_lf_chunk_size", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok", "truncated"}, (200, b"hello"), {}),
    ("bare_cr_head_end", "GET",
     OK_HEAD + b"Content-Length: 5\r\n\rhello" + FORGED, {"502"}, None, {}),
    ("bare_lf_head", "GET",
     b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello" + FORGED, {"502"}, None, {}),
    ("empty_field_name", "GET",
     OK_HEAD + b": x\r\nContent-Length: 5\r\n\r\nhello" + FORGED, {"502", "ok"}, (200, b"hello"), {}),
    ("empty_field_name_te", "GET",
     OK_HEAD + b": Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("te_chunked_htab", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"ok"}, (200, b"hello"), {}),
    ("te_chunked_htab_cl", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\t\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("te_gzip_chunked", "GET",
     OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("te_empty_with_cl", "GET",
     OK_HEAD + b"Transfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("cl_and_te_cl_longer", "GET",
     OK_HEAD + b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("te_and_cl_zero", "GET",
     OK_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("interim_with_body", "GET",
     b"HTTP/1.1 103 Early Hints\r\nContent-Length: %d\r\n\r\n" % len(FINAL_HELLO) + FINAL_HELLO + FORGED,
     {"502", "ok"}, (200, b"hello"), {}),
    ("no_content_with_body", "GET",
     b"HTTP/1.1 204 No Content\r\n\r\n" + FORGED, {"502", "ok"}, (204, b""), {}),
    ("no_content_with_cl_and_body", "GET",
     b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(FORGED) + FORGED,
     {"502", "ok"}, (204, b""), {}),
    ("not_modified_with_body", "GET",
     b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n" % len(FORGED) + FORGED,
     {"502", "ok"}, (304, b""), {}),
    ("head_with_content_length", "HEAD",
     OK_HEAD + b"Content-Length: 50\r\n\r\n", {"ok"}, (200, b""), {}),
]


def scripted(crafted):
    def responder(conn, req):
        return crafted if req.target == "/r1" else None
    return responder


@pytest.mark.parametrize("name,method,crafted,outcomes,fwd,hdrs", RESPONSE_CASES,
                         ids=[c[0] for c in RESPONSE_CASES])
def test_response_splitting(gateway, backend, name, method, crafted, outcomes, fwd, hdrs):
    gw, be = start(gateway, backend, scripted(crafted), allow_errors=UPSTREAM_ERRORS)
    c = TapClient(gw.port)
    r2_answered = False
    try:
        c.send(method.encode() + b" /r1 HTTP/1.1\r\n" + H + b"\r\n" + b"GET /r2 HTTP/1.1\r\n" + H + b"\r\n")
        outcome = None
        try:
            _, r = c.read_final_response(method)
            if r.status == 502:
                assert_error(r, "upstream_unavailable", 502)
                outcome = "502"
            else:
                outcome = "ok"
                assert fwd is not None and (r.status, r.body) == fwd, fail_msg(
                    "first response %r body %r, expected %r" % (r, r.body[:200], fwd), be, c)
                for k, v in hdrs.items():
                    assert r.header_all(k) == [v], fail_msg("client got %s %r" % (k, r.header_all(k)), be, c)
                assert r.header("x-forged") is None, fail_msg("forged response delivered", be, c)
        except IncompleteResponse as e:
            outcome = "truncated"
            assert e.response is not None and e.response.status == 200, fail_msg(
                "the client got neither a 502 nor a framed response (%r)" % e, be, c)
        except ResponseParseError as e:
            pytest.fail(fail_msg("the client got an unparsable response: %r" % e, be, c))
        assert outcome in outcomes, fail_msg("outcome %s, allowed %s" % (outcome, sorted(outcomes)), be, c)
        if outcome != "truncated":
            try:
                _, r2 = c.read_final_response("GET")
                assert r2.status == 200 and r2.header("x-seen") == "GET /r2 " + EMPTY_SHA, fail_msg(
                    "second response is not /r2's own: %r %r %r" % (r2, r2.raw_head, r2.body[:100]), be, c)
                r2_answered = True
            except IncompleteResponse:
                assert outcome == "502" and not c.buf, fail_msg("connection ended inside a response", be, c)
            except ResponseParseError as e:
                pytest.fail(fail_msg("the second response is unparsable: %r" % e, be, c))
        if r2_answered:
            c.is_open(t(0.1))
            assert bytes(c.buf) == b"", fail_msg("extra bytes after /r2's response", be, c)
        assert b"FORGED" not in c.all and b"X-Forged" not in c.all, fail_msg("forged bytes reached the client",
                                                                            be, c)
    finally:
        c.close()
    if not r2_answered:
        with TapClient(gw.port) as c2:
            c2.send(b"GET /r2 HTTP/1.1\r\n" + H + b"\r\n")
            r2 = c2.read_response()
            assert r2.status == 200 and r2.header("x-seen") == "GET /r2 " + EMPTY_SHA, fail_msg(
                "a later /r2 got %r %r" % (r2, r2.raw_head), be, c2)
            assert b"FORGED" not in c2.all, fail_msg("forged bytes reached the client", be, c2)
    canary(gw, be)
    assert not be.errors(), fail_msg("backend protocol error", be, None)
