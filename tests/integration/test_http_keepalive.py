"""HTTP proxy, persistent connections both sides (RFC 9112 9.3): keep-alive, pipelining (responses
in order), server connection pooling and reuse, idle pooled connections closed by the server, the
keep-alive race (server closes as a request arrives), Connection: close."""
import socket
import threading
import time
import unittest

from harness import (BallastTestCase, ConnectionClosed, HttpConn, HttpOrigin, metric, ok_response, recv_request_head,
                     RawBackend, vs_class_key, vs_error_key, wait_for)


class KeepAlive(BallastTestCase):
    def setup_proxy(self, respond=None, **kw):
        self.origin = self.track(HttpOrigin("o", respond=respond))
        _, self.port, self.admin = self.start_ballast([self.origin.address], **kw)
        return self.origin

    def server_conns_metric(self, address):
        return metric(self.admin, f'ballast_server_connections_total{{pool="p",server="{address}"}}')

    def test_sequential_requests_on_one_client_connection(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        for i in range(20):
            c.request("GET", f"/seq/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"o GET /seq/{i}".encode()))
            self.assertNotIn("close", r.header_list("connection"))
        self.assertTrue(c.is_open(0.2))
        self.assertLessEqual(self.origin.connections, 2, "server connections were not reused")

    def test_pipelined_requests_answered_in_order(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        c.send(b"".join(f"GET /p/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(10)))
        for i in range(10):
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"o GET /p/{i}".encode()))
        self.assertTrue(c.is_open(0.2))
        self.assertEqual([q.target for q in self.origin.requests], [f"/p/{i}" for i in range(10)])

    def test_pipelined_mixed_methods_and_bodies_in_order(self):
        def respond(req):
            time.sleep(0.05 if req.target.endswith(("0", "3")) else 0)   # uneven server latency
            out = ok_response(f"{req.method} {req.target} {len(req.body)}".encode())
            return out[:out.index(b"\r\n\r\n") + 4] if req.method == "HEAD" else out
        self.setup_proxy(respond)
        reqs = [b"GET /m/0 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"POST /m/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
                b"HEAD /m/2 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"PUT /m/3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"GET /m/4 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"POST /m/5 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
                b"GET /m/6 HTTP/1.1\r\nHost: t\r\n\r\n"]
        c = self.track(HttpConn(self.port))
        c.send(b"".join(reqs))
        expect = [("GET", 0), ("POST", 5), ("HEAD", 0), ("PUT", 5), ("GET", 0), ("POST", 0), ("GET", 0)]
        for i, (method, n) in enumerate(expect):
            r = c.read_response(method)
            self.assertEqual(r.status, 200)
            if method == "HEAD":
                self.assertEqual(r.header("content-length"), str(len(f"HEAD /m/2 0")))
            else:
                self.assertEqual(r.body, f"{method} /m/{i} {n}".encode())
        self.assertTrue(c.is_open(0.2))

    def test_pipelined_burst_larger_than_one_read(self):
        # 200 requests (about 48 KB) in one write, more than one read buffer: all answered in order.
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        pad = "x" * 200
        c.send(b"".join(f"GET /b/{i} HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n".encode()
                        for i in range(200)))
        for i in range(200):
            r = c.read_response()
            self.assertEqual(r.body, f"o GET /b/{i}".encode())

    def test_pipelined_bad_request_after_good_ones(self):
        # The good requests before it are answered, then 400 and close; nothing after it is forwarded.
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        c.send(b"GET /g/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /g/2 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /bad HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
               b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        for i in (1, 2):
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"o GET /g/{i}".encode()))
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            self.fail(f"closed without a 400 for the third request (got {e.data!r})")
        self.assertEqual(r.status, 400)
        self.assertIn("close", r.header_list("connection"))
        self.assertEqual(c.wait_closed(5), (True, b""))
        self.assertNotIn(b"/after", self.origin.raw())
        self.assertNotIn(b"/bad", self.origin.raw())

    def test_server_connections_reused_across_client_connections(self):
        self.setup_proxy()
        for i in range(30):
            with HttpConn(self.port) as c:
                c.request("GET", f"/r/{i}", [("Connection", "close")])
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertIn("close", r.header_list("connection"))
                self.assertEqual(c.wait_closed(5), (True, b""))
        # one idle connection per worker is enough for sequential traffic (2 workers)
        self.assertLessEqual(self.origin.connections, 4, "server connections not pooled")
        self.assertEqual(self.server_conns_metric(self.origin.address), self.origin.connections)
        self.assertEqual(len(self.origin.requests), 30)
        for q in self.origin.requests:   # the client's Connection: close is not forwarded
            self.assertNotIn("close", q.header_list("connection"))

    def test_max_idle_per_server_zero_never_reuses(self):
        self.setup_proxy(pool_extra="    connection_pool: {max_idle_per_server: 0}")
        c = self.track(HttpConn(self.port))
        for i in range(5):
            c.request("GET", f"/n/{i}")
            self.assertEqual(c.read_response().status, 200)
        self.assertEqual(self.origin.connections, 5)
        self.origin.wait_peer_closed(5)

    def test_idle_pooled_connection_closed_after_idle_timeout(self):
        self.setup_proxy(pool_extra="    connection_pool: {idle_timeout: 300ms}")
        c = self.track(HttpConn(self.port))
        c.request("GET", "/i")
        t0 = time.monotonic()
        self.assertEqual(c.read_response().status, 200)
        self.origin.wait_peer_closed(1, timeout=5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        c.request("GET", "/i2")    # and the next request opens a new one
        self.assertEqual(c.read_response().status, 200)
        self.assertEqual(self.origin.connections, 2)

    def test_server_closing_after_each_response_is_not_an_error(self):
        # The server closes every connection after one response without saying Connection: close.
        # Requests must not fail on a pooled connection the server has closed.
        def respond(req):
            return ok_response(f"one {req.target}".encode()), "close"
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for i in range(30):
            c.request("GET", f"/c/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"one /c/{i}".encode()))
            if i % 3 == 0:
                time.sleep(0.02)   # sometimes after the server's FIN has arrived, sometimes not
        self.assertEqual(metric(self.admin, vs_class_key("5xx")), 0)

    def keepalive_race(self, reset):
        # The server answers the first request of each connection and closes a reused connection
        # as soon as the next request arrives, without a response (the keep-alive race of RFC 9112
        # 9.3.1). A GET has no body and nothing was received: it is retried on a new connection.
        def serve(conn):
            head, rest = recv_request_head(conn)
            if head is None:
                return
            body = b"fresh " + head.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            recv_request_head(conn, rest)     # the next request on this connection: dropped
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        backend = self.track(RawBackend(serve))
        _, self.port, self.admin = self.start_ballast([backend.address])
        c = self.track(HttpConn(self.port))
        for i in range(10):
            c.request("GET", f"/race/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"fresh /race/{i}".encode()))
        self.assertGreaterEqual(backend.connections, 10)

    def test_keepalive_race_server_closes_get_retried(self):
        self.keepalive_race(reset=False)

    def test_keepalive_race_server_resets_get_retried(self):
        self.keepalive_race(reset=True)

    def test_keepalive_race_post_is_not_sent_twice(self):
        # The server reads a POST on a reused connection and closes it without answering: it may
        # have applied it, so the proxy must not send it again (RFC 9112 9.3.1): 502, once.
        received = []
        lock = threading.Lock()

        def serve(conn):
            head, rest = recv_request_head(conn)
            while head is not None:
                target = head.split(b" ")[1]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    more = conn.recv(65536)
                    if not more:
                        return
                    rest += more
                rest = rest[length:]
                with lock:
                    received.append(target)
                if target.startswith(b"/pay"):
                    time.sleep(0.2)        # took it, then failed without answering
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                head, rest = recv_request_head(conn, rest)
        backend = self.track(RawBackend(serve))
        _, self.port, self.admin = self.start_ballast([backend.address], vs_extra="    retries: 2")
        for method, body in (("POST", b"amount=1000"), ("PATCH", b"x"), ("POST", None)):
            c = self.track(HttpConn(self.port))
            c.request("GET", "/first")                 # leaves a pooled server connection behind
            self.assertEqual(c.read_response().status, 200)
            target = f"/pay/{method}/{body is None}"
            c.request(method, target, body=body)
            self.assertEqual(c.read_response().status, 502, target)
            with lock:
                self.assertEqual(received.count(target.encode()), 1, f"{target} sent {received}")
        # An idempotent method on the same race is sent again, once, on a new connection.
        c = self.track(HttpConn(self.port))
        c.request("GET", "/first")
        self.assertEqual(c.read_response().status, 200)
        c.request("PUT", "/pay/put", body=b"v")
        self.assertEqual(c.read_response().status, 502)   # the new connection fails alike
        with lock:
            self.assertEqual(received.count(b"/pay/put"), 2, received)

    def test_keepalive_race_replay_goes_to_the_same_server_only(self):
        # Servers that reset a reused connection after reading the request: the free resend of
        # the keep-alive race goes to the same server on a new connection, so with retries: 0
        # no second server ever sees the request.
        seen = []
        lock = threading.Lock()

        def make(name):
            def serve(conn):
                first = True
                head, rest = recv_request_head(conn)
                while head is not None:
                    with lock:
                        seen.append((name, head.split(b" ")[1]))
                    if not first:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    first = False
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))
                    head, rest = recv_request_head(conn, rest)
            return serve
        backends = [self.track(RawBackend(make(n))) for n in (b"a", b"b")]
        _, self.port, self.admin = self.start_ballast([b.address for b in backends],
                                                      vs_extra="    retries: 0", workers=1)
        c = self.track(HttpConn(self.port))
        for i in range(4):  # pooled connections to both servers
            c.request("GET", f"/warm/{i}")
            self.assertEqual(c.read_response().status, 200)
        for i in range(6):
            c.request("GET", f"/once/{i}")
            r = c.read_response()
            self.assertEqual(r.status, 200)   # the resend, on a new connection, is answered
            with lock:
                servers = {n for n, t in seen if t == f"/once/{i}".encode()}
            self.assertEqual(len(servers), 1, f"/once/{i} reached {servers}")

    def test_post_takes_no_pooled_connection_the_server_closed(self):
        # The server closes every connection after one response without saying so; its FIN is
        # in when the next POST comes: the proxy opens a new connection, so no POST fails and none
        # is sent twice.
        def respond(req):
            return ok_response(f"one {req.target}".encode()), "close"
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for i in range(20):
            c.request("POST", f"/p/{i}", body=b"data")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"one /p/{i}".encode()))
            time.sleep(0.02)   # the server's FIN is in before the next POST (tests/unit: the check)
        targets = [r.target for r in self.origin.requests]
        self.assertEqual(targets, [f"/p/{i}" for i in range(20)])
        self.assertEqual(metric(self.admin, vs_class_key("5xx")), 0)

    def test_client_connection_close_honoured(self):
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        c.request("GET", "/a")
        self.assertEqual(c.read_response().status, 200)
        c.request("GET", "/b", [("Connection", "close")])
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertIn("close", r.header_list("connection"))
        self.assertEqual(c.wait_closed(5), (True, b""))

    def test_request_after_connection_close_is_ignored(self):
        # RFC 9112 9.6: after a request with "close" the server does not process further requests.
        self.setup_proxy()
        c = self.track(HttpConn(self.port))
        c.send(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
               b"GET /ignored HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.body, b"o GET /last")
        closed, extra = c.wait_closed(5)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")
        self.assertNotIn(b"/ignored", self.origin.raw())

    def test_client_reset_while_waiting_first_request(self):
        self.client_reset_while_waiting(warm=False)

    def test_client_reset_while_waiting_later_request(self):
        self.client_reset_while_waiting(warm=True)

    def client_reset_while_waiting(self, warm):
        # The client resets its connection while its response is pending (the server takes 10 s).
        # Ballast notices at once (client_abort), does not hold the connection until the server
        # answers, and never reuses that server connection (its response is still coming).
        release = threading.Event()
        self.addCleanup(release.set)

        def serve(conn):
            rest = b""
            while True:
                head, rest = recv_request_head(conn, rest)
                if head is None:
                    return
                target = head.split(b" ")[1]
                if target == b"/abandoned":
                    release.wait(10)
                body = b"answer to " + target
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        backend = self.track(RawBackend(serve))
        _, self.port, self.admin = self.start_ballast([backend.address], workers=1)
        active = 'ballast_vs_connections_active{vs="vs"}'
        with HttpConn(self.port) as c:
            if warm:
                c.request("GET", "/warm")
                self.assertEqual(c.read_response().body, b"answer to /warm")
            c.request("GET", "/abandoned")
            wait_for(lambda: metric(self.admin, 'ballast_pool_requests_total{pool="p"}') == 1 + warm, 5)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            wait_for(lambda: metric(self.admin, active) == 0, 5,
                     message="a reset client connection is held until the server answers")
            wait_for(lambda: metric(self.admin, vs_error_key("client_abort")) == 1, 5,
                     message="client_abort not counted")
        finally:
            release.set()
        for i in range(5):
            with HttpConn(self.port) as c:
                c.request("GET", f"/next/{i}")
                self.assertEqual(c.read_response().body, f"answer to /next/{i}".encode())

    def test_extra_bytes_after_a_response_never_reach_the_next_request(self):
        # A server sends more than the framing says (a stray second response). The connection is
        # not reusable: the next request must get its own response, not the stray one.
        def serve(conn):
            rest = b""
            while True:
                head, rest = recv_request_head(conn, rest)
                if head is None:
                    return
                target = head.split(b" ")[1]
                body = b"answer to " + target
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                             + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        backend = self.track(RawBackend(serve))
        _, self.port, self.admin = self.start_ballast([backend.address], workers=1)
        c = self.track(HttpConn(self.port))
        for i in range(5):
            c.request("GET", f"/x/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"answer to /x/{i}".encode()))

    def test_concurrent_keepalive_clients(self):
        self.setup_proxy()
        errors = []

        def client(n):
            try:
                with HttpConn(self.port) as c:
                    for i in range(25):
                        c.request("GET", f"/k/{n}/{i}")
                        r = c.read_response()
                        if r.body != f"o GET /k/{n}/{i}".encode():
                            errors.append((n, i, r.status, r.body))
            except Exception as e:   # reported below
                errors.append((n, repr(e)))
        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(self.origin.requests), 16 * 25)
        self.assertLessEqual(self.origin.connections, 2 * 16)


if __name__ == "__main__":
    unittest.main()
