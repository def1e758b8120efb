"""Retries (virtual_services[].retries, default 2): connect refused and connect timeout go to another
server (counted); a reset or an empty response is retried for idempotent requests only (GET, HEAD,
OPTIONS, PUT, DELETE with a body kept whole), never for POST, never for a chunked (streamed) body,
never once response bytes reached the client; the number of attempts is bounded."""
import os
import socket
import time
import unittest

from harness import (BlackholeListener, ConnectionClosed, HttpConn, HttpOrigin,
                     QuietBallastTestCase, RawBackend, http_get, metric, metrics,
                     recv_request_head, refused_address, reset_close, server_metric,
                     server_status, start_lb, status)

NO_OUTLIER = "{enabled: false}"     # ejections would change which servers are tried


class Misbehaving:
    """A server that reads each request whole (Content-Length or chunked body), records
    (method, path, body), then misbehaves: "reset" (RST, no response), "close" (FIN, no response)
    or "half" (a 200 head announcing 100 bytes, 50 of them, then RST)."""

    def __init__(self, mode="reset"):
        self.mode = mode
        self.requests = []
        self.raw = RawBackend(self._serve)
        self.port, self.address = self.raw.port, self.raw.address

    @property
    def connections(self):
        return self.raw.connections

    def _serve(self, conn):
        head, buf = recv_request_head(conn)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        body = b""
        if "chunked" in fields.get("transfer-encoding", ""):
            while not buf.endswith(b"0\r\n\r\n"):
                d = conn.recv(65536)
                if not d:
                    break
                buf += d
            body = _dechunk(buf)
        elif fields.get("content-length"):
            n = int(fields["content-length"])
            while len(buf) < n:
                d = conn.recv(65536)
                if not d:
                    break
                buf += d
            body = buf[:n]
        self.requests.append((method, path, body))
        if self.mode == "close":
            conn.close()
        elif self.mode == "half":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
            time.sleep(0.3)   # the head and half the body reach the client first
            reset_close(conn)
        else:
            reset_close(conn)

    def paths(self):
        return [p for _, p, _ in self.requests]

    def close(self):
        self.raw.close()


def _dechunk(data):
    out = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2:]


def one_request(port, method, target, body=None, headers=None):
    """A request on a new connection: (status, body), or (None, (status of the head or None,
    what was received of the head or body)) when the connection was cut."""
    with HttpConn(port, timeout=10) as c:
        c.request(method, target, headers, body)
        r = None
        try:
            r = c.read_head()
            c.read_body(r, method, None)
            return r.status, r.body
        except ConnectionClosed as e:
            return None, (r.status if r else None, r.body if r else e.data)


VS_RETRIES = 'ballast_vs_retries_total{vs="vs"}'


class ConnectFailures(QuietBallastTestCase):
    def test_connect_refused_goes_to_another_server_and_is_counted(self):
        good = self.track(HttpOrigin("good"))
        dead = refused_address()
        b, port, admin = start_lb(self, [dead, good.address], outlier=NO_OUTLIER)
        for i in range(10):
            self.assertEqual(one_request(port, "GET", f"/g{i}"), (200, f"good GET /g{i}".encode()))
        # nothing was sent to the refused server, so even a POST with a body goes on
        for i in range(4):
            self.assertEqual(one_request(port, "POST", f"/p{i}", body=b"data-%d" % i)[0], 200)
        self.assertEqual([q.body for q in good.requests if q.method == "POST"],
                         [b"data-%d" % i for i in range(4)])
        m = metrics(admin)
        refused = m[server_metric("ballast_server_errors_total", dead, extra=',kind="connect_refused"')]
        self.assertGreaterEqual(refused, 7)   # at least every other request tried it first
        self.assertEqual(m[VS_RETRIES], refused)
        self.assertEqual(m[server_metric("ballast_server_retries_total", dead)], refused)
        self.assertEqual(m[server_metric("ballast_server_retries_total", good.address)], 0)
        self.assertEqual(status(admin)["virtual_services"][0]["retries"], refused)
        self.assertEqual(server_status(admin, dead)["retries"], refused)

    def test_retries_zero_answers_503(self):
        good = self.track(HttpOrigin("good"))
        dead = refused_address()
        b, port, admin = start_lb(self, [dead, good.address], retries=0, outlier=NO_OUTLIER)
        statuses = [one_request(port, "GET", f"/{i}")[0] for i in range(10)]
        self.assertEqual(sorted(statuses), [200] * 5 + [503] * 5)
        self.assertEqual(metric(admin, VS_RETRIES), 0)
        self.assertEqual(len(good.requests), 5)

    def test_connect_timeout_goes_to_another_server(self):
        good = self.track(HttpOrigin("good"))
        hole = self.track(BlackholeListener())
        b, port, admin = start_lb(self, [hole.address, good.address],
                                  timeouts="{connect: 200ms}", outlier=NO_OUTLIER)
        for i in range(4):
            self.assertEqual(one_request(port, "GET", f"/{i}")[0], 200)
        self.assertGreaterEqual(metric(admin, server_metric(
            "ballast_server_errors_total", hole.address, extra=',kind="connect_timeout"')), 2)
        self.assertGreaterEqual(metric(admin, VS_RETRIES), 2)


class ResetBeforeResponse(QuietBallastTestCase):
    def setup_pair(self, mode="reset", **kw):
        self.bad = self.track(Misbehaving(mode))
        self.good = self.track(HttpOrigin("good"))
        return start_lb(self, [self.bad.address, self.good.address], outlier=NO_OUTLIER, **kw)

    def good_paths(self):
        return [q.target for q in self.good.requests]

    def test_idempotent_methods_retried_on_reset(self):
        _, port, admin = self.setup_pair()
        for method in ("GET", "HEAD", "OPTIONS", "DELETE", "GET", "HEAD", "OPTIONS", "DELETE"):
            st, _ = one_request(port, method, f"/{method.lower()}-{len(self.good.requests)}")
            self.assertEqual(st, 200, method)
        self.assertGreaterEqual(len(self.bad.requests), 4)
        for m, p, _ in self.bad.requests:   # each one tried at the resetting server went on
            self.assertIn(p, self.good_paths())
        self.assertEqual(metric(admin, VS_RETRIES), len(self.bad.requests))

    def test_post_is_not_retried_after_a_reset(self):
        _, port, admin = self.setup_pair()
        outcomes = {f"/post{i}": one_request(port, "POST", f"/post{i}", body=b"once")[0]
                    for i in range(8)}
        at_bad = set(self.bad.paths())
        self.assertGreaterEqual(len(at_bad), 2)
        for path, st in outcomes.items():
            if path in at_bad:
                self.assertEqual(st, 502, path)
                self.assertNotIn(path, self.good_paths(), f"{path} replayed")
            else:
                self.assertEqual(st, 200, path)
        self.assertEqual(metric(admin, VS_RETRIES), 0)

    def test_empty_close_retried_for_get_not_for_post(self):
        _, port, _ = self.setup_pair("close")
        for i in range(6):
            self.assertEqual(one_request(port, "GET", f"/g{i}")[0], 200)
        posts = {f"/p{i}": one_request(port, "POST", f"/p{i}", body=b"x")[0] for i in range(6)}
        for path, st in posts.items():
            if path in self.bad.paths():
                self.assertEqual(st, 502)
                self.assertNotIn(path, self.good_paths())

    def test_put_and_delete_bodies_resent_whole(self):
        _, port, _ = self.setup_pair()
        bodies = {}
        for i in range(8):
            method = "PUT" if i % 2 else "DELETE"
            body = os.urandom(1000 + i)
            bodies[f"/r{i}"] = body
            self.assertEqual(one_request(port, method, f"/r{i}", body=body)[0], 200, method)
        got = {q.target: q.body for q in self.good.requests}
        self.assertEqual(got, bodies)
        self.assertGreaterEqual(len(self.bad.requests), 3)
        for m, p, body in self.bad.requests:   # the first attempt had the same bytes
            self.assertEqual(body, bodies[p])

    def test_chunked_bodies_never_retried(self):
        _, port, _ = self.setup_pair()
        outcomes = {}
        for i in range(8):
            method = "PUT" if i % 2 else "POST"
            outcomes[f"/c{i}"] = (method, one_request(
                port, method, f"/c{i}", body=b"5\r\nhello\r\n0\r\n\r\n",
                headers=[("Transfer-Encoding", "chunked")])[0])
        at_bad = set(self.bad.paths())
        self.assertGreaterEqual(len(at_bad), 2)
        for path, (method, st) in outcomes.items():
            if path in at_bad:
                self.assertEqual(st, 502, f"{method} {path}")
                self.assertNotIn(path, self.good_paths(), f"chunked {method} {path} replayed")
            else:
                self.assertEqual(st, 200)

    def test_no_retry_once_the_response_started(self):
        _, port, admin = self.setup_pair("half")
        cut = []
        for i in range(6):
            st, data = one_request(port, "GET", f"/h{i}")
            if st is None:
                cut.append((f"/h{i}", data))
            else:
                self.assertEqual(st, 200)
        self.assertGreaterEqual(len(cut), 2)
        for path, (head_status, body) in cut:
            self.assertEqual(head_status, 200, f"{path}: the response head did not reach the client")
            self.assertNotIn(path, self.good_paths(), "retried after response bytes were sent")
        self.assertEqual(sorted(p for p, _ in cut), sorted(self.bad.paths()))
        self.assertEqual(metric(admin, VS_RETRIES), 0)


class Bounded(QuietBallastTestCase):
    def attempts_per_request(self, retries):
        bad = [self.track(Misbehaving()) for _ in range(3)]
        _, port, admin = start_lb(self, [x.address for x in bad], outlier=NO_OUTLIER,
                                  retries=retries)
        for i in range(3):
            self.assertEqual(one_request(port, "GET", f"/{i}")[0], 502)
        return sum(x.connections for x in bad) / 3, metric(admin, VS_RETRIES)

    def test_retries_1_means_two_attempts(self):
        self.assertEqual(self.attempts_per_request(1), (2, 3))

    def test_default_retries_means_three_attempts(self):
        self.assertEqual(self.attempts_per_request(None), (3, 6))

    def test_retries_0_means_one_attempt(self):
        self.assertEqual(self.attempts_per_request(0), (1, 0))

    def test_each_server_tried_at_most_once(self):
        # retries: 5 with 3 servers: every server once, then 502
        bad = [self.track(Misbehaving()) for _ in range(3)]
        _, port, _ = start_lb(self, [x.address for x in bad], outlier=NO_OUTLIER, retries=5)
        self.assertEqual(one_request(port, "GET", "/once")[0], 502)
        self.assertEqual([x.connections for x in bad], [1, 1, 1])


if __name__ == "__main__":
    unittest.main()
