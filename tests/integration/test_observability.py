"""What an operator sees of issue 3's features (docs/operations.md "Admin endpoints", "Health:
what an operator sees", "/metrics"): the new metric families and their values, a still valid
Prometheus exposition, the /status fields of servers, pools, virtual services, reloads and
events, and the admin listener's HTTP behaviour (keep-alive, POST /reload, 405, 404)."""
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest

from harness import (Ballast, CannedHttpBackend, HttpBackend, HttpConn, QuietBallastTestCase,
                     RawBackend, admin_get, admin_post, echo, free_port, http_get,
                     parse_prometheus, refused_address, status, wait_listening, wait_until,
                     write_file_atomic)

NEW_FAMILIES = {
    "ballast_config_generation": "gauge",
    "ballast_config_reloads_total": "counter",
    "ballast_vs_retries_total": "counter",
    "ballast_pool_retries_total": "counter",
    "ballast_server_retries_total": "counter",
    "ballast_server_up": "gauge",
    "ballast_server_healthy": "gauge",
    "ballast_server_ejected": "gauge",
    "ballast_server_ejections_total": "counter",
    "ballast_server_in_flight": "gauge",
    "ballast_pool_servers_up": "gauge",
    "ballast_access_log_lines_total": "counter",
    "ballast_access_log_dropped_total": "counter",
    "ballast_vs_request_duration_seconds": "histogram",
    "ballast_server_response_duration_seconds": "histogram",
}


def sick_handler(req, body):
    if req.path == "/health":
        return 500, {}, b"sick"
    return 200, {}, b"sick-served"


class ObservabilityBase(QuietBallastTestCase):
    """One engine with every issue-3 feature in use:
    - pool p: good (max_connections 7), sick (fails its monitor), off (enabled: false),
      drained (drain: true); monitor hc;
    - pool dead: only a sick server (the pool is down);
    - pool r: a refusing server, then good (retries);
    - web (http, access log to a file) -> p; dead (http) -> dead; retry (http) -> r;
      tcp (tcp) -> t (an echo server)."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-obs-")
        self.addCleanup(self.tmp.cleanup)
        self.good = self.track(CannedHttpBackend(b"good"))
        self.sick = self.track(HttpBackend("sick", handler=sick_handler))
        self.sick2 = self.track(HttpBackend("sick2", handler=sick_handler))
        self.off = self.track(CannedHttpBackend(b"off"))
        self.drained = self.track(CannedHttpBackend(b"drained"))
        self.echo = self.track(RawBackend(echo))
        self.refused = refused_address()
        self.log = os.path.join(self.tmp.name, "access.log")
        self.web, self.dead, self.retry, self.tcp, self.admin = (free_port() for _ in range(5))
        self.text = f"""se:
  workers: 2
  admin: 127.0.0.1:{self.admin}
virtual_services:
  - name: web
    listen: 127.0.0.1:{self.web}
    protocol: http
    pool: p
    access_log: {self.log}
  - name: dead
    listen: 127.0.0.1:{self.dead}
    protocol: http
    pool: dead
  - name: retry
    listen: 127.0.0.1:{self.retry}
    protocol: http
    pool: r
    retries: 2
  - name: tcp
    listen: 127.0.0.1:{self.tcp}
    protocol: tcp
    pool: t
pools:
  - name: p
    servers:
      - {{ address: {self.good.address}, max_connections: 7 }}
      - address: {self.sick.address}
      - {{ address: {self.off.address}, enabled: false }}
      - {{ address: {self.drained.address}, drain: true }}
    health_monitors: [hc]
  - name: dead
    servers:
      - address: {self.sick2.address}
    health_monitors: [hc]
  - name: r
    servers:
      - address: {self.refused}
      - address: {self.good.address}
  - name: t
    servers:
      - address: {self.echo.address}
health_monitors:
  - {{ name: hc, type: http, interval: 300ms, timeout: 250ms, rise: 1, fall: 1, request: "GET /health" }}
"""
        self.b = self.track(Ballast(self.text, wait_ports=(self.admin,)))
        for port in (self.web, self.dead, self.retry, self.tcp):
            wait_listening(self.b, port)
        wait_until(lambda: self.server("p", self.sick.address)["health"]["state"] == "down"
                   and self.server("dead", self.sick2.address)["health"]["state"] == "down",
                   timeout=10, message="the sick servers down")

    def server(self, pool, address, st=None):
        st = st or status(self.admin)
        p = next(p for p in st["pools"] if p["name"] == pool)
        return next(s for s in p["servers"] if s["address"] == address)

    def pool(self, name, st=None):
        st = st or status(self.admin)
        return next(p for p in st["pools"] if p["name"] == name)

    def vs(self, name, st=None):
        st = st or status(self.admin)
        return next(v for v in st["virtual_services"] if v["name"] == name)

    def scrape(self):
        code, text = admin_get(self.admin, "/metrics")
        self.assertEqual(code, 200)
        return text

    def traffic(self):
        for _ in range(4):
            self.assertEqual(http_get(self.web).body, b"good")
        for _ in range(4):
            self.assertEqual(http_get(self.retry).status, 200)
        self.assertEqual(http_get(self.dead).status, 503)
        with socket.create_connection(("127.0.0.1", self.tcp), timeout=5) as s:
            s.sendall(b"ping")
            self.assertEqual(s.recv(10), b"ping")
        def lines():
            with open(self.log) as f:
                return f.read().count("\n")
        wait_until(lambda: lines() == 4, timeout=5, message="4 access log lines")


class Metrics(ObservabilityBase):
    def test_exposition_stays_valid_with_every_feature_in_use(self):
        self.traffic()
        text = self.scrape()
        _, _, problems = parse_prometheus(text)
        self.assertEqual(problems, [], "\n".join(problems))
        # And after a reload.
        code, _, body = admin_post(self.admin, "/reload")
        self.assertEqual(code, 200, body)
        _, _, problems = parse_prometheus(self.scrape())
        self.assertEqual(problems, [], "\n".join(problems))

    def test_new_families_and_their_values(self):
        self.traffic()
        families, samples, _ = parse_prometheus(self.scrape())
        for name, kind in NEW_FAMILIES.items():
            self.assertIn(name, families)
            self.assertEqual(families[name]["type"], kind, name)

        def value(name, **labels):
            family = name
            for suffix in ("_count", "_sum", "_bucket"):
                if name.endswith(suffix) and name[:-len(suffix)] in families:
                    family = name[:-len(suffix)]
            for n, l, v in families[family]["samples"]:
                if n == name and l == labels:
                    return v
            self.fail(f"no sample {name}{labels}")

        self.assertEqual(value("ballast_config_generation"), 0)
        self.assertEqual(value("ballast_config_reloads_total", result="ok"), 0)
        self.assertEqual(value("ballast_config_reloads_total", result="failed"), 0)
        g, s, o, d = (self.good.address, self.sick.address, self.off.address,
                      self.drained.address)
        self.assertEqual([value("ballast_server_up", pool="p", server=a) for a in (g, s, o, d)],
                         [1, 0, 0, 0])
        self.assertEqual(value("ballast_server_healthy", pool="p", server=g), 1)
        self.assertEqual(value("ballast_server_healthy", pool="p", server=s), 0)
        self.assertEqual(value("ballast_server_ejected", pool="p", server=g), 0)
        self.assertEqual(value("ballast_server_ejections_total", pool="p", server=g), 0)
        self.assertEqual(value("ballast_server_in_flight", pool="p", server=g), 0)
        self.assertEqual(value("ballast_pool_servers_up", pool="p"), 1)
        self.assertEqual(value("ballast_pool_servers_up", pool="dead"), 0)
        self.assertEqual(value("ballast_pool_servers_up", pool="r"), 2)
        # Retries: the refusing server of pool r sent requests on to another server.
        refusals = value("ballast_server_errors_total", pool="r", server=self.refused,
                         kind="connect_refused")
        self.assertGreaterEqual(refusals, 1)
        self.assertEqual(value("ballast_vs_retries_total", vs="retry"), refusals)
        self.assertEqual(value("ballast_vs_retries_total", vs="web"), 0)
        self.assertEqual(value("ballast_server_retries_total", pool="r", server=self.refused),
                         refusals)
        self.assertEqual(value("ballast_server_retries_total", pool="r", server=g), 0)
        self.assertEqual(value("ballast_pool_retries_total", pool="r"), refusals)
        self.assertEqual(value("ballast_access_log_lines_total", target=self.log), 4)
        self.assertEqual(value("ballast_access_log_dropped_total", target=self.log), 0)
        # Latency histograms per virtual service and per server.
        self.assertEqual(value("ballast_vs_request_duration_seconds_count", vs="web"), 4)
        self.assertEqual(value("ballast_server_response_duration_seconds_count", pool="p",
                               server=g), 4)

    def test_in_flight_while_a_request_runs(self):
        def slow(req, body):
            time.sleep(0.8)
            return 200, {}, b"slow"

        backend = self.track(HttpBackend("slow", handler=slow))
        port, admin = free_port(), free_port()
        b = self.track(Ballast(f"""se:
  workers: 2
  admin: 127.0.0.1:{admin}
virtual_services:
  - {{ name: web, listen: 127.0.0.1:{port}, protocol: http, pool: p }}
pools:
  - name: p
    servers:
      - address: {backend.address}
""", wait_ports=(admin,)))
        wait_listening(b, port)
        key = f'ballast_server_in_flight{{pool="p",server="{backend.address}"}}'
        with HttpConn(port) as c:
            c.request("GET", "/")
            wait_until(lambda: backend.requests, timeout=5, message="the request at the server")
            _, samples, _ = parse_prometheus(admin_get(admin, "/metrics")[1])
            self.assertEqual(samples.get(key), 1)
            st = status(admin)
            self.assertEqual(st["pools"][0]["servers"][0]["in_flight"], 1)
            self.assertEqual(c.read_response().body, b"slow")
        wait_until(lambda: parse_prometheus(admin_get(admin, "/metrics")[1])[1].get(key) == 0,
                   timeout=5, message="in flight back to 0")
        self.assertEqual(status(admin)["pools"][0]["servers"][0]["in_flight"], 0)


class Status(ObservabilityBase):
    def test_server_pool_and_service_fields(self):
        self.traffic()
        st = status(self.admin)
        self.assertEqual(st["config"]["generation"], 0)
        good = self.server("p", self.good.address, st)
        self.assertEqual(good["health"]["state"], "up")
        self.assertIs(good["health"]["healthy"], True)
        self.assertIs(good["health"]["ejected"], False)
        self.assertEqual(good["health"]["ejections"], 0)
        self.assertEqual(good["max_connections"], 7)
        self.assertIs(good["drain"], False)
        self.assertEqual(good["in_flight"], 0)
        self.assertEqual(good["retries"], 0)
        sick = self.server("p", self.sick.address, st)["health"]
        self.assertEqual((sick["state"], sick["healthy"], sick["ejected"]), ("down", False, False))
        self.assertIn("HTTP 500", sick["reason"])
        self.assertGreaterEqual(sick["changed_seconds_ago"], 0)
        self.assertLess(sick["changed_seconds_ago"], 30)
        self.assertEqual(self.server("p", self.off.address, st)["health"]["state"], "disabled")
        drained = self.server("p", self.drained.address, st)
        self.assertEqual(drained["health"]["state"], "draining")
        self.assertIs(drained["drain"], True)
        self.assertEqual(drained["max_connections"], 0)

        p = self.pool("p", st)
        self.assertEqual((p["state"], p["servers_up"], p["health_monitors"]), ("up", 1, ["hc"]))
        dead = self.pool("dead", st)
        self.assertEqual((dead["state"], dead["servers_up"]), ("down", 0))
        self.assertEqual(self.pool("r", st)["health_monitors"], [])

        refused = self.server("r", self.refused, st)
        self.assertGreaterEqual(refused["retries"], 1)
        self.assertEqual(self.vs("retry", st)["retries"], refused["retries"])
        self.assertEqual(self.vs("web", st)["retries"], 0)
        self.assertEqual(self.vs("web", st)["access_log"],
                         {"target": self.log, "lines": 4, "dropped": 0})
        self.assertNotIn("access_log", self.vs("dead", st))
        self.assertEqual(self.vs("web", st)["max_connections"], 0)

        events = st["events"]
        downs = [e for e in events if e.get("event") == "server_down"]
        self.assertTrue(any(e.get("server") == self.sick.address for e in downs), events)
        self.assertTrue(any(e.get("event") == "pool_down" and e.get("pool") == "dead"
                            for e in events), events)

    def test_reload_fields_and_events(self):
        code, _, body = admin_post(self.admin, "/reload")
        self.assertEqual(code, 200, body)
        st = status(self.admin)
        self.assertEqual(st["config"]["generation"], 1)
        self.assertEqual(st["reload"]["ok"], True)
        self.assertEqual(st["reload"]["errors"], [])
        self.assertGreaterEqual(st["reload"]["seconds_ago"], 0)
        self.assertLess(st["reload"]["seconds_ago"], 5)
        self.assertEqual(st["events"][-1]["event"], "config_reloaded")
        time.sleep(0.3)
        self.assertGreaterEqual(status(self.admin)["reload"]["seconds_ago"], 0.25)

        write_file_atomic(self.b.config_path, self.text.replace("    pool: dead", "    pool: nope"))
        code, _, body = admin_post(self.admin, "/reload")
        self.assertEqual(code, 422, body)
        st = status(self.admin)
        self.assertEqual(st["config"]["generation"], 1)
        self.assertEqual(st["reload"]["ok"], False)
        self.assertEqual(len(st["reload"]["errors"]), 1, st["reload"])
        self.assertIn('no pool named "nope"', st["reload"]["errors"][0])
        last = st["events"][-1]
        self.assertEqual(last["event"], "config_reload_failed")
        self.assertIn('no pool named "nope"', last.get("error", ""), last)


class Admin(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        backend = self.track(CannedHttpBackend(b"b"))
        self.b, self.port, self.admin = self.start_ballast_quiet([backend.address],
                                                                 protocol="http")

    def conn(self):
        return HttpConn(self.admin, timeout=5)

    def test_one_connection_serves_status_reload_and_metrics_in_turn(self):
        with self.conn() as c:
            c.request("GET", "/status")
            r1 = c.read_response()
            c.request("POST", "/reload")
            r2 = c.read_response()
            c.request("GET", "/metrics")
            r3 = c.read_response()
            c.request("HEAD", "/status")
            r4 = c.read_response("HEAD")
            c.request("GET", "/status?verbose=1")
            r5 = c.read_response()
        self.assertEqual([r.status for r in (r1, r2, r3, r4, r5)], [200, 200, 200, 200, 200])
        self.assertEqual(json.loads(r1.body)["pid"], self.b.pid)
        report = json.loads(r2.body)
        self.assertEqual((report["ok"], report["errors"]), (True, []))
        self.assertIsInstance(report["notes"], list)
        self.assertIn("ballast_config_generation 1", r3.body.decode())
        self.assertEqual(r4.body, b"")
        self.assertEqual(json.loads(r5.body)["config"]["generation"], 1)

    def test_curl_reuses_one_connection(self):
        base = f"http://127.0.0.1:{self.admin}"
        p = subprocess.run(["curl", "-s", "-w", "%{http_code} %{num_connects}\\n",
                            "-o", "/dev/null", f"{base}/status",
                            "-o", "/dev/null", f"{base}/metrics",
                            "-o", "/dev/null", "-X", "GET", f"{base}/status"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.split("\n")[:3], ["200 1", "200 0", "200 0"], p.stdout)
        p = subprocess.run(["curl", "-s", "-X", "POST", "-w", "\\n%{http_code}",
                            f"{base}/reload"], capture_output=True, text=True, timeout=20)
        body, _, code = p.stdout.rpartition("\n")
        self.assertEqual(code, "200", p.stdout)
        self.assertEqual(json.loads(body)["ok"], True)

    def test_post_reload_without_body_is_answered_at_once(self):
        for head in (b"POST /reload HTTP/1.1\r\nHost: a\r\n\r\n",
                     b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                     b"POST /reload HTTP/1.0\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as s:
                t0 = time.monotonic()
                s.sendall(head)
                s.settimeout(3)
                data = b""
                while b"\r\n\r\n" not in data:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                self.assertTrue(data.startswith(b"HTTP/1.1 200"), (head, data))
                self.assertLess(time.monotonic() - t0, 1.5, head)
        # A request with a small body is answered after it, and the connection stays in step.
        with self.conn() as c:
            c.request("POST", "/reload", body=b"{}")
            self.assertEqual(c.read_response().status, 200)
            c.request("GET", "/status")
            self.assertEqual(json.loads(c.read_response().body)["config"]["generation"], 4)

    def test_wrong_method_is_405_with_allow_and_unknown_path_404(self):
        with self.conn() as c:
            c.request("GET", "/reload")
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertEqual([m.strip() for m in r.header("allow", "").split(",")], ["POST"], r)
            c.request("POST", "/status")
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertIn("GET", r.header("allow", ""), r)
            c.request("GET", "/nope")
            self.assertEqual(c.read_response().status, 404)
            # Still usable after the errors.
            c.request("GET", "/status")
            self.assertEqual(c.read_response().status, 200)
        self.assertEqual(status(self.admin)["config"]["generation"], 0, "GET /reload reloaded")


if __name__ == "__main__":
    unittest.main()
