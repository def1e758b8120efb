"""Analytics, health scores, events and webhooks end to end (issue 6; docs/api.md "Health scores",
"Analytics", "Events and notifications"; docs/health-score.md): a real controller, a managed
engine, backends as processes and a webhook receiver. Steady load scores green; two of three
servers killed take the pool and the virtual service out of green with reasons naming them, raise
health_changed and a signed webhook POST; a slow backend lowers the performance score; a 5x spike
after warm-up is an anomaly."""

import hashlib
import hmac
import http.server
import json
import threading
import time
import unittest

from harness import BackendProcess, ClientLoad, HttpBackend, wait_until
from test_managed_se import ManagedTestCase

SECRET = "webhook-secret-0123456789"


class WebhookReceiver:
    """Records every POST (headers, raw body); answers 200."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.posts.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, kind=None):
        with self.lock:
            posts = list(self.posts)
        out = []
        for headers, body in posts:
            event = json.loads(body)
            if kind is None or event["type"] == kind:
                out.append((headers, body, event))
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def document(vip, servers, apdex="500ms", monitor=True):
    lines = ["virtual_services:", "  - name: web", f"    listen: 127.0.0.1:{vip}",
             "    protocol: http", "    pool: web-pool", f"    apdex_threshold: {apdex}",
             "pools:", "  - name: web-pool", "    servers:"]
    lines += [f"      - {{ address: {s} }}" for s in servers]
    if monitor:
        lines += ["    health_monitors: [hc]", "health_monitors:",
                  '  - { name: hc, type: http, interval: 300ms, timeout: 200ms, rise: 1, fall: 2, '
                  'request: "GET /health", expect: [200] }']
    return "\n".join(lines) + "\n"


class HealthTestCase(ManagedTestCase):
    controller_args = ("--health-interval", "1s", "--health-window", "8s", "--anomaly-warmup", "6")

    def start(self, servers, **kw):
        from harness import free_port
        self.vip = free_port()
        self.se("se1")
        self.wait_registered("se1")
        self.apply(document(self.vip, servers, **kw))
        self.wait_traffic(self.vip)

    def health(self, kind, name):
        code, body, _ = self.ctlr.api("GET", f"/api/v1/health/{kind}/{name}")
        self.assertIn(code, (200, 404), body)
        return body if code == 200 else None

    def wait_health(self, kind, name, predicate, timeout, message):
        seen = []

        def check():
            h = self.health(kind, name)
            seen[:] = [h]
            return h is not None and predicate(h)

        try:
            wait_until(check, timeout=timeout, interval=0.2, message=message)
        except AssertionError as e:
            raise AssertionError(f"{e}; last score: {json.dumps(seen[-1] if seen else None)}")
        return seen[-1]

    def served(self, since=-120):
        """The analytics points of web with requests (requests/s), oldest first."""
        code, body, _ = self.ctlr.api(
            "GET", f"/api/v1/analytics/vs/web?metric=requests_per_s&from={since}")
        return [v for v in body["series"]["requests_per_s"] if v] if code == 200 else []

    def wait_requests(self, points=1, timeout=15):
        wait_until(lambda: len(self.served()) >= points, timeout=timeout, interval=0.2,
                   message=f"{points} analytics points with requests")

    def load(self, threads=2, pause=0.01):
        load = ClientLoad(self.vip, threads=threads, pause=pause)
        self.addCleanup(load.stop)
        return load


class KillTwoOfThree(HealthTestCase):
    def test_scores_drop_with_reasons_events_and_a_signed_webhook(self):
        receiver = WebhookReceiver()
        self.addCleanup(receiver.close)
        backs = [self.track(BackendProcess(n)) for n in "abc"]
        code, body, _ = self.ctlr.api("POST", "/api/v1/webhooks", {
            "name": "oncall", "url": receiver.url, "secret": SECRET,
            "events": ["health_changed", "server_down"], "objects": []})
        self.assertEqual(code, 201, body)
        self.assertEqual(body["secret"], "***")
        self.start([b.address for b in backs])
        self.load()
        self.wait_requests()
        vs = self.wait_health("vs", "web", lambda h: h["band"] == "green" and h["score"] >= 85,
                              15, "web green under steady load")
        self.assertEqual(set(vs["penalties"]), {"resources", "security", "anomaly"})
        for key in ("score", "band", "previous_score", "performance_score"):
            self.assertIn(key, vs)
        pool = self.health("pool", "web-pool")
        self.assertEqual(pool["band"], "green", pool)
        server = self.health("server", f"web-pool/{backs[0].address}")
        self.assertEqual(server["band"], "green", server)
        # The analytics behind it.
        code, series, _ = self.ctlr.api(
            "GET", "/api/v1/analytics/vs/web?metric=requests_per_s,latency_total_p90_ms,apdex"
                   "&from=-60")
        self.assertEqual(code, 200, series)
        self.assertTrue(any(v for v in series["series"]["requests_per_s"] if v), series)
        self.assertTrue(any(v is not None for v in series["series"]["apdex"]), series)

        victims = backs[1:]
        for v in victims:
            v.kill()
        names = [f"web-pool/{v.address}" for v in victims]
        pool = self.wait_health("pool", "web-pool",
                                lambda h: h["score"] < 85 and all(
                                    any(n in r for r in h["reasons"]) for n in names),
                                15, "pool out of green, naming both servers")
        self.assertNotEqual(pool["band"], "green")
        self.assertIsNotNone(pool["previous_score"])
        vs = self.wait_health("vs", "web", lambda h: h["score"] < 85 and all(
            any(n in r for r in h["penalties"]["resources"]["reasons"]) for n in names),
                              15, "web out of green, naming both servers")
        self.assertNotEqual(vs["band"], "green")

        def events(kind, obj):
            code, body, _ = self.ctlr.api("GET", f"/api/v1/events?type={kind}&object={obj}")
            self.assertEqual(code, 200, body)
            return body["items"]

        wait_until(lambda: events("health_changed", "virtual_services/web"), timeout=10,
                   message="health_changed for web")
        changed = events("health_changed", "virtual_services/web")[-1]
        self.assertEqual(changed["details"]["previous_band"], "green", changed)
        self.assertNotEqual(changed["details"]["band"], "green", changed)
        wait_until(lambda: len(events("server_down", "")) >= 2 or all(
            events("server_down", n) for n in names), timeout=10, message="server_down events")

        # The webhook got the band crossing, signed over the body it received.
        wait_until(lambda: any(e["object"] == "virtual_services/web"
                               for _, _, e in receiver.events("health_changed")),
                   timeout=15, message="webhook POST of health_changed for web")
        headers, raw, event = [x for x in receiver.events("health_changed")
                               if x[2]["object"] == "virtual_services/web"][0]
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        signature = {k.lower(): v for k, v in headers.items()}["x-ballast-signature"]
        self.assertTrue(hmac.compare_digest(signature, expected), (signature, expected))
        self.assertEqual({k.lower(): v for k, v in headers.items()}["x-ballast-event"],
                         "health_changed")
        self.assertEqual(event["details"]["band"], changed["details"]["band"])
        # Filtered: only the types asked for.
        self.assertLessEqual({e["type"] for _, _, e in receiver.events()},
                             {"health_changed", "server_down"})
        code, hook, _ = self.ctlr.api("GET", "/api/v1/webhooks/oncall")
        self.assertEqual(code, 200, hook)
        self.assertGreaterEqual(hook["delivery"]["delivered"], 1, hook)
        self.assertEqual(hook["secret"], "***")


class SlowBackend(HealthTestCase):
    def test_latency_beyond_the_apdex_threshold_lowers_performance(self):
        slow = threading.Event()

        def handler(req, body):
            if slow.is_set():
                time.sleep(0.12)
            return 200, {}, b"ok"

        back = HttpBackend("slow", handler)
        self.addCleanup(back.close)
        self.start([back.address], apdex="20ms", monitor=False)
        self.load(threads=3, pause=0.01)
        fast = self.wait_health("vs", "web", lambda h: h["performance_score"] >= 95, 15,
                                "fast answers: performance near 100")
        slow.set()
        worse = self.wait_health("vs", "web", lambda h: h["performance_score"] < 50, 20,
                                 "answers 120 ms > 4T: performance falls")
        self.assertLess(worse["score"], fast["score"])
        self.assertTrue(any("apdex" in r.lower() for r in worse["reasons"]), worse)
        code, series, _ = self.ctlr.api(
            "GET", "/api/v1/analytics/vs/web?metric=latency_response_p50_ms,apdex&from=-30")
        self.assertEqual(code, 200, series)
        p50 = [v for v in series["series"]["latency_response_p50_ms"] if v is not None]
        self.assertTrue(p50 and max(p50) >= 100, series)


class Spike(HealthTestCase):
    def test_a_5x_request_spike_after_warm_up_is_an_anomaly(self):
        back = HttpBackend("b")
        self.addCleanup(back.close)
        self.start([back.address], monitor=False)
        self.load(threads=1, pause=0.02)
        time.sleep(9)  # warm-up: 6 samples of 1 s, and some more
        h = self.health("vs", "web")
        # Steady load is no spike (a dip of the one client thread on a busy machine may be a drop).
        self.assertFalse([r for r in h["penalties"]["anomaly"]["reasons"] if "above" in r], h)
        self.load(threads=8, pause=0.004)
        spiked = lambda h: any("requests/s" in r and "above" in r
                               for r in h["penalties"]["anomaly"]["reasons"])
        h = self.wait_health("vs", "web", spiked, 10, "a requests/s spike after the 5x load")
        self.assertGreater(h["penalties"]["anomaly"]["value"], 0, h)
        self.assertLess(h["score"], 100, h)

        def spike_events():
            code, body, _ = self.ctlr.api("GET", "/api/v1/events?type=anomaly&object=web")
            self.assertEqual(code, 200, body)
            return [e for e in body["items"] if "requests/s" in e["message"] and
                    "above" in e["message"]]
        wait_until(spike_events, timeout=5, message="an anomaly event for the spike")


class ApiErrors(HealthTestCase):
    def test_unknown_kinds_metrics_and_objects(self):
        back = HttpBackend("b")
        self.addCleanup(back.close)
        self.start([back.address], monitor=False)
        cases = [
            ("/api/v1/health/nope", 404),
            ("/api/v1/health/vs/nope", 404),
            ("/api/v1/analytics/vs", 404),
            ("/api/v1/analytics/nope/web?metric=requests_per_s", None),
            ("/api/v1/analytics/vs/web?metric=nope", 400),
            ("/api/v1/analytics/vs/web?metric=requests_per_s&step=abc", 400),
            ("/api/v1/analytics/vs/web?metric=requests_per_s&from=x", 400),
        ]
        wait_until(lambda: self.health("vs", "web"), timeout=10, message="first score")
        for path, expected in cases:
            code, body, _ = self.ctlr.api("GET", path)
            if expected is None:
                self.assertIn(code, (400, 404), (path, body))
            else:
                self.assertEqual(code, expected, (path, body))
            self.assertIn("error", body, path)
        code, body, _ = self.ctlr.api("GET", "/api/v1/health")
        self.assertEqual(code, 200, body)
        self.assertEqual({h["kind"] for h in body["items"]} >= {"vs", "pool", "server", "se"}, True,
                         body)
        code, body, _ = self.ctlr.api("POST", "/api/v1/health")
        self.assertEqual(code, 405, body)


class AnalyticsSurviveRestart(HealthTestCase):
    def test_points_are_kept_across_a_controller_restart(self):
        back = HttpBackend("b")
        self.addCleanup(back.close)
        self.start([back.address], monitor=False)
        load = self.load(threads=1, pause=0.01)
        # Two 10 s points: the first is closed, so it is saved (the open one may be lost).
        self.wait_requests(points=2, timeout=30)
        load.stop()
        closed = self.served()[:-1]
        self.ctlr.stop()
        self.ctlr.start()
        after = self.served()
        self.assertTrue(after, "no points after the restart")
        self.assertEqual(after[:len(closed)], closed)


if __name__ == "__main__":
    unittest.main()
