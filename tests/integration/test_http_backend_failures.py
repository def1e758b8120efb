"""HTTP proxy, server failures: malformed or ambiguous responses (502, client never desynchronised),
responses cut in the middle (client connection cut, never a response that looks complete), resets,
refused connections (failover, 503), silent servers (504 after timeouts.server), connect timeouts
(failover, 503), and the error counters of each."""
import os
import socket
import threading
import time
import unittest

from harness import (Ballast, BallastTestCase, BlackholeServer, ConnectionClosed, HttpConn, HttpOrigin,
                     RawBackend, free_port, http_config, metric, recv_request_head, vs_class_key,
                     vs_error_key, wait_for, wait_metric)

BAD_RESPONSES = {
    "bad_status_code": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
    "two_digit_status": b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
    "four_digit_status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "bad_version": b"HTTQ/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http2_version": b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_different_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "cl_list_differ": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!",
    "cl_not_a_number": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
    "cl_negative": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "bare_cr": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
    "nul_in_value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "bad_field_name": b"HTTP/1.1 200 OK\r\nX(A): b\r\nContent-Length: 2\r\n\r\nok",
    "garbage": b"hello world, this is not HTTP\r\n\r\n",
    "head_too_large": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\nContent-Length: 2\r\n\r\nok",
    "too_many_fields": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(120))
                       + b"Content-Length: 2\r\n\r\nok",
    "te_chunked_not_last_with_cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n"
                                   b"Content-Length: 2\r\n\r\nok",
}


def server_error_key(address, kind):
    return f'ballast_server_errors_total{{pool="p",server="{address}",kind="{kind}"}}'


def scripted_server(conn):
    """Dispatches on the request target: /bad/<case> gets BAD_RESPONSES[case]; anything else 200."""
    rest = b""
    while True:
        head, rest = recv_request_head(conn, rest)
        if head is None:
            return
        target = head.split(b" ")[1].decode()
        if target.startswith("/bad/"):
            conn.sendall(BAD_RESPONSES[target[5:]])
        else:
            body = f"good {target}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class MalformedResponses(BallastTestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = RawBackend(scripted_server)
        cls.port, cls.admin = free_port(), free_port()
        cls.ballast = Ballast(http_config(cls.port, [cls.backend.address], cls.admin),
                              wait_ports=(cls.port, cls.admin))

    @classmethod
    def tearDownClass(cls):
        cls.ballast.__exit__(None, None, None)
        cls.backend.close()

    def check_bad_response(self, case):
        before = metric(self.admin, vs_error_key("bad_response"))
        with HttpConn(self.port) as c:
            c.send(f"GET /good/{case}/1 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            self.assertEqual(c.read_response().body, f"good /good/{case}/1".encode())
            c.send(f"GET /bad/{case} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            try:
                r = c.read_response()
            except ConnectionClosed as e:
                self.fail(f"no 502, connection closed (got {e.data[:300]!r})")
            self.assertEqual(r.status, 502, r.raw_head)
            self.assertNotIn(b"ok", r.body)
            self.assertNotIn(b"hello world", r.body)
            # the same connection: either it goes on in sync, or it is closed with nothing more
            try:
                c.send(f"GET /good/{case}/2 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                r2 = c.read_response()
            except (ConnectionClosed, OSError) as e:
                data = getattr(e, "data", b"")
                self.assertEqual(data, b"", "partial data after the 502")
            else:
                self.assertEqual((r2.status, r2.body), (200, f"good /good/{case}/2".encode()),
                                 "connection out of sync after a bad response")
        wait_metric(self.admin, vs_error_key("bad_response"), before + 1)


def _make_bad(case):
    def test(self):
        self.check_bad_response(case)
    return test


for _case in BAD_RESPONSES:
    setattr(MalformedResponses, f"test_{_case}_502", _make_bad(_case))


class BrokenServers(BallastTestCase):
    def test_response_truncated_mid_body_cuts_client(self):
        def serve(conn):
            head, _ = recv_request_head(conn)
            if head:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                time.sleep(0.2)
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        # a second request is pipelined: it must not be answered on this connection
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_head()
        closed, rest = c.wait_closed(10)
        self.assertTrue(closed, "client connection not cut")
        if r.status == 200:
            self.assertEqual(r.header("content-length"), "100000")
            self.assertEqual(rest, b"x" * 1000, "more than the partial body was sent")
        else:   # nothing was forwarded yet: a 502 (and then close) is a fair answer too
            self.assertEqual(r.status, 502)
            self.assertNotIn(b"HTTP/1.1", rest)

    def check_cut_chunked(self, tail, close=True):
        # The head and a first chunk are forwarded (the client has read the head), then the
        # server's body goes wrong: the client connection must be cut, and the chunked body it
        # got must never end with a last-chunk (that would make a truncated body look complete).
        go = threading.Event()

        def serve(conn):
            head, _ = recv_request_head(conn)
            if head:
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                go.wait(10)
                conn.sendall(tail)
                if not close:
                    conn.recv(1)
        backend = self.track(RawBackend(serve))
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_head()
        go.set()
        self.assertEqual(r.status, 200)
        with self.assertRaises(ConnectionClosed, msg="a truncated body was made to look complete"):
            c.read_body(r)

    def test_chunked_response_closed_mid_chunk_cuts_client(self):
        self.check_cut_chunked(b"1000\r\n" + b"y" * 100)

    def test_chunked_response_closed_between_chunks_cuts_client(self):
        self.check_cut_chunked(b"3\r\nabc\r\n")

    def test_chunked_response_bad_chunk_size_cuts_client(self):
        self.check_cut_chunked(b"zz\r\nabc\r\n0\r\n\r\n", close=False)

    def test_chunked_response_bad_chunk_data_cuts_client(self):
        self.check_cut_chunked(b"3\r\nabcdef\r\n0\r\n\r\n", close=False)

    def test_bad_chunked_body_in_first_segment_502(self):
        # Head and broken body arrive together, before anything was sent to the client: the client
        # gets a 502 (or, if the head was already sent, a cut response), never an empty reply.
        def serve(conn):
            head, _ = recv_request_head(conn)
            if head:
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n")
                conn.recv(1)
        backend = self.track(RawBackend(serve))
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            r = c.read_head()
        except ConnectionClosed as e:
            self.fail(f"empty reply: the connection was closed with nothing sent ({e.data!r})")
        if r.status == 502:
            return
        self.assertEqual(r.status, 200)
        with self.assertRaises(ConnectionClosed):
            c.read_body(r)

    def test_server_stalls_mid_body_client_cut_after_server_timeout(self):
        def serve(conn):
            head, _ = recv_request_head(conn)
            if head:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
                conn.recv(1)   # until ballast gives up
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address], vs_extra="    timeouts: {server: 500ms}")
        before = metric(admin, vs_error_key("server_timeout"))
        c = self.track(HttpConn(port))
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        r = c.read_head()
        closed, rest = c.wait_closed(10)
        self.assertTrue(closed)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.assertTrue(r.status == 502 or (r.status == 200 and len(rest) < 1000), (r, rest))
        wait_metric(admin, vs_error_key("server_timeout"), before + 1)

    def test_server_resets_before_responding_502(self):
        def serve(conn):
            head, _ = recv_request_head(conn)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address])
        before = metric(admin, vs_error_key("server_reset"))
        c = self.track(HttpConn(port))
        c.request("GET", "/r")
        r = c.read_response()
        self.assertEqual(r.status, 502)
        wait_for(lambda: metric(admin, vs_error_key("server_reset")) > before, 5,
                 message="server_reset not counted")

    def test_server_closes_before_responding_502(self):
        def serve(conn):
            recv_request_head(conn)
        backend = self.track(RawBackend(serve))
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        c.request("GET", "/r")
        self.assertEqual(c.read_response().status, 502)

    def test_server_resets_during_upload(self):
        def serve(conn):
            recv_request_head(conn)
            conn.recv(100000)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        backend = self.track(RawBackend(serve))
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port, timeout=10))
        data = os.urandom(16 << 20)

        def send():
            try:
                c.send(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            except OSError:
                pass
        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            r = c.read_response()
            self.assertEqual(r.status, 502)
        except ConnectionClosed:
            pass   # cut: acceptable, the request could not be completed
        t.join(15)

    def test_refused_server_fails_over(self):
        good = self.track(HttpOrigin("good"))
        dead = f"127.0.0.1:{free_port()}"
        _, port, admin = self.start_ballast([dead, good.address])
        c = self.track(HttpConn(port))
        for i in range(6):
            c.request("GET", f"/f/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"good GET /f/{i}".encode()))
        for i in range(6):
            with HttpConn(port) as c2:
                c2.request("GET", f"/n/{i}")
                self.assertEqual(c2.read_response().status, 200)
        # attempts are counted per server (requests that failed over are not failed requests)
        wait_for(lambda: metric(admin, server_error_key(dead, "connect_refused")) >= 1, 5,
                 message="connect_refused not counted for the server")
        self.assertEqual(metric(admin, vs_class_key("5xx")), 0)

    def test_all_servers_refuse_503(self):
        _, port, admin = self.start_ballast([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
        c = self.track(HttpConn(port))
        for i in range(3):
            c.request("GET", f"/x/{i}")
            try:
                r = c.read_response()
            except ConnectionClosed:
                self.fail(f"request {i}: connection closed instead of a 503 (or after a 503 without "
                          "Connection: close)")
            self.assertEqual(r.status, 503)
            if "close" in r.header_list("connection"):
                c = self.track(HttpConn(port))
        wait_metric(admin, vs_class_key("5xx"), 3)
        self.assertEqual(metric(admin, vs_error_key("no_server")) + metric(admin, vs_error_key("connect_refused")), 3)

    def test_no_enabled_server_503(self):
        dead = f"127.0.0.1:{free_port()}"
        port, admin = free_port(), free_port()
        config = http_config(port, [dead], admin).replace(
            f"      - address: {dead}", f"      - address: {dead}\n        enabled: false")
        self.track(Ballast(config, wait_ports=(port, admin)))
        with HttpConn(port) as c:
            c.request("GET", "/x")
            self.assertEqual(c.read_response().status, 503)
        wait_metric(admin, vs_error_key("no_server"), 1)

    def test_silent_server_504_after_server_timeout(self):
        def serve(conn):
            recv_request_head(conn)
            conn.recv(1)   # says nothing until ballast gives up
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address], vs_extra="    timeouts: {server: 500ms}")
        c = self.track(HttpConn(port))
        t0 = time.monotonic()
        c.request("GET", "/slow")
        r = c.read_response()
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 504)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 5)
        wait_metric(admin, vs_error_key("server_timeout"), 1)
        wait_metric(admin, vs_class_key("5xx"), 1)

    def blackhole(self):
        bh = self.track(BlackholeServer())
        if not bh.blocks():
            self.skipTest("cannot make a listener whose accept queue drops SYNs here")
        return bh

    def test_connect_timeout_fails_over(self):
        bh = self.blackhole()
        good = self.track(HttpOrigin("good"))
        _, port, admin = self.start_ballast([bh.address, good.address],
                                            vs_extra="    timeouts: {connect: 300ms}")
        c = self.track(HttpConn(port))
        for i in range(4):
            c.request("GET", f"/t/{i}")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, f"good GET /t/{i}".encode()))
        wait_for(lambda: metric(admin, server_error_key(bh.address, "connect_timeout")) >= 1, 5,
                 message="connect_timeout not counted for the server")

    def test_connect_timeout_only_server_503(self):
        bh = self.blackhole()
        _, port, admin = self.start_ballast([bh.address], vs_extra="    timeouts: {connect: 300ms}")
        c = self.track(HttpConn(port))
        t0 = time.monotonic()
        c.request("GET", "/t")
        r = c.read_response()
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 503)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 5)
        wait_for(lambda: metric(admin, server_error_key(bh.address, "connect_timeout")) >= 1, 5,
                 message="connect_timeout not counted for the server")
        wait_metric(admin, vs_class_key("5xx"), 1)


if __name__ == "__main__":
    unittest.main()
