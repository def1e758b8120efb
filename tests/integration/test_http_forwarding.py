"""HTTP proxy, what is forwarded (RFC 9110 7.6, RFC 9112): hop-by-hop fields removed both ways,
X-Forwarded-For / X-Forwarded-Proto, Host first, HTTP/1.1 upstream, response framing kept in sync
(HEAD, 204, 304, 1xx, close-delimited), and HTTP/1.0 clients."""
import unittest

from harness import BallastTestCase, HttpConn, HttpOrigin, ok_response


class Forwarding(BallastTestCase):
    def setup_proxy(self, respond=None, **kw):
        self.origin = self.track(HttpOrigin("o", respond=respond))
        _, self.port, self.admin = self.start_ballast([self.origin.address], **kw)
        return self.origin

    def get(self, raw, conn=None, method="GET"):
        """Sends raw on conn (or a new one), returns (final response, the origin's last request)."""
        n = len(self.origin.requests)
        c = conn or self.track(HttpConn(self.port))
        c.send(raw)
        r, _ = c.read_final_response(method)
        req = self.origin.wait_requests(n + 1)[n]
        return r, req

    # -- requests ----------------------------------------------------------------------------------
    def test_request_hop_by_hop_fields_removed(self):
        self.setup_proxy()
        r, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n"
                          b"Connection: keep-alive, X-Hop-A, x-hop-b\r\n"
                          b"Connection: X-Hop-C\r\n"
                          b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
                          b"Upgrade: h2c\r\nX-Hop-A: 1\r\nX-HOP-B: 2\r\nX-Hop-C: 3\r\nX-Keep: 4\r\n\r\n")
        self.assertEqual(r.status, 200)
        for name in ("keep-alive", "proxy-connection", "te", "upgrade", "x-hop-a", "x-hop-b", "x-hop-c"):
            self.assertFalse(req.has_header(name), f"{name} reached the server: {req.raw_head!r}")
        self.assertEqual(req.header("x-keep"), "4")
        self.assertTrue(set(req.header_list("connection")) <= {"keep-alive", "close"}, req.raw_head)

    def test_end_to_end_fields_kept_in_order_with_duplicates(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Multi: 1\r\nAccept: */*\r\nX-Multi: 2\r\n"
                          b"Cookie: a=1\r\nCookie: b=2\r\n\r\n")
        self.assertEqual(req.header_list("x-multi"), ["1", "2"])
        self.assertEqual(req.header("accept"), "*/*")
        self.assertEqual("; ".join(req.header_all("cookie")), "a=1; b=2")

    def test_host_is_first_field_and_upstream_is_http11(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nHost: example.test\r\n\r\n")
        self.assertEqual(req.version, "HTTP/1.1")
        self.assertEqual(req.headers[0], ("Host", "example.test"), req.raw_head)
        self.assertEqual([k.lower() for k, _ in req.headers].count("host"), 1)

    def test_http10_request_sent_upstream_as_http11(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        r, req = self.get(b"GET /ten HTTP/1.0\r\nHost: t\r\n\r\n", c)
        self.assertEqual(r.status, 200)
        self.assertEqual((req.method, req.target, req.version), ("GET", "/ten", "HTTP/1.1"))

    def test_x_forwarded_for_added(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(req.header_list("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(req.header_all("x-forwarded-proto"), ["http"])

    def test_x_forwarded_for_appended_to_existing(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
        self.assertEqual(req.header_all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"])

    def test_x_forwarded_for_appended_after_several_fields(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.1.1.1\r\n"
                          b"X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n")
        self.assertEqual(req.header_list("x-forwarded-for"), ["1.1.1.1", "2.2.2.2", "3.3.3.3", "127.0.0.1"])

    def test_x_forwarded_proto_from_client_is_replaced(self):
        self.setup_proxy()
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\n\r\n")
        self.assertEqual(req.header_all("x-forwarded-proto"), ["http"])

    def test_x_forwarded_for_disabled(self):
        self.setup_proxy(vs_extra="    x_forwarded_for: false")
        _, req = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertFalse(req.has_header("x-forwarded-for"), req.raw_head)
        self.assertFalse(req.has_header("x-forwarded-proto"), req.raw_head)
        _, req = self.get(b"GET /y HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
        self.assertEqual(req.header_all("x-forwarded-for"), ["1.2.3.4"])

    def test_request_bodies_forwarded(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        r, req = self.get(b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world", c)
        self.assertEqual((r.status, req.body), (200, b"hello world"))
        self.assertEqual(req.header("content-length"), "11")
        r, req = self.get(b"PUT /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", c)
        self.assertEqual((r.status, req.body), (200, b"hello world"))
        r, req = self.get(b"DELETE /nobody HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, req.body), (200, b""))
        self.assertFalse(req.has_header("transfer-encoding"), req.raw_head)

    # -- responses ---------------------------------------------------------------------------------
    def test_response_hop_by_hop_fields_removed(self):
        def respond(req):
            return (b"HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop, keep-alive\r\nKeep-Alive: timeout=5\r\n"
                    b"X-Resp-Hop: 1\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End: 1\r\n"
                    b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2, c=3\r\nContent-Length: 2\r\n\r\nok")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, r.body), (200, b"ok"))
        for name in ("keep-alive", "x-resp-hop", "proxy-connection", "upgrade"):
            self.assertFalse(r.has_header(name), f"{name} reached the client: {r.raw_head!r}")
        self.assertTrue(set(r.header_list("connection")) <= {"keep-alive", "close"}, r.raw_head)
        self.assertEqual(r.header("x-end"), "1")
        self.assertEqual(r.header_all("set-cookie"), ["a=1; Path=/", "b=2, c=3"],
                         "Set-Cookie lines must stay separate")
        r, _ = self.get(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual(r.status, 200)

    def test_status_codes_forwarded(self):
        def respond(req):
            code = int(req.target.strip("/"))
            return ok_response(b"xxx", status=code)
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for code in (201, 299, 302, 404, 418, 500, 503, 599):
            r, _ = self.get(f"GET /{code} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), c)
            self.assertEqual(r.status, code)
            self.assertEqual(r.body, b"xxx")

    def test_head_response_has_no_body_and_connection_stays_in_sync(self):
        def respond(req):
            if req.method == "HEAD":
                return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Head: 1\r\n\r\n"
            return ok_response(b"after-head")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", c, method="HEAD")
        self.assertEqual((r.status, r.header("content-length"), r.header("x-head")), (200, "1000", "1"))
        r, _ = self.get(b"GET /g HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, r.body), (200, b"after-head"))

    def test_head_response_with_chunked_framing_has_no_body(self):
        def respond(req):
            if req.method == "HEAD":
                return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            return ok_response(b"after-head")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", c, method="HEAD")
        self.assertEqual(r.status, 200)
        r, _ = self.get(b"GET /g HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, r.body), (200, b"after-head"))

    def test_204_and_304_have_no_body(self):
        def respond(req):
            if req.target == "/204":
                return b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
            if req.target == "/304":
                return b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 500\r\n\r\n"
            return ok_response(b"next")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual(r.status, 204)
        self.assertFalse(r.has_header("transfer-encoding"), r.raw_head)
        r, _ = self.get(b"GET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"e\"\r\n\r\n", c)
        self.assertEqual(r.status, 304)
        self.assertFalse(r.has_header("transfer-encoding"), r.raw_head)
        r, _ = self.get(b"GET /n HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, r.body), (200, b"next"))

    def test_interim_1xx_then_final_response(self):
        def respond(req):
            return (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                    + ok_response(b"final"))
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for i in range(2):
            r, _ = self.get(f"GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), c)
            self.assertEqual((r.status, r.body), (200, b"final"))

    def test_close_delimited_response_reaches_client_whole(self):
        body = bytes(range(256)) * 400

        def respond(req):
            return (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n" + body, "close")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", c)
        self.assertEqual(r.body, body)
        if not r.close_delimited:   # re-framed (chunked): the connection may go on
            r, _ = self.get(b"GET /y HTTP/1.1\r\nHost: t\r\n\r\n", c)
            self.assertEqual(r.status, 200)

    def test_http10_origin_response_and_origin_close(self):
        def respond(req):
            return (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold" + req.target[-1].encode(), "close")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for i in range(3):
            r, _ = self.get(f"GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), c)
            self.assertEqual((r.status, r.body), (200, f"old{i}".encode()))
        self.assertEqual(self.origin.connections, 3)

    def test_origin_connection_close_does_not_close_client(self):
        def respond(req):
            return ok_response(b"bye", headers=[("Connection", "close")]), "close"
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for i in range(3):
            r, _ = self.get(f"GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), c)
            self.assertEqual((r.status, r.body), (200, b"bye"))
            self.assertNotIn("close", r.header_list("connection"))

    def test_large_response_head_forwarded(self):
        cookie = "c=" + "v" * 8000

        def respond(req):
            return ok_response(b"ok", headers=[("Set-Cookie", cookie)])
        self.setup_proxy(respond)
        r, _ = self.get(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(r.header("set-cookie"), cookie)

    # -- HTTP/1.0 clients --------------------------------------------------------------------------
    def test_http10_client_connection_closed_after_response(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        r, _ = self.get(b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n", c)
        self.assertEqual((r.status, r.body), (200, b"o GET /x"))
        self.assertNotIn("keep-alive", r.header_list("connection"))
        closed, extra = c.wait_closed(5)
        self.assertTrue(closed, "HTTP/1.0 connection without keep-alive left open")
        self.assertEqual(extra, b"")

    def test_http10_client_keep_alive(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        for i in range(3):
            r, _ = self.get(f"GET /{i} HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n".encode(), c)
            self.assertEqual((r.status, r.body), (200, f"o GET /{i}".encode()))
            self.assertIn("keep-alive", r.header_list("connection"), r.raw_head)
            self.assertTrue(r.has_header("content-length"))
        self.assertTrue(c.is_open(0.3))
        r, _ = self.get(b"GET /last HTTP/1.0\r\nHost: t\r\n\r\n", c)
        self.assertEqual(r.status, 200)
        self.assertEqual(c.wait_closed(5), (True, b""))

    def test_http10_client_gets_chunked_response_unchunked(self):
        body = b"".join(b"line %d\n" % i for i in range(5000))

        def respond(req):
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                              for i in range(0, len(body), 1000))
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        c.send(b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n")
        r = c.read_head()
        self.assertFalse(r.has_header("transfer-encoding"), r.raw_head)
        closed, data = c.wait_closed(10)
        self.assertTrue(closed)
        self.assertEqual(data, body)

    def test_http10_keepalive_client_gets_chunked_response_unchunked(self):
        body = b"x" * 30000

        def respond(req):
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        c.send(b"GET /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_head()
        self.assertFalse(r.has_header("transfer-encoding"), r.raw_head)
        if r.has_header("content-length"):
            c.read_body(r)
            self.assertEqual(r.body, body)
        else:   # no length to give: the end of the body is the close
            self.assertNotIn("keep-alive", r.header_list("connection"), r.raw_head)
            closed, data = c.wait_closed(10)
            self.assertTrue(closed)
            self.assertEqual(data, body)

    def test_http10_client_gets_no_other_transfer_coding(self):
        # RFC 9112 6.1: no Transfer-Encoding to an HTTP/1.0 client; a body under gzip (no chunked,
        # close-delimited) cannot be undone by the proxy: 502, and an HTTP/1.1 client gets it as is.
        def respond(req):
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nGZIPPED", "close"
        self.setup_proxy(respond, vs_extra="    retries: 0")
        c = self.track(HttpConn(self.port))
        c.send(b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 502)
        self.assertNotIn(b"GZIPPED", r.body)
        c = self.track(HttpConn(self.port))
        c.send(b"GET /y HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_head()
        self.assertEqual(r.header("transfer-encoding"), "gzip", r.raw_head)
        self.assertEqual(c.wait_closed(10), (True, b"GZIPPED"))

    def test_date_added_to_responses_without_one(self):
        # RFC 9110 6.6.1: a proxy with a clock adds Date to a response it forwards without one, and
        # Ballast's own responses carry one; a server's own Date is kept as it is.
        def respond(req):
            if req.target == "/dated":
                return ok_response(b"d", headers=[("Date", "Sun, 06 Nov 1994 08:49:37 GMT")])
            return ok_response(b"u")
        self.setup_proxy(respond)
        imf = r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$"
        c = self.track(HttpConn(self.port))
        c.request("GET", "/undated")
        r = c.read_response()
        self.assertEqual(r.raw_head.lower().count(b"\r\ndate:"), 1, r.raw_head)
        self.assertRegex(r.header("date"), imf)
        c.request("GET", "/dated")
        r = c.read_response()
        self.assertEqual(r.header("date"), "Sun, 06 Nov 1994 08:49:37 GMT")
        self.assertEqual(r.raw_head.lower().count(b"\r\ndate:"), 1, r.raw_head)
        c.send(b"GET /bad HTTP/1.1\r\n\r\n")  # no Host: Ballast's own 400
        r = c.read_response()
        self.assertEqual(r.status, 400)
        self.assertRegex(r.header("date"), imf)


if __name__ == "__main__":
    unittest.main()
