"""Admin listener: GET /status (JSON), GET /metrics (Prometheus text format 0.0.4), 404s."""
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (Ballast, HttpBackend, QuietBallastTestCase, RawBackend, admin_get,
                     admin_get_full, echo, free_port, parse_prometheus, parse_responses,
                     raw_exchange, recv_all, recv_exactly, run_ballast, status, wait_listening,
                     wait_until)

ERROR_KINDS = {"bad_request", "head_too_large", "header_timeout", "client_timeout",
               "client_abort", "max_connections", "no_server", "connect_refused",
               "connect_timeout", "server_reset", "server_timeout", "bad_response"}
CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]

VS_FAMILIES = {
    "ballast_vs_connections_active": "gauge",
    "ballast_vs_connections_total": "counter",
    "ballast_vs_requests_total": "counter",
    "ballast_vs_bytes_in_total": "counter",
    "ballast_vs_bytes_out_total": "counter",
    "ballast_vs_responses_total": "counter",
    "ballast_vs_errors_total": "counter",
    "ballast_vs_request_duration_seconds": "histogram",
}
POOL_SERVER_SUFFIXES = {
    "connections_active": "gauge",
    "connections_idle": "gauge",
    "connections_total": "counter",
    "requests_total": "counter",
    "bytes_in_total": "counter",
    "bytes_out_total": "counter",
    "responses_total": "counter",
    "errors_total": "counter",
}


def two_service_config(tcp_port, http_port, admin, tcp_servers, http_servers):
    lines = ["se:", "  workers: 2", f"  admin: 127.0.0.1:{admin}",
             "virtual_services:",
             "  - name: vs-tcp", f"    listen: 127.0.0.1:{tcp_port}", "    protocol: tcp",
             "    pool: echo-pool",
             "  - name: vs-http", f"    listen: 127.0.0.1:{http_port}", "    protocol: http",
             "    pool: web-pool",
             "pools:",
             "  - name: echo-pool", "    servers:"]
    lines += [f"      - address: {s}" for s in tcp_servers]
    lines += ["  - name: web-pool", "    servers:"]
    lines += [f"      - address: {s}\n        weight: {i + 1}" for i, s in enumerate(http_servers)]
    return "\n".join(lines) + "\n"


class AdminBase(QuietBallastTestCase):
    def start_two(self):
        self.echo_backend = self.track(RawBackend(echo))
        self.web = self.track(HttpBackend("web", handler=self.web_handler))
        self.tcp_port, self.http_port, self.admin = free_port(), free_port(), free_port()
        b = self.track(Ballast(two_service_config(self.tcp_port, self.http_port, self.admin,
                                                  [self.echo_backend.address],
                                                  [self.web.address]),
                               wait_ports=(self.admin,)))
        wait_listening(b, self.tcp_port)
        wait_listening(b, self.http_port)
        self.ballast = b
        return b

    @staticmethod
    def web_handler(req, body):
        if req.path.startswith("/missing"):
            return 404, {}, b"no such thing"
        if req.path.startswith("/boom"):
            return 503, {}, b"down"
        return 200, {}, b"hello " + req.path.encode()

    def http_get(self, path):
        (st, _, body), = parse_responses(raw_exchange(
            self.http_port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()))
        return st, body


class Status(AdminBase):
    def test_a_second_engine_may_not_share_the_admin_address(self):
        b = self.start_two()
        other = self.track(HttpBackend("o"))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "second.yaml")
            with open(path, "w") as f:
                f.write(two_service_config(free_port(), free_port(), self.admin,
                                           [self.echo_backend.address], [other.address]))
            rc, out, err = run_ballast("se", "--config", path, timeout=15)
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn(f"admin: 127.0.0.1:{self.admin} is already in use", err)
        self.assertEqual(status(self.admin)["pid"], b.pid)

    def test_status_document_shape(self):
        b = self.start_two()
        st = status(self.admin)
        rc, out, _ = run_ballast("--version")
        self.assertEqual(rc, 0)
        self.assertEqual(out.split()[-1], st["version"])
        self.assertEqual(st["pid"], b.pid)
        self.assertEqual(st["state"], "running")
        self.assertIsInstance(st["uptime_seconds"], (int, float))
        self.assertGreaterEqual(st["uptime_seconds"], 0)
        self.assertEqual(st["workers"], 2)
        self.assertEqual(os.path.realpath(st["config"]["source"]), os.path.realpath(b.config_path))
        names = [v["name"] for v in st["virtual_services"]]
        self.assertEqual(names, ["vs-tcp", "vs-http"])
        for vs, (port, proto, pool) in zip(st["virtual_services"],
                                           [(self.tcp_port, "tcp", "echo-pool"),
                                            (self.http_port, "http", "web-pool")]):
            self.assertEqual(vs["listen"], f"127.0.0.1:{port}")
            self.assertEqual(vs["protocol"], proto)
            self.assertEqual(vs["pool"], pool)
            self.assertEqual(vs["max_connections"], 0)
            self.assertEqual(vs["connections"], {"active": 0, "total": 0})
            for key in ("requests", "bytes_in", "bytes_out"):
                self.assertEqual(vs[key], 0, key)
            self.assertEqual(vs["responses"], {c: 0 for c in CLASSES})
            self.assertEqual(set(vs["errors"]), ERROR_KINDS)
            self.assertTrue(all(v == 0 for v in vs["errors"].values()), vs["errors"])
        self.assertEqual([p["name"] for p in st["pools"]], ["echo-pool", "web-pool"])
        for pool, backend, weight in zip(st["pools"], [self.echo_backend, self.web], [1, 1]):
            self.assertEqual(pool["lb_algorithm"], "round_robin")
            srv, = pool["servers"]
            self.assertEqual(srv["id"], f"{pool['name']}/{backend.address}")
            self.assertEqual(srv["address"], backend.address)
            self.assertEqual(srv["weight"], weight)
            self.assertIs(srv["enabled"], True)
            self.assertEqual(srv["connections"], {"active": 0, "idle": 0, "total": 0})
            for key in ("requests", "bytes_in", "bytes_out"):
                self.assertEqual(srv[key], 0, key)
            self.assertEqual(srv["responses"], {c: 0 for c in CLASSES})
            self.assertEqual(set(srv["errors"]), ERROR_KINDS)
        time.sleep(0.3)
        self.assertGreater(status(self.admin)["uptime_seconds"], st["uptime_seconds"])

    def test_status_counts_tcp_connections_and_bytes(self):
        self.start_two()
        socks = [socket.create_connection(("127.0.0.1", self.tcp_port), timeout=10)
                 for _ in range(3)]
        try:
            for i, s in enumerate(socks):
                msg = b"x" * (1000 * (i + 1))
                s.sendall(msg)
                self.assertEqual(recv_exactly(s, len(msg)), msg)
            st = status(self.admin)
            vs = st["virtual_services"][0]
            self.assertEqual(vs["connections"], {"active": 3, "total": 3})
            srv = st["pools"][0]["servers"][0]
            self.assertEqual(srv["connections"]["active"], 3)
            self.assertEqual(srv["connections"]["total"], 3)
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: status(self.admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=5, message="vs active 0")
        wait_until(lambda: status(self.admin)["pools"][0]["servers"][0]["connections"]["active"]
                   == 0, timeout=5, message="server active 0")
        st = status(self.admin)
        vs, srv = st["virtual_services"][0], st["pools"][0]["servers"][0]
        self.assertEqual(vs["connections"], {"active": 0, "total": 3})
        self.assertEqual((vs["bytes_in"], vs["bytes_out"]), (6000, 6000))
        self.assertEqual((srv["bytes_out"], srv["bytes_in"]), (6000, 6000))
        self.assertEqual(srv["connections"], {"active": 0, "idle": 0, "total": 3})
        self.assertEqual(srv["requests"], 3)  # TCP: connections sent to the server
        self.assertEqual(vs["requests"], 0)
        self.assertEqual(vs["responses"], {c: 0 for c in CLASSES})

    def test_status_counts_http_requests_and_responses(self):
        self.start_two()
        for path in ["/a", "/b", "/c", "/missing", "/boom"]:
            self.http_get(path)
        st = status(self.admin)
        vs = st["virtual_services"][1]
        self.assertEqual(vs["requests"], 5)
        self.assertEqual(vs["responses"], {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1})
        self.assertEqual(vs["connections"]["total"], 5)
        srv = st["pools"][1]["servers"][0]
        self.assertEqual(srv["requests"], 5)
        self.assertEqual(srv["responses"], {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1})
        self.assertGreater(srv["bytes_in"], 0)
        self.assertGreater(srv["bytes_out"], 0)
        # The backend keeps connections alive: ballast pools them (at most one per worker here,
        # since requests were sequential); pooled connections are open and idle.
        conns = srv["connections"]
        self.assertEqual(conns["idle"], conns["active"], conns)
        self.assertTrue(1 <= conns["total"] <= 2, conns)
        self.assertEqual(vs["bytes_in"], sum(
            len(f"GET {p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            for p in ["/a", "/b", "/c", "/missing", "/boom"]))


class Metrics(AdminBase):
    def scrape(self):
        code, headers, body = admin_get_full(self.admin, "/metrics")
        self.assertEqual(code, 200)
        return headers, body.decode()

    def test_exposition_is_valid_and_complete(self):
        self.start_two()
        for path in ["/a", "/missing"]:
            self.http_get(path)
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=10) as s:
            s.sendall(b"abc")
            self.assertEqual(recv_exactly(s, 3), b"abc")
        headers, text = self.scrape()
        ctype = headers.get("content-type", "")
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype)
        families, samples, problems = parse_prometheus(text)
        self.assertEqual(problems, [])
        expected = dict(VS_FAMILIES)
        expected.update({"ballast_info": "gauge", "ballast_uptime_seconds": "gauge",
                         "ballast_workers": "gauge",
                         "ballast_server_response_duration_seconds": "histogram"})
        for suffix, kind in POOL_SERVER_SUFFIXES.items():
            expected[f"ballast_pool_{suffix}"] = kind
            expected[f"ballast_server_{suffix}"] = kind
        got = {name: fam["type"] for name, fam in families.items() if name in expected}
        self.assertEqual(got, expected)
        # Labels: every VS, pool and server appears; classes and kinds are complete.
        self.assertEqual(samples['ballast_info{version="%s"}' % run_ballast("--version")[1].split()[-1]], 1)
        self.assertEqual(samples["ballast_workers"], 2)
        for vs in ("vs-tcp", "vs-http"):
            for fam in VS_FAMILIES:
                labelsets = [lb for _, lb, _ in families[fam]["samples"] if lb.get("vs") == vs]
                self.assertTrue(labelsets, f"{fam} has no sample for vs={vs}")
            kinds = {lb["kind"] for _, lb, _ in families["ballast_vs_errors_total"]["samples"]
                     if lb["vs"] == vs}
            self.assertEqual(kinds, ERROR_KINDS)
            classes = {lb["class"] for _, lb, _ in families["ballast_vs_responses_total"]["samples"]
                       if lb["vs"] == vs}
            self.assertEqual(classes, set(CLASSES))
        for pool, backend in (("echo-pool", self.echo_backend), ("web-pool", self.web)):
            for suffix in POOL_SERVER_SUFFIXES:
                self.assertTrue(any(lb.get("pool") == pool for _, lb, _ in
                                    families[f"ballast_pool_{suffix}"]["samples"]), suffix)
                self.assertTrue(any(lb.get("pool") == pool and lb.get("server") == backend.address
                                    for _, lb, _ in families[f"ballast_server_{suffix}"]["samples"]),
                                suffix)
        # Values after the known traffic.
        self.assertEqual(samples['ballast_vs_requests_total{vs="vs-http"}'], 2)
        self.assertEqual(samples['ballast_vs_responses_total{vs="vs-http",class="2xx"}'], 1)
        self.assertEqual(samples['ballast_vs_responses_total{vs="vs-http",class="4xx"}'], 1)
        self.assertEqual(samples['ballast_vs_request_duration_seconds_count{vs="vs-http"}'], 2)
        self.assertEqual(samples['ballast_vs_request_duration_seconds_bucket{vs="vs-http",le="+Inf"}'], 2)
        self.assertEqual(samples['ballast_server_response_duration_seconds_count'
                                 '{pool="web-pool",server="%s"}' % self.web.address], 2)
        self.assertEqual(samples['ballast_vs_connections_total{vs="vs-tcp"}'], 1)
        self.assertEqual(samples['ballast_vs_bytes_in_total{vs="vs-tcp"}'], 3)
        self.assertEqual(samples['ballast_server_bytes_out_total{pool="echo-pool",server="%s"}'
                                 % self.echo_backend.address], 3)
        # The pool is the sum of its servers.
        self.assertEqual(samples['ballast_pool_requests_total{pool="web-pool"}'], 2)
        mismatches = []
        for suffix in POOL_SERVER_SUFFIXES:
            sums = {}
            for _, lb, v in families[f"ballast_server_{suffix}"]["samples"]:
                key = tuple(sorted((k, x) for k, x in lb.items() if k != "server"))
                sums[key] = sums.get(key, 0) + v
            for _, lb, v in families[f"ballast_pool_{suffix}"]["samples"]:
                key = tuple(sorted(lb.items()))
                if sums.get(key) != v:
                    mismatches.append((suffix, dict(key), v, sums.get(key)))
        self.assertEqual(mismatches, [])
        # /status and /metrics agree.
        st = status(self.admin)
        self.assertEqual(st["virtual_services"][1]["requests"],
                         samples['ballast_vs_requests_total{vs="vs-http"}'])

    def test_counters_never_decrease_under_load(self):
        self.start_two()
        stop = threading.Event()
        scrapes, problems = [], []

        def scraper():
            while not stop.is_set():
                try:
                    _, text = self.scrape()
                except OSError as e:
                    problems.append(repr(e))
                    continue
                families, _, bad = parse_prometheus(text)
                problems.extend(bad)
                snap = {}
                for fam in families.values():
                    if fam["type"] in ("counter", "histogram"):
                        for name, labels, value in fam["samples"]:
                            snap[(name, tuple(sorted(labels.items())))] = value
                scrapes.append(snap)
                time.sleep(0.05)

        def tcp_load():
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5) as s:
                        s.sendall(b"y" * 5000)
                        s.shutdown(socket.SHUT_WR)
                        recv_all(s)
                except OSError as e:
                    problems.append(repr(e))

        threads = [threading.Thread(target=scraper, daemon=True),
                   threading.Thread(target=tcp_load, daemon=True)]
        for t in threads:
            t.start()
        wrk = subprocess.run(["wrk", "-t2", "-c16", "-d3s", f"http://127.0.0.1:{self.http_port}/w"],
                             capture_output=True, timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertEqual(wrk.returncode, 0, wrk.stderr)
        self.assertEqual(problems, [])
        self.assertGreater(len(scrapes), 10)
        decreases = []
        for before, after in zip(scrapes, scrapes[1:]):
            for key, value in after.items():
                if key in before and value < before[key]:
                    decreases.append((key, before[key], value))
        self.assertEqual(decreases[:10], [])
        first, last = scrapes[0], scrapes[-1]
        key = ("ballast_vs_requests_total", (("vs", "vs-http"),))
        self.assertGreater(last[key], first[key])


class RealClients(AdminBase):
    def test_curl_fetches_both_endpoints_on_one_connection(self):
        self.start_two()
        base = f"http://127.0.0.1:{self.admin}"
        with tempfile.TemporaryDirectory() as d:
            m_path, s_path = os.path.join(d, "metrics"), os.path.join(d, "status")
            p = subprocess.run(["curl", "-sS", "--fail", "-o", m_path, "-o", s_path,
                                "-w", "%{http_code} %{num_connects}\\n",
                                f"{base}/metrics", f"{base}/status"],
                               capture_output=True, timeout=20)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(m_path) as f:
                _, _, problems = parse_prometheus(f.read())
            with open(s_path) as f:
                doc = json.load(f)
        self.assertEqual(problems, [])
        self.assertEqual(doc["state"], "running")
        # Both 200, and keep-alive: the second transfer reused the first connection.
        self.assertEqual(p.stdout.decode().split(), ["200", "1", "200", "0"])


class NotFound(AdminBase):
    def test_unknown_path_is_404(self):
        self.start_two()
        for path in ["/nope", "/status/extra", "/metricsx", "/statusx"]:
            code, _ = admin_get(self.admin, path)
            self.assertEqual(code, 404, path)


if __name__ == "__main__":
    unittest.main()
