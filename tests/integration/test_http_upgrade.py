"""HTTP proxy, protocol upgrade (RFC 9110 7.8, 15.2.2): a WebSocket-style upgrade answered 101
becomes a raw tunnel both ways; a 101 nobody asked for is a bad response (502); a declined upgrade
is an ordinary response."""
import os
import socket
import threading
import unittest

from harness import (BallastTestCase, ConnectionClosed, HttpConn, HttpOrigin, RawBackend, metric,
                     recv_request_head, vs_error_key, wait_metric)

UPGRADE_REQ = (b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class Upgrade(BallastTestCase):
    def ws_backend(self, greeting=b"server-hello", close_after=None):
        heads = []

        def serve(conn):
            head, rest = recv_request_head(conn)
            if head is None:
                return
            heads.append(head)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + greeting)
            if close_after is not None:
                conn.sendall(close_after)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                return
            if rest:
                conn.sendall(rest)
            while True:   # echo until the client half-closes, then half-close back
                b = conn.recv(65536)
                if not b:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(b)
        backend = self.track(RawBackend(serve))
        return backend, heads

    def read_exact(self, c, n):
        while len(c.buf) < n:
            if not c._fill():
                raise ConnectionClosed("closed in the tunnel", c.buf)
        out, c.buf = c.buf[:n], c.buf[n:]
        return out

    def test_websocket_upgrade_becomes_tunnel(self):
        backend, heads = self.ws_backend()
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        c.send(UPGRADE_REQ)
        r = c.read_head()
        self.assertEqual(r.status, 101)
        self.assertEqual(r.header_list("upgrade"), ["websocket"], r.raw_head)
        self.assertIn("upgrade", r.header_list("connection"), r.raw_head)
        self.assertEqual(r.header("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        # what the server saw: the upgrade asked for, end to end fields intact
        head = heads[0].decode("latin-1").lower()
        self.assertIn("upgrade: websocket\r\n", head)
        self.assertRegex(head, r"\r\nconnection:[^\r]*upgrade")
        self.assertIn("sec-websocket-key: dghlihnhbxbszsbub25jzq==", head)
        # server speaks first, then bytes both ways, binary and large
        self.assertEqual(self.read_exact(c, 12), b"server-hello")
        c.send(b"ping\x00\xff\r\n\r\n")
        self.assertEqual(self.read_exact(c, 10), b"ping\x00\xff\r\n\r\n")
        blob = os.urandom(2 << 20)
        t = threading.Thread(target=c.send, args=(blob,), daemon=True)
        t.start()
        self.assertEqual(self.read_exact(c, len(blob)), blob)
        t.join(10)
        # the client half-closes: the server sees it and closes; the client sees the end
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.wait_closed(5), (True, b""))

    def test_tunnel_server_closes_first(self):
        backend, _ = self.ws_backend(greeting=b"", close_after=b"bye" * 1000)
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port))
        c.send(UPGRADE_REQ)
        self.assertEqual(c.read_head().status, 101)
        closed, data = c.wait_closed(5)
        self.assertEqual(data, b"bye" * 1000)
        self.assertTrue(closed)

    def test_101_to_a_protocol_not_offered_is_502(self):
        # RFC 9110 7.8: a server must not switch to a protocol the client did not offer.
        def serve(conn):
            head, _ = recv_request_head(conn)
            if head is not None:
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\n"
                             b"Connection: Upgrade\r\n\r\nfoo protocol bytes")
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address], vs_extra="    retries: 0")
        c = self.track(HttpConn(port))
        c.send(UPGRADE_REQ)
        r = c.read_response()
        self.assertEqual(r.status, 502)
        self.assertNotIn(b"foo protocol", r.body)
        self.assertEqual(metric(admin, vs_error_key("bad_response")), 1)

    def test_h2c_upgrade_is_not_tunnelled(self):
        # Tunnelled, the HTTP/2 requests after an h2c upgrade would pass the proxy unseen: the
        # offer is dropped and the request is served as HTTP/1.1.
        origin = self.track(HttpOrigin("o"))
        _, port, _ = self.start_ballast([origin.address])
        c = self.track(HttpConn(port))
        c.send(b"GET /h2c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"o GET /h2c"))
        names = [k.lower() for k, _ in origin.requests[0].headers]
        self.assertNotIn("upgrade", names)
        self.assertNotIn("http2-settings", names)
        self.assertTrue(c.is_open(0.2))

    def test_unsolicited_101_is_502(self):
        def serve(conn):
            while True:
                head, _ = recv_request_head(conn)
                if head is None:
                    return
                if b"/unasked" in head:
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n\r\nraw bytes of another protocol")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        backend = self.track(RawBackend(serve))
        _, port, admin = self.start_ballast([backend.address])
        before = metric(admin, vs_error_key("bad_response"))
        c = self.track(HttpConn(port))
        c.send(b"GET /unasked HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 502)
        self.assertNotIn(b"raw bytes", r.body)
        # the connection goes on cleanly or is closed; never desynchronised
        try:
            c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
            r2 = c.read_response()
            self.assertEqual((r2.status, r2.body), (200, b"ok"))
        except (ConnectionClosed, OSError):
            self.assertIn("close", r.header_list("connection"), "closed without Connection: close")
        wait_metric(admin, vs_error_key("bad_response"), before + 1)

    def test_declined_upgrade_is_ordinary_response(self):
        origin = self.track(HttpOrigin("o"))
        _, port, _ = self.start_ballast([origin.address])
        c = self.track(HttpConn(port))
        c.send(UPGRADE_REQ)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"o GET /chat"))
        c.request("GET", "/next")
        self.assertEqual(c.read_response().body, b"o GET /next")
        self.assertEqual(origin.requests[0].header("upgrade"), "websocket")
        self.assertFalse(origin.requests[1].has_header("upgrade"))

    def test_several_tunnels_at_once(self):
        backend, _ = self.ws_backend(greeting=b"")
        _, port, _ = self.start_ballast([backend.address])
        conns = [self.track(HttpConn(port)) for _ in range(8)]
        for c in conns:
            c.send(UPGRADE_REQ)
        for c in conns:
            self.assertEqual(c.read_head().status, 101)
        for i, c in enumerate(conns):
            c.send(b"tunnel %d\n" % i)
        for i, c in enumerate(conns):
            self.assertEqual(self.read_exact(c, len(b"tunnel %d\n" % i)), b"tunnel %d\n" % i)


if __name__ == "__main__":
    unittest.main()
