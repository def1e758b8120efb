"""HTTP proxy, message bodies: Content-Length and chunked bodies stream both ways intact (SHA-256),
chunk extensions stripped and trailers dropped (the documented choice), Expect: 100-continue (raw
and with curl), and curl as a real client for large transfers."""
import hashlib
import os
import random
import subprocess
import tempfile
import threading
import unittest

from harness import (BallastTestCase, HttpConn, HttpOrigin, RawBackend, ok_response,
                     recv_request_head, sha256)

MB = 1 << 20


def hash_response(req):
    return ok_response(f"{len(req.body)} {sha256(req.body)}".encode())


def chunked(data, sizes, ext=b"", trailers=b""):
    out, i = [], 0
    while i < len(data):
        n = min(next(sizes), len(data) - i)
        out.append(b"%x%s\r\n%s\r\n" % (n, ext, data[i:i + n]))
        i += n
    return b"".join(out) + b"0\r\n" + trailers + b"\r\n"


def random_sizes(seed, lo=1, hi=65536):
    rnd = random.Random(seed)
    while True:
        yield rnd.randint(lo, hi)


class Bodies(BallastTestCase):
    def setup_proxy(self, respond=None, **kw):
        self.origin = self.track(HttpOrigin("o", respond=respond))
        _, self.port, self.admin = self.start_ballast([self.origin.address], **kw)
        return self.origin

    def send_in_thread(self, conn, data):
        t = threading.Thread(target=conn.send, args=(data,), daemon=True)
        t.start()
        return t

    # -- uploads -----------------------------------------------------------------------------------
    def test_content_length_upload_8mb(self):
        self.setup_proxy(hash_response)
        data = os.urandom(8 * MB)
        c = self.track(HttpConn(self.port, timeout=30))
        t = self.send_in_thread(c, b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data)
                                + data)
        r = c.read_response()
        t.join(30)
        self.assertEqual((r.status, r.body), (200, f"{len(data)} {sha256(data)}".encode()))
        self.assertEqual(self.origin.requests[0].header("content-length"), str(len(data)))

    def test_chunked_upload_8mb(self):
        self.setup_proxy(hash_response)
        data = os.urandom(8 * MB)
        c = self.track(HttpConn(self.port, timeout=30))
        t = self.send_in_thread(c, b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                + chunked(data, random_sizes(1)))
        r = c.read_response()
        t.join(30)
        self.assertEqual((r.status, r.body), (200, f"{len(data)} {sha256(data)}".encode()))

    def test_upload_then_more_requests_on_same_connection(self):
        self.setup_proxy(hash_response)
        c = self.track(HttpConn(self.port, timeout=30))
        for i, size in enumerate((0, 1, 65535, 65536, 65537, MB + 3)):
            data = os.urandom(size)
            if i % 2:
                body = chunked(data, random_sizes(i, 1, 9000)) if data else b"0\r\n\r\n"
                head = b"POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            else:
                body, head = data, b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
            t = self.send_in_thread(c, head + body)
            r = c.read_response()
            t.join(30)
            self.assertEqual(r.body, f"{size} {sha256(data)}".encode(), f"size {size}")

    def test_chunk_extensions_stripped_and_trailers_dropped_upstream(self):
        self.setup_proxy(hash_response)
        c = self.track(HttpConn(self.port))
        c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
               b"5;name=value;other\r\nhello\r\n6 ; q=\"a;b\"\r\n world\r\n0;last\r\n"
               b"X-Trailer: secret\r\nX-Other: 2\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.body, f"11 {sha256(b'hello world')}".encode())
        req = self.origin.requests[0]
        raw = self.origin.raw()
        self.assertNotIn(b";", req.raw_body, f"chunk extensions forwarded: {req.raw_body!r}")
        self.assertNotIn(b"X-Trailer: secret", raw, "trailer forwarded")
        self.assertNotIn(b"X-Other", raw, "trailer forwarded")
        self.assertTrue(req.raw_body.endswith(b"0\r\n\r\n"), req.raw_body)

    # -- downloads ---------------------------------------------------------------------------------
    def download(self, respond, size, expect_hash):
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port, timeout=30))
        for i in range(2):   # twice on one connection: the framing ends where it should
            c.request("GET", f"/d/{i}")
            h = hashlib.sha256()
            n = [0]

            def sink(b):
                h.update(b)
                n[0] += len(b)
            r = c.read_response(sink=sink)
            self.assertEqual(r.status, 200)
            self.assertEqual((n[0], h.hexdigest()), (size, expect_hash))
        return r

    def test_content_length_download_8mb(self):
        data = os.urandom(8 * MB)
        r = self.download(lambda req: ok_response(data), len(data), sha256(data))
        self.assertEqual(r.header("content-length"), str(len(data)))

    def test_chunked_download_8mb(self):
        data = os.urandom(8 * MB)
        body = chunked(data, random_sizes(2))
        self.download(lambda req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
                      len(data), sha256(data))

    def test_chunk_extensions_stripped_and_trailers_dropped_downstream(self):
        def respond(req):
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
                    b"5;ext=1\r\nhello\r\n6;a=\"b\"\r\n world\r\n0;end\r\nX-Digest: abc\r\n\r\n")
        self.setup_proxy(respond)
        c = self.track(HttpConn(self.port))
        for _ in range(2):
            c.request("GET", "/t")
            r = c.read_response()
            self.assertEqual(r.body, b"hello world")
            if r.chunked:
                self.assertFalse(any(b";" in line for line in r.chunk_lines), r.chunk_lines)
                self.assertEqual(r.trailers, b"")

    # -- Expect: 100-continue ----------------------------------------------------------------------
    def test_expect_100_continue_client_waits_for_100(self):
        self.setup_proxy(hash_response)
        data = os.urandom(MB)
        c = self.track(HttpConn(self.port, timeout=5))
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(data))
        try:
            r = c.read_response()
        except Exception as e:   # socket.timeout: nothing came
            self.fail(f"no 100 Continue before the body was sent: {e!r}")
        self.assertEqual(r.status, 100)
        t = self.send_in_thread(c, data)
        r = c.read_response()
        t.join(10)
        self.assertEqual((r.status, r.body), (200, f"{len(data)} {sha256(data)}".encode()))
        c.request("GET", "/after")
        self.assertEqual(c.read_response().status, 200)

    def test_expect_100_continue_final_status_without_body(self):
        # The server refuses before the body: the client gets the final status and need not send it.
        def serve(conn):
            head, _ = recv_request_head(conn)
            if head:
                conn.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        backend = self.track(RawBackend(serve))
        _, port, _ = self.start_ballast([backend.address])
        c = self.track(HttpConn(port, timeout=5))
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100000000\r\n\r\n")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (413, b"big"))

    def test_expect_100_continue_ignored_for_http10(self):
        # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored; a 1.0
        # client must never receive a 1xx response.
        self.setup_proxy(hash_response)
        c = self.track(HttpConn(self.port))
        c.send(b"POST /e HTTP/1.0\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, f"5 {sha256(b'hello')}".encode()))

    # -- curl --------------------------------------------------------------------------------------
    def curl(self, *args):
        p = subprocess.run(["curl", "-sS", "-v", "--http1.1", "--max-time", "30", *args],
                           capture_output=True, timeout=60)
        return p.returncode, p.stdout, p.stderr.decode(errors="replace")

    def test_curl_large_upload_with_expect_100(self):
        self.setup_proxy(hash_response)
        data = os.urandom(3 * MB)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            rc, out, err = self.curl("--expect100-timeout", "20", "-H", "Expect: 100-continue",
                                     "--data-binary", f"@{f.name}", f"http://127.0.0.1:{self.port}/curl")
        self.assertEqual(rc, 0, err)
        self.assertIn("HTTP/1.1 100", err, "curl did not receive 100 Continue")
        self.assertEqual(out, f"{len(data)} {sha256(data)}".encode())
        self.assertEqual(self.origin.requests[0].method, "POST")

    def test_curl_chunked_upload(self):
        self.setup_proxy(hash_response)
        data = os.urandom(2 * MB + 17)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            rc, out, err = self.curl("-H", "Transfer-Encoding: chunked", "-H", "Expect:", "-T", f.name,
                                     f"http://127.0.0.1:{self.port}/curl")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, f"{len(data)} {sha256(data)}".encode())
        self.assertEqual(self.origin.requests[0].header_list("transfer-encoding"), ["chunked"])

    def test_curl_download_chunked(self):
        data = os.urandom(8 * MB)
        body = chunked(data, random_sizes(3))
        self.setup_proxy(lambda req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "out")
            rc, _, err = self.curl("-o", path, f"http://127.0.0.1:{self.port}/big")
            self.assertEqual(rc, 0, err)
            with open(path, "rb") as f:
                self.assertEqual(sha256(f.read()), sha256(data))

    def test_curl_keepalive_reuses_connection(self):
        self.setup_proxy()
        url = f"http://127.0.0.1:{self.port}"
        rc, out, err = self.curl(f"{url}/a", f"{url}/b", f"{url}/c")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, b"o GET /ao GET /bo GET /c")
        self.assertIn("Re-using existing connection", err)


if __name__ == "__main__":
    unittest.main()
