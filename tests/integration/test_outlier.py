"""Passive health (pools[].outlier_detection): a server that resets every connection is ejected
after consecutive gateway failures without a client error (retries), comes back after
base_ejection_time, and a second ejection lasts twice as long (capped by max_ejection_time);
consecutive 5xx; a hung server (SIGSTOP) with short server timeouts; max_ejection_percent and the
panic threshold; a one-server pool is never ejected; enabled: false."""
import socket
import threading
import time
import unittest

from harness import (BackendProcess, ClientLoad, HttpConn, HttpOrigin, QuietBallastTestCase,
                     RawBackend, ballast_events, event_epoch, http_get, metric, metrics,
                     ok_response, recv_request_head, reset_close, server_metric, server_status,
                     start_lb, wait_events, wait_until)

FIGURES = {}


class Resetter:
    """A backend that accepts, reads the request and resets the connection; it can be switched
    to answering 200 ("NAME GET /path"). Records the time of every connection."""

    def __init__(self, name="bad"):
        self.name = name
        self.times = []
        self.healthy = False
        self.raw = RawBackend(self._serve)
        self.port, self.address = self.raw.port, self.raw.address

    def _serve(self, conn):
        self.times.append(time.time())
        buf = b""
        while True:
            head, buf = recv_request_head(conn, buf)
            if head is None:
                return
            if not self.healthy:
                reset_close(conn)
                return
            path = head.split(b" ")[1].decode()
            conn.sendall(ok_response(f"{self.name} GET {path}".encode()))

    def connections_after(self, t):
        return [x for x in self.times if x > t]

    def close(self):
        self.raw.close()


class Ejection(QuietBallastTestCase):
    def test_resetting_server_ejected_then_back_then_longer(self):
        good = [self.track(HttpOrigin(n)) for n in "abc"]
        bad = self.track(Resetter())
        b, port, admin = start_lb(
            self, [o.address for o in good] + [bad.address],
            outlier="{base_ejection_time: 1s, max_ejection_time: 10s}")
        load = ClientLoad(port, threads=2, pause=0.005)
        self._stoppers.append(load.stop)

        first = wait_events(b, "server_ejected", timeout=10, server=bad.address)[0]
        self.assertEqual((first["pool"], first["reason"], first["ejections"], first["for_ms"]),
                         ("p", "5 consecutive gateway failures", "1", "1000"), first)
        m = metrics(admin)
        self.assertEqual(m[server_metric("ballast_server_ejected", bad.address)], 1)
        self.assertEqual(m[server_metric("ballast_server_ejections_total", bad.address)], 1)
        self.assertEqual(m[server_metric("ballast_server_up", bad.address)], 0)
        health = server_status(admin, bad.address)["health"]
        self.assertEqual((health["state"], health["ejected"], health["healthy"]),
                         ("ejected", True, True), health)
        t1 = event_epoch(first)
        back1 = wait_until(lambda: bad.connections_after(t1 + 0.01), 10,
                           message="a new attempt after the first ejection")[0] - t1

        second = wait_events(b, "server_ejected", count=2, timeout=10, server=bad.address)[1]
        self.assertEqual((second["reason"], second["ejections"], second["for_ms"]),
                         ("5 consecutive gateway failures", "2", "2000"), second)
        t2 = event_epoch(second)
        back2 = wait_until(lambda: bad.connections_after(t2 + 0.01), 10,
                           message="a new attempt after the second ejection")[0] - t2
        results = load.stop()
        self.assertEqual(metric(admin, server_metric("ballast_server_ejections_total",
                                                     bad.address)), 2)
        failures = [r for r in results if r[1] != 200]
        FIGURES["reset"] = (f"resetting server: ejections lasted {back1:.2f}s and {back2:.2f}s "
                            f"(base 1s); {len(results)} GETs, {len(failures)} failed")
        self.assertEqual(failures[:10], [], f"{len(failures)} of {len(results)} GETs failed")
        self.assertTrue(0.95 <= back1 <= 2.0, f"first ejection lasted {back1:.2f}s, not 1s")
        self.assertTrue(1.95 <= back2 <= 3.0, f"second ejection lasted {back2:.2f}s, not 2s")

    def test_ejection_time_capped_by_max_ejection_time(self):
        good = [self.track(HttpOrigin(n)) for n in "abc"]
        bad = self.track(Resetter())
        b, port, admin = start_lb(
            self, [o.address for o in good] + [bad.address],
            outlier="{base_ejection_time: 300ms, max_ejection_time: 500ms}")
        load = ClientLoad(port, threads=2, pause=0.005)
        self._stoppers.append(load.stop)
        events = wait_events(b, "server_ejected", count=3, timeout=15, server=bad.address)
        results = load.stop()
        self.assertEqual([e["for_ms"] for e in events[:3]], ["300", "500", "500"])
        self.assertEqual([r for r in results if r[1] != 200][:10], [])

    def test_consecutive_5xx(self):
        good = [self.track(HttpOrigin(n)) for n in "ab"]
        bad = self.track(HttpOrigin("bad", respond=lambda req: ok_response(b"oops", status=500)))
        b, port, admin = start_lb(
            self, [o.address for o in good] + [bad.address],
            outlier="{consecutive_5xx: 3, base_ejection_time: 2s}")
        statuses = []
        with HttpConn(port) as c:
            for i in range(9):
                c.request("GET", f"/{i}")
                statuses.append(c.read_response().status)
            ev = wait_events(b, "server_ejected", timeout=5, server=bad.address)[0]
            self.assertEqual(ev["reason"], "3 consecutive 5xx")
            # 5xx responses are responses: passed on, not retried
            self.assertEqual(statuses.count(500), 3, statuses)
            seen = len(bad.requests)
            for i in range(12):
                c.request("GET", f"/after{i}")
                self.assertEqual(c.read_response().status, 200)
        self.assertEqual(len(bad.requests), seen, "requests sent to an ejected server")

    def test_successes_in_between_reset_the_count(self):
        n = [0]

        def flaky(req):   # 500, 200, 500, 200...
            n[0] += 1
            return ok_response(b"flaky", status=500 if n[0] % 2 else 200)
        good = self.track(HttpOrigin("a"))
        bad = self.track(HttpOrigin("bad", respond=flaky))
        b, port, admin = start_lb(self, [good.address, bad.address],
                                  outlier="{consecutive_5xx: 2, base_ejection_time: 5s}")
        with HttpConn(port) as c:
            for i in range(40):
                c.request("GET", f"/{i}")
                c.read_response()
        self.assertEqual(len(bad.requests), 20)
        self.assertEqual(ballast_events(b, "server_ejected"), [])

    def test_disabled_never_ejects(self):
        good = [self.track(HttpOrigin(n)) for n in "ab"]
        bad = self.track(Resetter())
        b, port, admin = start_lb(self, [o.address for o in good] + [bad.address],
                                  outlier="{enabled: false}")
        with HttpConn(port) as c:
            for i in range(30):
                c.request("GET", f"/{i}")
                self.assertEqual(c.read_response().status, 200)
        self.assertGreaterEqual(len(bad.times), 10)   # it keeps getting its turns
        self.assertEqual(ballast_events(b, "server_ejected"), [])
        self.assertEqual(metric(admin, server_metric("ballast_server_ejected", bad.address)), 0)


class HungServer(QuietBallastTestCase):
    def test_sigstopped_server_times_out_retried_then_ejected(self):
        backs = [self.track(BackendProcess(n)) for n in "abc"]
        hung = backs[2]
        b, port, admin = start_lb(self, [x.address for x in backs],
                                  timeouts="{server: 500ms}",
                                  outlier="{base_ejection_time: 2s}")
        load = ClientLoad(port, threads=4, pause=0.005)
        self._stoppers.append(load.stop)
        self._stoppers.append(lambda: hung.running() and hung.resume())
        wait_until(lambda: load.served_by("c") >= 10, 10, message="traffic on c")
        hung.pause()
        stopped_at = time.time()
        ev = wait_events(b, "server_ejected", timeout=15, server=hung.address)[0]
        took = event_epoch(ev) - stopped_at
        self.assertEqual(ev["reason"], "5 consecutive gateway failures")
        self.assertGreaterEqual(metric(admin, server_metric("ballast_server_errors_total",
                                                            hung.address,
                                                            extra=',kind="server_timeout"')), 5)
        hung.resume()
        resumed = time.monotonic()
        wait_until(lambda: load.served_by("c", since=resumed) >= 5, 10,
                   message="traffic back on the resumed server")
        results = load.stop()
        failures = [r for r in results if r[1] != 200]
        FIGURES["hung"] = (f"SIGSTOP: ejected {took:.2f}s after the stop (server timeout 500ms); "
                           f"{len(results)} GETs, {len(failures)} failed")
        self.assertEqual(failures[:10], [], f"{len(failures)} of {len(results)} GETs failed")


class Limits(QuietBallastTestCase):
    def failing_pool(self, n_failing, n_good=0, outlier=""):
        self.bad = [self.track(Resetter(f"bad{i}")) for i in range(n_failing)]
        self.good = [self.track(HttpOrigin(f"g{i}")) for i in range(n_good)]
        return start_lb(self, [x.address for x in self.bad + self.good],
                        outlier="{" + outlier + "}" if outlier else None)

    def ejected_now(self, admin):
        m = metrics(admin)
        return [x.address for x in self.bad
                if m[server_metric("ballast_server_ejected", x.address)] == 1]

    def test_two_failing_servers_at_most_one_ejected(self):
        b, port, admin = self.failing_pool(2)
        for i in range(20):
            self.assertEqual(http_get(port, f"/{i}").status, 502)
            self.assertLessEqual(len(self.ejected_now(admin)), 1)
        events = ballast_events(b, "server_ejected")
        self.assertEqual(len(events), 1, events)
        self.assertEqual(self.ejected_now(admin), [events[0]["server"]])
        other = next(x for x in self.bad if x.address != events[0]["server"])
        t = event_epoch(events[0])
        # traffic keeps flowing to the one left
        self.assertGreaterEqual(len(other.connections_after(t)), 5)

    def test_panic_threshold_limits_even_with_max_ejection_percent_100(self):
        b, port, admin = self.failing_pool(2, outlier="max_ejection_percent: 100")
        for i in range(20):
            self.assertEqual(http_get(port, f"/{i}").status, 502)
        self.assertEqual(len(ballast_events(b, "server_ejected")), 1)

    def test_max_ejection_percent_allows_more(self):
        # 4 servers, 2 failing: 50% lets both go (and 2 of 4 left meets the panic threshold).
        b, port, admin = self.failing_pool(2, 2, outlier="max_ejection_percent: 50")
        for i in range(40):
            self.assertEqual(http_get(port, f"/{i}").status, 200)
        self.assertEqual(len(ballast_events(b, "server_ejected")), 2)
        self.assertEqual(len(self.ejected_now(admin)), 2)

    def test_max_ejection_percent_default_one_of_four(self):
        b, port, admin = self.failing_pool(2, 2)
        for i in range(40):
            self.assertEqual(http_get(port, f"/{i}").status, 200)
        self.assertEqual(len(ballast_events(b, "server_ejected")), 1)
        self.assertEqual(len(self.ejected_now(admin)), 1)

    def test_single_server_pool_is_never_ejected(self):
        b, port, admin = self.failing_pool(1)
        for i in range(12):
            self.assertEqual(http_get(port, f"/{i}").status, 502)
        self.assertEqual(ballast_events(b, "server_ejected"), [])
        self.assertEqual(len(self.bad[0].times), 12)
        self.assertEqual(self.ejected_now(admin), [])
        self.bad[0].healthy = True
        r = http_get(port, "/now")
        self.assertEqual((r.status, r.body), (200, b"bad0 GET /now"))


def tearDownModule():
    if FIGURES:
        print("\n  outlier: " + "; ".join(FIGURES.values()), flush=True)


if __name__ == "__main__":
    unittest.main()
