"""HTTP proxy, client-side timeouts and limits: slowloris (timeouts.client_header -> 408 and close),
idle keep-alive connections closed silently (timeouts.idle), a body that stops (timeouts.client),
max_connections (503 and close, then served again once a connection closes)."""
import threading
import time
import unittest

from harness import BallastTestCase, ConnectionClosed, HttpConn, HttpOrigin, vs_error_key, wait_metric


class ClientTimeouts(BallastTestCase):
    def setup_proxy(self, timeouts, **kw):
        self.origin = self.track(HttpOrigin("o"))
        _, self.port, self.admin = self.start_ballast(
            [self.origin.address], vs_extra=f"    timeouts: {{{timeouts}}}", **kw)

    def expect_408_and_close(self, c, t0, at_least):
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            self.fail(f"closed without a 408 (got {e.data!r})")
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 408, r.raw_head)
        self.assertIn("close", r.header_list("connection"))
        self.assertGreaterEqual(elapsed, at_least)
        self.assertLess(elapsed, 5)
        self.assertEqual(c.wait_closed(5), (True, b""))

    def test_slowloris_partial_head_gets_408(self):
        self.setup_proxy("client_header: 500ms")
        c = self.track(HttpConn(self.port, timeout=10))
        t0 = time.monotonic()
        c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-A: ")
        self.expect_408_and_close(c, t0, 0.45)
        self.assertEqual(self.origin.connections, 0)
        wait_metric(self.admin, vs_error_key("header_timeout"), 1)

    def test_slowloris_dribbling_bytes_still_times_out(self):
        # client_header runs from the first byte to the end of the head: a byte every 100 ms does
        # not keep the connection alive.
        self.setup_proxy("client_header: 600ms, idle: 10s, client: 10s")
        c = self.track(HttpConn(self.port, timeout=10))
        stop = threading.Event()
        t0 = time.monotonic()
        c.send(b"GET /drip HTTP/1.1\r\nHost: t\r\n")

        def drip():
            while not stop.wait(0.1):
                try:
                    c.sock.send(b"X")
                except OSError:
                    return
        t = threading.Thread(target=drip, daemon=True)
        t.start()
        try:
            self.expect_408_and_close(c, t0, 0.55)
        finally:
            stop.set()
            t.join(5)

    def test_header_timeout_applies_to_later_requests_too(self):
        self.setup_proxy("client_header: 500ms, idle: 10s")
        c = self.track(HttpConn(self.port, timeout=10))
        c.request("GET", "/first")
        self.assertEqual(c.read_response().status, 200)
        t0 = time.monotonic()
        c.send(b"GET /second HTTP/1.1\r\nHo")
        self.expect_408_and_close(c, t0, 0.45)

    def test_idle_keepalive_connection_closed_silently(self):
        self.setup_proxy("idle: 500ms")
        c = self.track(HttpConn(self.port, timeout=10))
        c.request("GET", "/once")
        self.assertEqual(c.read_response().status, 200)
        t0 = time.monotonic()
        closed, data = c.wait_closed(5)
        self.assertTrue(closed, "idle connection not closed")
        self.assertEqual(data, b"", "an idle keep-alive connection is closed without a response")
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)

    def test_activity_keeps_connection_open_past_idle(self):
        self.setup_proxy("idle: 600ms")
        c = self.track(HttpConn(self.port, timeout=10))
        t0 = time.monotonic()
        for i in range(6):     # about 1.2 s of requests, each gap 200 ms
            c.request("GET", f"/a/{i}")
            self.assertEqual(c.read_response().status, 200)
            time.sleep(0.2)
        self.assertGreater(time.monotonic() - t0, 1.0)
        self.assertTrue(c.is_open(0.05))

    def test_connection_without_any_request_closed(self):
        self.setup_proxy("client_header: 500ms, idle: 500ms")
        c = self.track(HttpConn(self.port, timeout=10))
        closed, data = c.wait_closed(5)
        self.assertTrue(closed, "a connection that never sends anything is kept forever")
        self.assertIn(data[:12], (b"", b"HTTP/1.1 408"))

    def test_body_stalls_mid_way_408_or_closed(self):
        self.setup_proxy("client: 500ms, client_header: 10s, idle: 10s")
        c = self.track(HttpConn(self.port, timeout=10))
        t0 = time.monotonic()
        c.send(b"POST /stall HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        closed, data = c.wait_closed(5)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "a stalled upload is kept forever")
        self.assertGreaterEqual(elapsed, 0.45)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:100])
        self.assertEqual([q for q in self.origin.requests if q.target == "/stall"], [],
                         "an incomplete request reached the server whole")
        wait_metric(self.admin, vs_error_key("client_timeout"), 1)

    def test_chunked_body_stalls_mid_way(self):
        self.setup_proxy("client: 500ms, client_header: 10s, idle: 10s")
        c = self.track(HttpConn(self.port, timeout=10))
        c.send(b"POST /stall HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        closed, data = c.wait_closed(5)
        self.assertTrue(closed, "a stalled upload is kept forever")
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:100])
        self.assertEqual([q for q in self.origin.requests if q.target == "/stall"], [])

    def test_slow_but_steady_body_is_not_cut(self):
        # client is the longest silence, not the total: a body taking 1.5 s with gaps of 150 ms passes.
        self.setup_proxy("client: 500ms")
        c = self.track(HttpConn(self.port, timeout=10))
        c.send(b"POST /steady HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            time.sleep(0.15)
            c.send(b"b")
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.origin.requests[-1].body, b"b" * 10)


class MaxConnections(BallastTestCase):
    def test_third_connection_gets_503_then_served_after_one_closes(self):
        origin = self.track(HttpOrigin("o"))
        _, port, admin = self.start_ballast([origin.address], vs_extra="    max_connections: 2")
        active = 'ballast_vs_connections_active{vs="vs"}'
        wait_metric(admin, active, 0)   # the start-up probe connection is gone
        a, b = self.track(HttpConn(port)), self.track(HttpConn(port))
        for c in (a, b):
            c.request("GET", "/held")
            self.assertEqual(c.read_response().status, 200)
        third = self.track(HttpConn(port))
        third.request("GET", "/third")
        try:
            r = third.read_response()
        except ConnectionClosed as e:
            self.fail(f"third connection closed without a 503 (got {e.data!r})")
        self.assertEqual(r.status, 503)
        self.assertIn("close", r.header_list("connection"))
        self.assertEqual(third.wait_closed(5), (True, b""))
        self.assertNotIn(b"/third", origin.raw())
        wait_metric(admin, vs_error_key("max_connections"), 1)
        # the two held connections still work
        for c in (a, b):
            c.request("GET", "/still")
            self.assertEqual(c.read_response().status, 200)
        a.close()
        wait_metric(admin, active, 1)
        with HttpConn(port) as c:
            c.request("GET", "/new")
            self.assertEqual(c.read_response().body, b"o GET /new")


if __name__ == "__main__":
    unittest.main()
