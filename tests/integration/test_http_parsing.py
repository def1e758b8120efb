"""HTTP proxy, request parsing (RFC 9112): what is rejected, with which status, and that a rejected
request never reaches a server; what is valid but unusual and must be forwarded.

One ballast and one recording origin serve the whole file. Every rejected request carries a unique
marker in its target; after the error, a sentinel request is sent and, once the origin has seen it,
the origin's raw input must not contain the marker (or, for errors in a body, no complete request
with the marker).
"""
import itertools
import unittest

from harness import (Ballast, BallastTestCase, ConnectionClosed, HttpConn, HttpOrigin, free_port,
                     http_config, http_get, metric, vs_error_key, wait_for, wait_metric)

_ids = itertools.count(1)


class ParsingBase(BallastTestCase):
    vs_extra = ""

    @classmethod
    def setUpClass(cls):
        cls.origin = HttpOrigin("o")
        cls._start()

    @classmethod
    def _start(cls):
        cls.port, cls.admin = free_port(), free_port()
        cls.ballast = Ballast(http_config(cls.port, [cls.origin.address], cls.admin,
                                          vs_extra=cls.vs_extra),
                              wait_ports=(cls.port, cls.admin))

    @classmethod
    def tearDownClass(cls):
        cls.ballast.__exit__(None, None, None)
        cls.origin.close()

    def setUp(self):
        super().setUp()
        if self.ballast.proc.poll() is not None:   # a previous test crashed it: start a fresh one
            self.__class__.ballast.__exit__(None, None, None)
            self.__class__._start()

    def tearDown(self):
        super().tearDown()
        rc = self.ballast.proc.poll()
        if rc is not None:
            self.fail(f"ballast exited ({rc}) during this test:\n{self.ballast.output()[-2000:]}")

    # -- helpers
    def marker(self):
        return f"m{next(_ids)}x"

    def sentinel(self):
        """A valid request through ballast, waited for at the origin."""
        s = self.marker()
        r = http_get(self.port, f"/sentinel-{s}")
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: any(s in q.target for q in self.origin.requests), 10,
                 message=f"sentinel {s} not seen by the origin")

    def exchange_error(self, raw, status):
        """Sends raw bytes; expects exactly one error response `status` with Connection: close,
        then the connection closed. Returns the response."""
        with HttpConn(self.port) as c:
            c.send(raw)
            try:
                r = c.read_response()
            except ConnectionClosed as e:
                self.fail(f"expected {status}, the connection was closed instead (got {e.data!r})")
            self.assertEqual(r.status, status, f"sent {raw[:300]!r}, got {r.raw_head!r}")
            self.assertEqual(r.version, "HTTP/1.1")
            self.assertIn("close", r.header_list("connection"), r.raw_head)
            self.assertTrue(r.has_header("content-length") or r.chunked, r.raw_head)
            closed, extra = c.wait_closed(5)
            self.assertEqual(extra, b"", "bytes after the error response")
            self.assertTrue(closed, "connection left open after the error response")
            return r

    def assert_rejected(self, template, status=400, in_body=False):
        """template: request bytes with {m} where the marker goes."""
        m = self.marker()
        raw = template.replace(b"{m}", m.encode())
        self.exchange_error(raw, status)
        self.sentinel()
        if in_body:
            got = [q for q in self.origin.requests if m in q.target]
            self.assertEqual(got, [], "a request with an invalid body reached the server whole")
        else:
            self.assertNotIn(m.encode(), self.origin.raw(), "the rejected request reached the server")

    def forwarded(self, template):
        """Sends a valid request (with {m}); returns (response, request as the origin saw it)."""
        m = self.marker()
        raw = template.replace(b"{m}", m.encode())
        with HttpConn(self.port) as c:
            c.send(raw)
            try:
                r = c.read_final_response()[0]
            except ConnectionClosed as e:
                self.fail(f"sent {raw[:300]!r}: connection closed ({e.data!r})")
        self.assertEqual(r.status, 200, f"sent {raw[:300]!r}, got {r.raw_head!r} {r.body[:200]!r}")
        req = wait_for(lambda: [q for q in self.origin.requests if m in q.target or
                                m in q.header("x-mark", "")], 10,
                       message=f"request {m} not seen by the origin")[0]
        return r, req


# A request template per rejected case: (name, expected status, bytes, error in the body?).
H = b"Host: t\r\n"
BAD = [
    # framing: Content-Length / Transfer-Encoding (RFC 9112 6.1, 6.3; RFC 9110 8.6)
    ("cl_and_te", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("te_and_cl", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", False),
    ("cl_plus_sign", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", False),
    ("cl_negative", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello", False),
    ("cl_hex", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", False),
    ("cl_space_inside", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\nhelloworld", False),
    ("cl_overflow", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Content-Length: 184467440737095516160\r\n\r\nhello", False),
    ("cl_overflow_2_64", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Content-Length: 18446744073709551621\r\n\r\nhello", False),
    ("cl_empty", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\nhello", False),
    ("cl_two_fields_differ", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", False),
    ("cl_list_differ", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", False),
    ("te_chunked_gzip", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", False),
    ("te_identity", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", False),
    ("te_chunked_twice_list", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", False),
    ("te_chunked_twice_fields", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("te_gzip_only", 400, b"POST /{m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nxxxxx", False),
    ("te_unknown_before_chunked", 501, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", False),
    ("te_in_http10", 400, b"POST /{m} HTTP/1.0\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("te_in_http10_with_cl", 400, b"POST /{m} HTTP/1.0\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    # field syntax (RFC 9112 2.2, 5.1, 5.2; RFC 9110 5.5)
    ("space_before_colon", 400, b"GET /{m} HTTP/1.1\r\nHost : t\r\n\r\n", False),
    ("tab_before_colon", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n", False),
    ("obs_fold", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", False),
    ("obs_fold_tab", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n", False),
    ("first_field_folded", 400, b"GET /{m} HTTP/1.1\r\n X-A: a\r\n" + H + b"\r\n", False),
    ("bare_cr_in_value", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", False),
    ("bare_cr_line_end", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n", False),
    ("bare_lf_everywhere", 400, b"GET /{m} HTTP/1.1\nHost: t\n\n", False),
    ("bare_lf_one_field", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: b\n\r\n", False),
    ("bare_lf_request_line", 400, b"GET /{m} HTTP/1.1\n" + H + b"\r\n", False),
    ("bare_lf_end_of_head", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"\n", False),
    ("nul_in_value", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", False),
    ("ctl_in_value", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", False),
    ("del_in_value", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", False),
    ("space_in_field_name", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n", False),
    ("paren_in_field_name", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n", False),
    ("nonascii_in_field_name", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X\xe9A: b\r\n\r\n", False),
    ("empty_field_name", 400, b"GET /{m} HTTP/1.1\r\n" + H + b": b\r\n\r\n", False),
    ("field_without_colon", 400, b"GET /{m} HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", False),
    # request line (RFC 9112 3)
    ("invalid_method_char", 400, b"GE(T /{m} HTTP/1.1\r\n" + H + b"\r\n", False),
    ("nonascii_method", 400, b"G\xc9T /{m} HTTP/1.1\r\n" + H + b"\r\n", False),
    ("empty_method", 400, b" /{m} HTTP/1.1\r\n" + H + b"\r\n", False),
    ("double_space_before_target", 400, b"GET  /{m} HTTP/1.1\r\n" + H + b"\r\n", False),
    ("double_space_before_version", 400, b"GET /{m}  HTTP/1.1\r\n" + H + b"\r\n", False),
    ("tab_separator", 400, b"GET\t/{m} HTTP/1.1\r\n" + H + b"\r\n", False),
    ("missing_version", 400, b"GET /{m}\r\n" + H + b"\r\n", False),
    ("lowercase_version", 400, b"GET /{m} http/1.1\r\n" + H + b"\r\n", False),
    ("version_extra_token", 400, b"GET /{m} HTTP/1.1 x\r\n" + H + b"\r\n", False),
    ("version_trailing_space", 400, b"GET /{m} HTTP/1.1 \r\n" + H + b"\r\n", False),
    ("version_garbage", 400, b"GET /{m} HTTP/1.x\r\n" + H + b"\r\n", False),
    ("space_in_target", 400, b"GET /{m} a HTTP/1.1\r\n" + H + b"\r\n", False),
    ("ctl_in_target", 400, b"GET /{m}\x01 HTTP/1.1\r\n" + H + b"\r\n", False),
    ("http_2_0", 505, b"GET /{m} HTTP/2.0\r\n" + H + b"\r\n", False),
    ("http_0_9", 505, b"GET /{m} HTTP/0.9\r\n" + H + b"\r\n", False),
    ("http_3_0", 505, b"GET /{m} HTTP/3.0\r\n" + H + b"\r\n", False),
    # Host (RFC 9112 3.2)
    ("missing_host_http11", 400, b"GET /{m} HTTP/1.1\r\nX-A: b\r\n\r\n", False),
    ("two_host_fields", 400, b"GET /{m} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", False),
    ("two_host_fields_same", 400, b"GET /{m} HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", False),
    ("host_list", 400, b"GET /{m} HTTP/1.1\r\nHost: a, b\r\n\r\n", False),
    ("host_with_space", 400, b"GET /{m} HTTP/1.1\r\nHost: a b\r\n\r\n", False),
    ("host_with_slash", 400, b"GET /{m} HTTP/1.1\r\nHost: a/b\r\n\r\n", False),
    ("host_with_userinfo", 400, b"GET /{m} HTTP/1.1\r\nHost: u@a\r\n\r\n", False),
    ("host_bad_port", 400, b"GET /{m} HTTP/1.1\r\nHost: a:8x\r\n\r\n", False),
    # chunked request bodies (RFC 9112 7.1)
    ("chunk_size_not_hex", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_size_negative", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_size_0x", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_size_empty", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_size_overflow", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_size_bare_lf", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", True),
    ("chunk_ext_no_name", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5;=x\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_ext_unterminated_quote", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_ext_ctl", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n", True),
    ("chunk_data_longer_than_size", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", True),
    ("chunk_data_shorter_than_size", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel\r\n0\r\n\r\n", True),
    ("chunk_data_bare_lf", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", True),
    ("trailer_obs_fold", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", True),
    ("trailer_bad_name", 400, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX T: a\r\n\r\n", True),
    # methods and expectations
    ("connect", 501, b"CONNECT {m}.test:443 HTTP/1.1\r\nHost: {m}.test:443\r\n\r\n", False),
    ("expect_unknown", 417, b"POST /{m} HTTP/1.1\r\n" + H +
     b"Expect: something-else\r\nContent-Length: 5\r\n\r\nhello", False),
]


class RejectedRequests(ParsingBase):
    """Each case: error status, Connection: close, connection closed, nothing reached the server."""


def _make_bad(template, status, in_body):
    def test(self):
        self.assert_rejected(template, status, in_body)
    return test


for _name, _status, _template, _in_body in BAD:
    setattr(RejectedRequests, f"test_{_name}_{_status}", _make_bad(_template, _status, _in_body))


class RejectedBehaviour(ParsingBase):
    def test_smuggling_attempt_pipelined_request_is_never_forwarded(self):
        # CL.TE smuggling shape: a second request hides behind the ambiguous framing; and a
        # plainly pipelined request after a bad one. Exactly one response (the 400), then close.
        m = self.marker()
        raw = (f"POST /{m} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
               f"GET /{m}-smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
               f"GET /{m}-after HTTP/1.1\r\nHost: t\r\n\r\n").encode()
        self.exchange_error(raw, 400)
        self.sentinel()
        self.assertNotIn(m.encode(), self.origin.raw())

    def test_bad_request_after_good_one_on_keepalive_connection(self):
        m = self.marker()
        with HttpConn(self.port) as c:
            c.send(f"GET /{m}-good HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 200)
            c.send(f"GET /{m}-bad HTTP/1.1\r\nHost : t\r\n\r\n".encode())
            try:
                r = c.read_response()
            except ConnectionClosed as e:
                self.fail(f"second request on the connection: closed without a 400 (got {e.data!r})")
            self.assertEqual(r.status, 400)
            self.assertIn("close", r.header_list("connection"))
            self.assertEqual(c.wait_closed(5), (True, b""))
        self.sentinel()
        self.assertNotIn(f"{m}-bad".encode(), self.origin.raw())

    def test_error_response_to_head_request_has_no_body(self):
        # The 400 to a HEAD request must not carry a body (RFC 9110 9.3.2): the bytes after the
        # head would be read as the next response by the client.
        with HttpConn(self.port) as c:
            c.send(b"HEAD / HTTP/1.1\r\nHost : t\r\n\r\n")
            r = c.read_head()
            self.assertEqual(r.status, 400)
            closed, extra = c.wait_closed(5)
            self.assertTrue(closed)
            self.assertEqual(extra, b"", "a body after the head of a response to HEAD")

    def test_bad_request_counts_in_metrics(self):
        before = metric(self.admin, vs_error_key("bad_request"))
        self.exchange_error(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400)
        wait_metric(self.admin, vs_error_key("bad_request"), before + 1)


class Limits(ParsingBase):
    """Default limits: max_header_size 16KiB, max_headers 100."""

    def test_header_field_over_max_header_size_431(self):
        self.assert_rejected(b"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431)

    def test_many_fields_over_max_header_size_431(self):
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"b" * 300) for i in range(60))   # ~18 KB
        self.assert_rejected(b"GET /{m} HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n", 431)

    def test_head_over_limit_without_end_gets_431_not_a_wait(self):
        # The limit is hit before the end of the head: answer at once, do not wait for the rest.
        m = self.marker()
        with HttpConn(self.port) as c:
            c.send(f"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Big: ".encode() + b"a" * 40000)
            r = c.read_response()
            self.assertEqual(r.status, 431)
            self.assertIn("close", r.header_list("connection"))

    def test_request_line_over_limit_414(self):
        self.assert_rejected(b"GET /{m}" + b"a" * 17000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414)

    def test_more_than_max_headers_431(self):
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))   # 101 with Host
        self.assert_rejected(b"GET /{m} HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n", 431)

    def test_exactly_max_headers_accepted(self):
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(99))    # 100 with Host
        _, req = self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        self.assertEqual(req.header("x-f98"), "v")

    def test_large_field_under_limit_accepted(self):
        _, req = self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        self.assertEqual(req.header("x-big"), "a" * 8000)

    def test_head_too_large_counts_in_metrics(self):
        before = metric(self.admin, vs_error_key("head_too_large"))
        self.exchange_error(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431)
        wait_metric(self.admin, vs_error_key("head_too_large"), before + 1)


class SmallLimits(ParsingBase):
    vs_extra = "    max_header_size: 1KiB\n    max_headers: 5"

    def test_configured_max_header_size(self):
        self.assert_rejected(b"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n", 431)
        self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 500 + b"\r\n\r\n")

    def test_configured_max_headers(self):
        self.assert_rejected(b"GET /{m} HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431)
        self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n")


class ValidEdgeCases(ParsingBase):
    def test_absolute_form_target(self):
        _, req = self.forwarded(b"GET http://example.test/{m}/a?b HTTP/1.1\r\nHost: example.test\r\n\r\n")
        self.assertRegex(req.target, r"^/m\d+x/a\?b$")
        self.assertEqual(req.header_all("host"), ["example.test"])

    def test_absolute_form_host_overrides_host_field(self):
        # RFC 9112 3.2.2: the target's authority wins; the Host field is replaced.
        _, req = self.forwarded(b"GET http://example.test:8080/{m} HTTP/1.1\r\nHost: other.test\r\n\r\n")
        self.assertRegex(req.target, r"^/m\d+x$")
        self.assertEqual(req.header_all("host"), ["example.test:8080"])

    def test_absolute_form_empty_path_becomes_slash(self):
        _, req = self.forwarded(b"GET http://example.test?{m} HTTP/1.1\r\nHost: example.test\r\n\r\n")
        self.assertRegex(req.target, r"^/\?m\d+x$")

    def test_options_asterisk(self):
        _, req = self.forwarded(b"OPTIONS * HTTP/1.1\r\nHost: t\r\nX-Mark: {m}\r\n\r\n")
        self.assertEqual((req.method, req.target), ("OPTIONS", "*"))

    def test_http10_without_host_gets_empty_host(self):
        r, req = self.forwarded(b"GET /{m} HTTP/1.0\r\n\r\n")
        self.assertEqual(req.header_all("host"), [""], req.raw_head)
        self.assertEqual(req.version, "HTTP/1.1")

    def test_identical_content_length_list_accepted(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello")
        self.assertEqual(req.body, b"hello")
        self.assertEqual(req.header_all("content-length"), ["5"], "forward one normalised value")

    def test_obs_text_in_value_forwarded_unchanged(self):
        _, req = self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: t\r\nX-Name: caf\xe9 \xff\r\n\r\n")
        self.assertIn(b"X-Name: caf\xe9 \xff\r\n", req.raw_head)

    def test_leading_empty_lines_ignored(self):
        self.forwarded(b"\r\n\r\nGET /{m} HTTP/1.1\r\nHost: t\r\n\r\n")

    def test_known_coding_before_chunked(self):
        body = b"\x1f\x8b not really gzip"
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                + chunked)
        self.assertEqual(req.header_list("transfer-encoding"), ["gzip", "chunked"])
        self.assertEqual(req.body, body)

    def test_transfer_coding_names_are_case_insensitive(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n"
                                b"5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(req.body, b"hello")

    def test_field_names_are_case_insensitive(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nhOST: t\r\ncontent-LENGTH: 5\r\n\r\nhello")
        self.assertEqual(req.body, b"hello")

    def test_whitespace_around_value_is_trimmed(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nContent-Length: \t 5 \t\r\n\r\nhello")
        self.assertEqual(req.body, b"hello")

    def test_extension_method_and_target_forwarded_verbatim(self):
        _, req = self.forwarded(b"PURGE /{m}/a%20b/c?x=%2F&y=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(req.method, "PURGE")
        self.assertRegex(req.target, r"^/m\d+x/a%20b/c\?x=%2F&y=1$")

    def test_expect_100_continue_case_insensitive(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\n"
                                b"Content-Length: 5\r\n\r\nhello")
        self.assertEqual(req.body, b"hello")

    def test_host_forms_accepted(self):
        for host in (b"t:8080", b"127.0.0.1", b"[::1]:80", b"xn--caf-dma.example"):
            _, req = self.forwarded(b"GET /{m} HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertEqual(req.header_all("host"), [host.decode()])

    def test_chunk_extension_and_trailer_accepted(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"5;a=1;b=\"q \\\" x\"\r\nhello\r\n6 ; c\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertEqual(req.body, b"hello world")

    def test_zero_content_length_post(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(req.body, b"")

    def test_leading_zeros_in_content_length(self):
        _, req = self.forwarded(b"POST /{m} HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nhello")
        self.assertEqual(req.body, b"hello")


if __name__ == "__main__":
    unittest.main()
