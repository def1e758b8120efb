"""Active health monitors (health_monitors, pools[].health_monitors): a backend killed under load
(no failed GET, server_down within fall x interval, back within rise x interval after a restart),
every server down (HTTP 503, TCP refused, pool_down / pool_up), the initial state, http checks
(status codes and classes, body substring, timeout, request line, Host, port), tcp checks, all
monitors must pass, checks spread over the interval and not repeated per worker, and the
ballast_server_healthy / ballast_server_up gauges."""
import os
import socket
import threading
import time
import unittest

from harness import (BackendProcess, ClientLoad, HttpBackend, QuietBallastTestCase, RawBackend,
                     ballast_events, event_epoch, http_get, metric, metrics, peer_closed,
                     recv_request_head, refused_address, server_metric, server_status, start_lb,
                     status, wait_events, wait_until)

DETECTION = {}   # measured figures, printed at the end


def health_backend(name, health=lambda: (200, b"ok"), seen=None):
    """An in-process backend: /health* answers health() -> (status, body) (it may sleep);
    anything else answers "NAME METHOD PATH". seen: a list that gets (time, method, path, host)
    of every health request."""
    def handler(req, body):
        if req.path.startswith("/health") or req.path.startswith("/ready"):
            if seen is not None:
                seen.append((time.monotonic(), req.command, req.path, req.headers.get("Host")))
            st, payload = health()
            return st, {}, payload
        return 200, {}, f"{name} {req.command} {req.path}".encode()
    return HttpBackend(name, handler)


class Flag:
    """A switchable health answer."""

    def __init__(self, status=200, body=b"ok", delay=0.0):
        self.status, self.body, self.delay = status, body, delay

    def __call__(self):
        if self.delay:
            time.sleep(self.delay)
        return self.status, self.body


def monitor(name="hc", type_="http", interval="300ms", timeout="200ms", rise=2, fall=3, **kw):
    parts = [f"name: {name}", f"type: {type_}", f"interval: {interval}", f"timeout: {timeout}",
             f"rise: {rise}", f"fall: {fall}"]
    for k, v in kw.items():
        parts.append(f"{k}: {v}")
    return "{" + ", ".join(parts) + "}"


class KillUnderLoad(QuietBallastTestCase):
    def test_kill_and_restart_a_backend_under_load(self):
        interval, fall, rise, timeout = 0.5, 3, 2, 0.3
        backs = [self.track(BackendProcess(n)) for n in "abc"]
        victim = backs[2]
        started = time.monotonic()
        b, port, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor(interval="500ms", timeout="300ms", rise=rise, fall=fall,
                                     request='"GET /health"', expect="[200]")],
            pool_monitors=["hc"], outlier="{enabled: false}")
        # Every server has passed a check (the first comes within one interval): from now on it
        # takes `fall` failures to go down.
        time.sleep(max(0.0, started + 2 * interval - time.monotonic()))
        load = self.track_load(ClientLoad(port, threads=4, pause=0.002))
        wait_until(lambda: load.served_by("c") >= 20, 10, message="traffic on c")

        killed_at = time.time()
        victim.kill()
        down = wait_events(b, "server_down", timeout=10, server=victim.address)[0]
        detect_down = event_epoch(down) - killed_at
        self.assertEqual(down["pool"], "p")
        self.assertEqual(down["monitor"], "hc")
        self.assertTrue(down["reason"].startswith(f"fall {fall}/{fall}: "), down)
        self.assertIn("refused", down["reason"])
        self.assertLessEqual(detect_down, fall * interval + timeout + 1.5,
                             f"down after {detect_down:.2f}s")
        self.assertGreaterEqual(detect_down, (fall - 1) * interval - 0.05,
                                f"down after {detect_down:.2f}s: fewer than {fall} checks?")
        st = status(admin)
        self.assertIn(down, st["events"], "the event is not in /status")
        health = server_status(admin, victim.address)["health"]
        self.assertEqual((health["state"], health["healthy"]), ("down", False), health)
        self.assertEqual(health["reason"], down["reason"])
        self.assertEqual(metric(admin, server_metric("ballast_server_healthy", victim.address)), 0)
        self.assertEqual(metric(admin, server_metric("ballast_server_up", victim.address)), 0)
        # a down server gets no attempts at all
        key = server_metric("ballast_server_requests_total", victim.address)
        before = metric(admin, key)
        time.sleep(0.7)
        self.assertEqual(metric(admin, key), before, "attempts sent to a down server")

        victim.start()
        restarted_at, restarted_mono = time.time(), time.monotonic()
        up = wait_events(b, "server_up", timeout=10, server=victim.address)[0]
        detect_up = event_epoch(up) - restarted_at
        self.assertEqual(up["reason"], f"rise {rise}/{rise}")
        self.assertLessEqual(detect_up, rise * interval + timeout + 1.5, f"up after {detect_up:.2f}s")
        self.assertGreaterEqual(detect_up, (rise - 1) * interval - 0.05,
                                f"up after {detect_up:.2f}s: fewer than {rise} checks?")
        wait_until(lambda: load.served_by("c", since=restarted_mono) >= 20, 10,
                   message="traffic back on c")
        health = server_status(admin, victim.address)["health"]
        self.assertEqual((health["state"], health["healthy"], health["reason"]),
                         ("up", True, f"rise {rise}/{rise}"))
        results = load.stop()
        failures = [r for r in results if r[1] != 200]
        DETECTION["kill"] = (f"kill -> server_down {detect_down:.2f}s (fall {fall} x {interval}s), "
                             f"restart -> server_up {detect_up:.2f}s (rise {rise} x {interval}s); "
                             f"{len(results)} GETs, {len(failures)} failed")
        self.assertEqual(failures[:10], [], f"{len(failures)} of {len(results)} GETs failed")

    def track_load(self, load):
        self._stoppers.append(load.stop)
        return load

    def test_killed_backend_with_default_outlier_detection_comes_back(self):
        # With outlier detection on (the default), the killed server may also be ejected by the
        # refused connections before the monitor takes it down. Once it is up again (server_up),
        # it must get traffic again, not sit out a 30 s ejection.
        backs = [self.track(BackendProcess(n)) for n in "abc"]
        victim = backs[2]
        b, port, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor(interval="500ms", request='"GET /health"')],
            pool_monitors=["hc"])
        time.sleep(1.0)
        load = ClientLoad(port, threads=4, pause=0.002)
        self._stoppers.append(load.stop)
        wait_until(lambda: load.served_by("c") >= 20, 10, message="traffic on c")
        victim.kill()
        wait_events(b, "server_down", timeout=10, server=victim.address)
        victim.start()
        t = time.monotonic()
        wait_events(b, "server_up", timeout=10, server=victim.address)
        deadline = time.monotonic() + 8
        while load.served_by("c", since=t) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        results = load.stop()
        self.assertGreater(load.served_by("c", since=t), 0,
                           "no traffic to the restarted server 8 s after server_up; its health: "
                           f"{server_status(admin, victim.address)['health']}; events: "
                           f"{ballast_events(b)}")
        self.assertEqual([r for r in results if r[1] != 200][:10], [])


class AllDown(QuietBallastTestCase):
    def test_http_all_servers_down_503_then_back(self):
        flags = [Flag(), Flag()]
        seen = [[], []]
        backs = [self.track(health_backend(n, f, s)) for n, f, s in zip("ab", flags, seen)]
        b, port, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor(interval="200ms", rise=2, fall=2, request='"GET /health"')],
            pool_monitors=["hc"])
        self.assertEqual(http_get(port, "/x").status, 200)
        wait_until(lambda: seen[0] and seen[1], 10, message="a first (passing) check of each")
        time.sleep(0.1)
        for f in flags:
            f.status = 500
        ev = wait_events(b, "pool_down", timeout=10)[0]
        self.assertEqual((ev["pool"], ev["reason"]), ("p", "no server is up"))
        for x in backs:
            down = ballast_events(b, "server_down", server=x.address)
            self.assertEqual(down[0]["reason"], "fall 2/2: HTTP 500", down)
        counts = [len(x.requests) for x in backs]
        for i in range(5):
            r = http_get(port, f"/while-down{i}")
            self.assertEqual(r.status, 503)
            self.assertLess(len(r.body), 512, r.body)
        self.assertEqual(status(admin)["pools"][0]["state"], "down")
        # health checks go on, but no request reached a server
        for x, n in zip(backs, counts):
            self.assertEqual([q for q in x.requests[n:] if not q[1].startswith("/health")], [])

        flags[1].status = 200
        wait_events(b, "pool_up", timeout=10)
        up = wait_events(b, "server_up", timeout=1, server=backs[1].address)[0]
        self.assertEqual(up["reason"], "rise 2/2")
        for i in range(4):
            r = http_get(port, f"/back{i}")
            self.assertEqual((r.status, r.body), (200, f"b GET /back{i}".encode()))
        self.assertEqual(status(admin)["pools"][0]["state"], "up")

    def test_tcp_all_servers_down_refuses_then_back(self):
        backs = [self.track(BackendProcess(n)) for n in "ab"]
        b, port, admin = start_lb(
            self, [x.address for x in backs], protocol="tcp",
            health_monitors=[monitor(type_="tcp", interval="200ms", timeout="100ms", rise=2,
                                     fall=2)],
            pool_monitors=["hc"])
        self.assertIn(b"hello from backend", self.tcp_get(port))
        for x in backs:
            x.kill()
        wait_events(b, "pool_down", timeout=10)
        for _ in range(3):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                outcome = peer_closed(s, 5)
            except ConnectionResetError:
                outcome = "reset"
            finally:
                s.close()
            self.assertEqual(outcome, "reset", "a new connection was not refused")
        backs[0].start()
        wait_events(b, "pool_up", timeout=10)
        self.assertIn(b"hello from backend a", self.tcp_get(port))

    @staticmethod
    def tcp_get(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    return data
                data += d


class Checks(QuietBallastTestCase):
    def test_server_never_started_goes_down_on_its_first_check(self):
        live = self.track(BackendProcess("a"))
        dead = refused_address()
        started = time.time()
        b, port, admin = start_lb(
            self, [live.address, dead],
            health_monitors=[monitor(interval="1s", timeout="500ms", fall=5, rise=2)],
            pool_monitors=["hc"])
        for i in range(6):   # meanwhile nothing fails: retries
            self.assertEqual(http_get(port, f"/{i}").status, 200)
        ev = wait_events(b, "server_down", timeout=10, server=dead)[0]
        took = event_epoch(ev) - started
        DETECTION["initial"] = f"never-started server down {took:.2f}s after start (interval 1s, fall 5)"
        self.assertTrue(ev["reason"].startswith("fall 1/1 (initial): "), ev)
        self.assertIn("refused", ev["reason"])
        self.assertLess(took, 1.0 + 0.5 + 1.5, "not down at its first check (fall 5 x 1s = 5s)")
        self.assertEqual(server_status(admin, dead)["health"]["state"], "down")
        self.assertEqual(server_status(admin, live.address)["health"]["state"], "up")
        self.assertEqual(ballast_events(b, "server_down", server=live.address), [])

    def test_http_expect_codes_and_classes(self):
        answers = {"ok": Flag(200), "nocontent": Flag(204), "redirect": Flag(302)}
        backs = {n: self.track(health_backend(n, f)) for n, f in answers.items()}
        b, port, admin = start_lb(
            self, [x.address for x in backs.values()],
            health_monitors=[monitor(interval="200ms", rise=1, fall=1, request='"GET /health"',
                                     expect='["2xx"]')],
            pool_monitors=["hc"])
        ev = wait_events(b, "server_down", timeout=10, server=backs["redirect"].address)[0]
        self.assertEqual(ev["reason"], "fall 1/1 (initial): HTTP 302")
        time.sleep(0.8)   # four more checks: 200 and 204 stay up
        self.assertEqual(len(ballast_events(b, "server_down")), 1, ballast_events(b))
        answers["redirect"].status = 299
        wait_events(b, "server_up", timeout=10, server=backs["redirect"].address)
        answers["ok"].status = 500
        ev = wait_events(b, "server_down", timeout=10, server=backs["ok"].address)[0]
        self.assertEqual(ev["reason"], "fall 1/1: HTTP 500")

    def test_http_expect_exact_code(self):
        answers = [Flag(200), Flag(204)]
        backs = [self.track(health_backend(n, f)) for n, f in zip("ab", answers)]
        b, _, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor(interval="200ms", rise=1, fall=2, request='"GET /health"',
                                     expect="[200, 3xx]")],
            pool_monitors=["hc"])
        ev = wait_events(b, "server_down", timeout=10, server=backs[1].address)[0]
        self.assertEqual(ev["reason"], "fall 1/1 (initial): HTTP 204")
        answers[1].status = 301
        wait_events(b, "server_up", timeout=10, server=backs[1].address)
        self.assertEqual(ballast_events(b, "server_down", server=backs[0].address), [])

    def test_http_body_substring(self):
        answers = [Flag(200, b"status: healthy\n"), Flag(200, b"status: sick\n")]
        backs = [self.track(health_backend(n, f)) for n, f in zip("ab", answers)]
        b, port, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor(interval="200ms", rise=2, fall=2, request='"GET /health"',
                                     body="healthy")],
            pool_monitors=["hc"])
        ev = wait_events(b, "server_down", timeout=10, server=backs[1].address)[0]
        self.assertTrue(ev["reason"].startswith("fall 1/1 (initial): "), ev)
        self.assertIn("healthy", ev["reason"])
        for i in range(4):
            self.assertEqual(http_get(port, f"/{i}").body, f"a GET /{i}".encode())
        answers[1].body = b"now healthy again"
        wait_events(b, "server_up", timeout=10, server=backs[1].address)
        self.assertEqual(ballast_events(b, "server_down", server=backs[0].address), [])

    def test_http_timeout(self):
        delay = [0.0]

        def serve(conn):   # keep-alive; /health answers after delay[0] seconds
            buf = b""
            while True:
                head, buf = recv_request_head(conn, buf)
                if head is None:
                    return
                path = head.split(b" ")[1]
                if path.startswith(b"/health") and delay[0]:
                    time.sleep(delay[0])
                body = b"ok" if path.startswith(b"/health") else b"a " + path
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        a = self.track(RawBackend(serve))
        b, port, admin = start_lb(
            self, [a.address],
            health_monitors=[monitor(interval="400ms", timeout="200ms", rise=2, fall=2,
                                     request='"GET /health"')],
            pool_monitors=["hc"])
        time.sleep(1.0)   # confirmed up by a few good checks
        self.assertEqual(ballast_events(b, "server_down"), [])
        delay[0] = 0.6
        t = time.time()
        ev = wait_events(b, "server_down", timeout=10)[0]
        self.assertTrue(ev["reason"].startswith("fall 2/2: "), ev)
        self.assertIn("timeout", ev["reason"])
        self.assertLess(event_epoch(ev) - t, 2 * 0.4 + 0.2 + 1.5)
        self.assertEqual(http_get(port, "/").status, 503)
        delay[0] = 0
        wait_events(b, "server_up", timeout=10)
        self.assertEqual(http_get(port, "/").status, 200)

    def test_http_request_line_host_and_port(self):
        seen, seen_other = [], []
        a = self.track(health_backend("a", seen=seen))
        health = Flag(200)
        other = self.track(health_backend("h", health, seen=seen_other))
        b, port, admin = start_lb(
            self, [a.address],
            health_monitors=[monitor(interval="200ms", rise=1, fall=1,
                                     request='"HEAD /ready?full=1"', host="health.example:8080",
                                     port=other.port)],
            pool_monitors=["hc"])
        wait_until(lambda: len(seen_other) >= 2, 10, message="checks on the monitor port")
        self.assertEqual(seen, [], "checked the traffic port instead of the monitor's port")
        _, method, path, host = seen_other[0]
        self.assertEqual((method, path, host), ("HEAD", "/ready?full=1", "health.example:8080"))
        health.status = 503    # the traffic port is fine, but the monitor's port decides
        ev = wait_events(b, "server_down", timeout=10)[0]
        self.assertEqual(ev["reason"], "fall 1/1: HTTP 503")
        self.assertEqual(http_get(port, "/").status, 503)

    def test_default_host_is_the_server_address(self):
        seen = []
        a = self.track(health_backend("a", seen=seen))
        start_lb(self, [a.address],
                 health_monitors=[monitor(interval="200ms", request='"GET /health"')],
                 pool_monitors=["hc"])
        wait_until(lambda: seen, 10)
        self.assertEqual(seen[0][3], a.address)

    def test_tcp_monitor(self):
        live = self.track(BackendProcess("a"))
        later = BackendProcess("b")
        self.track(later)
        later.kill()
        b, port, admin = start_lb(
            self, [live.address, later.address],
            health_monitors=[monitor(type_="tcp", interval="200ms", timeout="100ms", rise=2,
                                     fall=2)],
            pool_monitors=["hc"])
        ev = wait_events(b, "server_down", timeout=10, server=later.address)[0]
        self.assertEqual(ev["reason"], "fall 1/1 (initial): connect refused")
        later.start()
        ev = wait_events(b, "server_up", timeout=10, server=later.address)[0]
        self.assertEqual(ev["reason"], "rise 2/2")
        self.assertEqual(ballast_events(b, "server_down", server=live.address), [])

    def test_all_monitors_of_a_pool_must_pass(self):
        answers = [Flag(200, b"ok"), Flag(200, b"degraded")]
        backs = [self.track(health_backend(n, f)) for n, f in zip("ab", answers)]
        b, port, admin = start_lb(
            self, [x.address for x in backs],
            health_monitors=[monitor("tcp-up", type_="tcp", interval="200ms", timeout="100ms"),
                             monitor("body-ok", interval="200ms", request='"GET /health"',
                                     body="ok", fall=1, rise=1)],
            pool_monitors=["tcp-up", "body-ok"])
        ev = wait_events(b, "server_down", timeout=10, server=backs[1].address)[0]
        self.assertEqual(ev["monitor"], "body-ok")
        self.assertEqual(status(admin)["pools"][0]["health_monitors"], ["tcp-up", "body-ok"])
        for i in range(4):
            self.assertEqual(http_get(port, f"/{i}").body, f"a GET /{i}".encode())

    def test_checks_spread_over_the_interval_and_shared_by_workers(self):
        seen = {}
        backs = []
        for i in range(10):
            seen[i] = []
            backs.append(self.track(health_backend(f"s{i}", seen=seen[i])))
        start = time.monotonic()
        start_lb(self, [x.address for x in backs], workers=2,
                 health_monitors=[monitor(interval="1s", timeout="500ms",
                                          request='"GET /health"')],
                 pool_monitors=["hc"])
        wait_until(lambda: all(seen[i] for i in seen), 5, message="every server checked")
        firsts = sorted(seen[i][0][0] - start for i in seen)
        self.assertGreater(firsts[-1] - firsts[0], 0.3,
                           f"first checks not spread over the interval: {firsts}")
        time.sleep(3)
        counts = [len(seen[i]) for i in seen]
        # about one check per interval per server, not one per worker
        self.assertLessEqual(max(counts), 5, counts)
        self.assertGreaterEqual(min(counts), 2, counts)


class Gauges(QuietBallastTestCase):
    def test_healthy_and_up_gauges(self):
        up, disabled = (self.track(health_backend(n)) for n in "ab")
        down = refused_address()
        b, port, admin = start_lb(
            self, [up.address, {"address": disabled.address, "enabled": False}, down],
            health_monitors=[monitor(interval="200ms", request='"GET /health"')],
            pool_monitors=["hc"])
        wait_events(b, "server_down", timeout=10, server=down)
        m = metrics(admin)
        got = {a: (m[server_metric("ballast_server_healthy", a)], m[server_metric("ballast_server_up", a)])
               for a in (up.address, disabled.address, down)}
        self.assertEqual(got, {up.address: (1, 1), disabled.address: (1, 0), down: (0, 0)})
        self.assertEqual(m['ballast_pool_servers_up{pool="p"}'], 1)
        st = server_status(admin, disabled.address)["health"]
        self.assertEqual((st["state"], st["healthy"]), ("disabled", True))


def tearDownModule():
    if DETECTION:
        print("\n  health detection: " + "; ".join(f"{k}: {v}" for k, v in DETECTION.items()),
              flush=True)


if __name__ == "__main__":
    unittest.main()
