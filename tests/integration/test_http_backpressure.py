"""HTTP proxy, backpressure: bodies are streamed, never buffered whole. A slow client downloading
64 MB from a fast server, and a slow server reading a 64 MB upload from a fast client: the transfer
completes intact (SHA-256) while ballast's resident memory stays within 60 MB of its baseline."""
import hashlib
import os
import socket
import threading
import time
import unittest

from harness import BallastTestCase, HttpConn, RawBackend, recv_request_head, rss_kib

MB = 1 << 20
TOTAL = 64 * MB
BLOCK = os.urandom(MB)
RATE = 24 * MB            # bytes per second for the slow side: ~2.7 s for 64 MB
LIMIT_KIB = 60 * 1024


def expected_hash():
    h = hashlib.sha256()
    for _ in range(TOTAL // MB):
        h.update(BLOCK)
    return h.hexdigest()


EXPECTED = expected_hash()


class Paced:
    """Sleeps so that `n` bytes so far do not exceed RATE."""

    def __init__(self):
        self.t0 = time.monotonic()

    def wait(self, n):
        ahead = n / RATE - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


class RssWatch:
    def __init__(self, pid):
        self.pid, self.peak = pid, rss_kib(pid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def close(self):
        self.stop.set()
        self.thread.join(5)
        return self.peak


class Backpressure(BallastTestCase):
    def start(self, serve):
        backend = self.track(RawBackend(serve))
        b, port, _ = self.start_ballast([backend.address])
        # warm up every worker once so that the baseline includes ordinary per-process costs
        for _ in range(4):
            with HttpConn(port) as c:
                c.request("GET", "/warm", [("Connection", "close")])
                c.read_response()
        return b, port

    def slow_download(self, chunked):
        def serve(conn):
            rest = b""
            while True:
                head, rest = recv_request_head(conn, rest)
                if head is None:
                    return
                if b"/warm" in head:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                if chunked:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for _ in range(TOTAL // MB):
                        conn.sendall(b"%x\r\n%s\r\n" % (MB, BLOCK))
                    conn.sendall(b"0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
                    for _ in range(TOTAL // MB):
                        conn.sendall(BLOCK)
        b, port = self.start(serve)
        baseline = rss_kib(b.pid)
        watch = RssWatch(b.pid)
        try:
            c = self.track(HttpConn(port, timeout=30, rcvbuf=65536))
            c.request("GET", "/big")
            h, n, pace = hashlib.sha256(), [0], Paced()

            def sink(data):
                h.update(data)
                n[0] += len(data)
                pace.wait(n[0])
            r = c.read_response(sink=sink)
        finally:
            peak = watch.close()
        self.assertEqual(r.status, 200)
        self.assertEqual((n[0], h.hexdigest()), (TOTAL, EXPECTED))
        self.assertLess(peak - baseline, LIMIT_KIB,
                        f"RSS grew by {(peak - baseline) // 1024} MB during a 64 MB download")

    def test_slow_client_content_length_download(self):
        self.slow_download(chunked=False)

    def test_slow_client_chunked_download(self):
        self.slow_download(chunked=True)

    def test_slow_server_upload(self):
        results = []

        def serve(conn):
            rest = b""
            while True:
                head, rest = recv_request_head(conn, rest)
                if head is None:
                    return
                if b"/warm" in head:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                h, n, pace = hashlib.sha256(), len(rest), Paced()
                h.update(rest)
                while n < TOTAL:
                    data = conn.recv(min(65536, TOTAL - n))
                    if not data:
                        return
                    h.update(data)
                    n += len(data)
                    pace.wait(n)
                results.append((n, h.hexdigest()))
                body = h.hexdigest().encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                rest = b""
        b, port = self.start(serve)
        baseline = rss_kib(b.pid)
        watch = RssWatch(b.pid)
        try:
            c = self.track(HttpConn(port, timeout=30))

            def send():
                c.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % TOTAL)
                for _ in range(TOTAL // MB):
                    c.send(BLOCK)
            t = threading.Thread(target=send, daemon=True)
            t.start()
            r = c.read_response()
            t.join(30)
        finally:
            peak = watch.close()
        self.assertEqual((r.status, r.body), (200, EXPECTED.encode()))
        self.assertEqual(results, [(TOTAL, EXPECTED)])
        self.assertLess(peak - baseline, LIMIT_KIB,
                        f"RSS grew by {(peak - baseline) // 1024} MB during a 64 MB upload")


if __name__ == "__main__":
    unittest.main()
