"""Access logs (issue 3; docs/configuration.md `access_log`, docs/operations.md "Access logs"):
one JSON line per HTTP request or TCP connection, to a file or stdout, with the right values;
as many lines as requests under load; JSON escaping; rotation by rename + SIGHUP."""
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import (Ballast, CannedHttpBackend, HttpConn, HttpOrigin, QuietBallastTestCase,
                     RawBackend, SeProcess, free_port, metrics, ok_response, parse_responses,
                     read_json_lines, recv_all, refused_address, status, wait_listening,
                     wait_until, write_file_atomic)

HTTP_KEYS = {"time", "vs", "client", "method", "target", "status", "server", "bytes_in",
             "bytes_out", "header_us", "connect_us", "first_byte_us", "total_us", "retries",
             "error"}
TCP_KEYS = {"time", "vs", "client", "server", "bytes_in", "bytes_out", "connect_us", "total_us",
            "retries", "error"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def service(name, port, protocol, pool, log, extra=""):
    lines = [f"  - name: {name}", f"    listen: 127.0.0.1:{port}", f"    protocol: {protocol}",
             f"    pool: {pool}"]
    if log:
        lines.append(f"    access_log: {log}")
    if extra:
        lines.append(extra.rstrip("\n"))
    return "\n".join(lines)


def pool(name, servers, extra=""):
    lines = [f"  - name: {name}", "    servers:"]
    for s in servers:
        lines.append(f"      - {s}" if s.startswith("{") else f"      - address: {s}")
    if extra:
        lines.append(extra.rstrip("\n"))
    return "\n".join(lines)


def config(admin, services, pools, workers=2):
    return ("se:\n" f"  workers: {workers}\n" f"  admin: 127.0.0.1:{admin}\n"
            "virtual_services:\n" + "\n".join(services) + "\npools:\n" + "\n".join(pools) + "\n")


def client_of(sock):
    host, port = sock.getsockname()
    return f"{host}:{port}"


def exchange(port, data, pause_after=None, rest=b""):
    """Sends a request (optionally in two parts) on a new connection, reads to the close;
    returns (client "ip:port", raw bytes received)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        client = client_of(s)
        s.sendall(data)
        if pause_after is not None:
            time.sleep(pause_after)
            s.sendall(rest)
        return client, recv_all(s, timeout=10)


class AccessLogBase(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-alog-")
        self.addCleanup(self.tmp.cleanup)

    def wait_lines(self, path, n, timeout=10):
        """Waits until the file has at least n lines; returns the parsed lines (and checks every
        line is a valid JSON object)."""
        def enough():
            objs, bad = read_json_lines(path)
            return len(objs) + len(bad) >= n
        try:
            wait_until(enough, timeout=timeout, message=f"{n} access log lines in {path}")
        finally:
            pass
        objs, bad = read_json_lines(path)
        self.assertEqual(bad, [], "lines that are not valid JSON objects")
        return objs

    def check_common(self, line, keys):
        self.assertTrue(keys <= set(line), f"missing {keys - set(line)} in {line}")
        self.assertRegex(line["time"], TIME_RE)
        t = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - t).total_seconds()), 30, line["time"])
        for k in keys:
            if k.endswith("_us") or k in ("bytes_in", "bytes_out", "retries", "status"):
                self.assertIsInstance(line[k], int, f"{k} in {line}")
                self.assertGreaterEqual(line[k], 0, f"{k} in {line}")
        self.assertLessEqual(line["connect_us"], line["total_us"], line)
        if "first_byte_us" in line:
            self.assertLessEqual(line["first_byte_us"], line["total_us"], line)
            self.assertLessEqual(line["header_us"], line["total_us"], line)


class HttpAccessLog(AccessLogBase):
    """One ballast with four HTTP virtual services logging to one file: web (one origin), retry
    (a refusing server, then the origin), none (no usable server), tmo (client_header 300ms)."""

    def setUp(self):
        super().setUp()

        def respond(req):
            if req.target == "/slow":
                time.sleep(0.25)
            if req.target == "/big":
                return ok_response(b"x" * 10000)
            if req.target == "/reset":
                return None  # close without a response
            return ok_response(f"origin {req.method} {req.target}".encode())

        self.origin = self.track(HttpOrigin("origin", respond=respond))
        self.log = os.path.join(self.tmp.name, "access.log")
        self.web, self.retry, self.none, self.tmo, self.admin = (free_port() for _ in range(5))
        self.refused = refused_address()
        text = config(self.admin, [
            service("web", self.web, "http", "p", self.log),
            service("retry", self.retry, "http", "q", self.log),
            service("none", self.none, "http", "r", self.log),
            service("tmo", self.tmo, "http", "p", self.log, "    timeouts: { client_header: 300ms }"),
        ], [
            pool("p", [self.origin.address]),
            pool("q", [self.refused, self.origin.address]),
            pool("r", [f"{{ address: {self.origin.address}, enabled: false }}"]),
        ])
        self.b = self.track(Ballast(text, wait_ports=(self.admin,)))
        for port in (self.web, self.retry, self.none, self.tmo):
            wait_listening(self.b, port)

    def lines(self, n):
        lines = self.wait_lines(self.log, n)
        time.sleep(0.1)  # no more than n
        lines = self.wait_lines(self.log, n)
        self.assertEqual(len(lines), n, json.dumps(lines, indent=1))
        for line in lines:
            self.check_common(line, HTTP_KEYS)
        return lines

    def one(self, lines, pred):
        found = [x for x in lines if pred(x)]
        self.assertEqual(len(found), 1, (found, lines))
        return found[0]

    def test_get_post_and_keep_alive_lines(self):
        origin = self.origin
        req = b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        c_hello, raw = exchange(self.web, req)
        (st, _, body), = parse_responses(raw)
        self.assertEqual((st, body), (200, b"origin GET /hello?x=1"))
        post = (b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nConnection: close\r\n"
                b"\r\nhello world")
        c_post, raw_post = exchange(self.web, post)
        with HttpConn(self.web) as c:
            c_keep = client_of(c.sock)
            for t in ("/k1", "/k2", "/big"):
                c.request("GET", t)
                self.assertEqual(c.read_response().status, 200)
        lines = self.lines(5)

        hello = self.one(lines, lambda x: x["target"] == "/hello?x=1")
        self.assertEqual(hello["vs"], "web")
        self.assertEqual(hello["client"], c_hello)
        self.assertEqual((hello["method"], hello["status"], hello["server"], hello["error"],
                          hello["retries"]), ("GET", 200, origin.address, "", 0))
        self.assertEqual(hello["bytes_in"], len(req))
        self.assertEqual(hello["bytes_out"], len(raw))

        p = self.one(lines, lambda x: x["target"] == "/form")
        self.assertEqual((p["method"], p["status"], p["client"], p["server"]),
                         ("POST", 200, c_post, origin.address))
        self.assertEqual(p["bytes_in"], len(post))
        self.assertEqual(p["bytes_out"], len(raw_post))

        keep = [x for x in lines if x["client"] == c_keep]
        self.assertEqual([x["target"] for x in keep], ["/k1", "/k2", "/big"])
        self.assertGreaterEqual(keep[2]["bytes_out"], 10000)
        self.assertTrue(all(x["status"] == 200 and x["error"] == "" and x["method"] == "GET"
                            for x in keep), keep)

        self.assertEqual(status(self.admin)["virtual_services"][0]["access_log"],
                         {"target": self.log, "lines": 5, "dropped": 0})

    def test_counters_of_a_target_shared_by_services(self):
        """The four services write to one file: ballast_access_log_lines_total{target} counts
        the lines written to that target, whichever service they came from."""
        for port in (self.web, self.retry, self.web):
            exchange(port, b"GET /s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.lines(3)
        m = metrics(self.admin)
        self.assertEqual(m.get(f'ballast_access_log_lines_total{{target="{self.log}"}}'), 3,
                         {k: v for k, v in m.items() if "access_log" in k})
        self.assertEqual(m.get(f'ballast_access_log_dropped_total{{target="{self.log}"}}'), 0)

    def test_timings(self):
        exchange(self.web, b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        c_split, _ = exchange(self.web, b"GET /split HTTP/1.1\r\n", pause_after=0.3,
                              rest=b"Host: t\r\nConnection: close\r\n\r\n")
        lines = self.lines(2)
        slow = self.one(lines, lambda x: x["target"] == "/slow")
        self.assertGreaterEqual(slow["first_byte_us"], 200_000, slow)
        self.assertGreaterEqual(slow["total_us"], 200_000, slow)
        self.assertLess(slow["header_us"], 200_000, slow)
        split = self.one(lines, lambda x: x["target"] == "/split")
        self.assertEqual(split["client"], c_split)
        self.assertGreaterEqual(split["header_us"], 250_000, split)
        self.assertLess(split["first_byte_us"], 200_000, split)
        self.assertGreaterEqual(split["total_us"], split["header_us"], split)

    def test_retried_request(self):
        for _ in range(2):
            _, raw = exchange(self.retry, b"GET /r HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            self.assertEqual(parse_responses(raw)[0][0], 200)
        lines = self.lines(2)
        # Round robin is per worker, so which request met the refusing server first is not
        # known: the retries logged add up to the refusals counted, at least one.
        self.assertTrue(all(x["retries"] in (0, 1) for x in lines), lines)
        refusals = metrics(self.admin).get(
            f'ballast_server_errors_total{{pool="q",server="{self.refused}",kind="connect_refused"}}')
        self.assertGreaterEqual(refusals, 1)
        self.assertEqual(sum(x["retries"] for x in lines), refusals, lines)
        self.assertTrue(all(x["server"] == self.origin.address and x["status"] == 200
                            and x["error"] == "" and x["vs"] == "retry" for x in lines), lines)

    def test_bad_request_line(self):
        data = b"GET /bad HTTP/1.1\r\nHost: t\r\nBad Field: x\r\n\r\n"
        c_bad, raw = exchange(self.web, data)
        self.assertEqual(parse_responses(raw)[0][0], 400)
        bad, = self.lines(1)
        self.assertEqual((bad["client"], bad["status"], bad["method"], bad["server"],
                          bad["error"]), (c_bad, 400, "", "", "bad_request"))
        # Ballast's own error responses are bytes sent to the client like any other.
        self.assertEqual(bad["bytes_out"], len(raw), bad)
        self.assertGreater(bad["bytes_in"], 0, bad)

    def test_no_server_line(self):
        data = b"GET /n HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        c_none, raw = exchange(self.none, data)
        self.assertEqual(parse_responses(raw)[0][0], 503)
        n, = self.lines(1)
        self.assertEqual((n["vs"], n["status"], n["error"], n["server"], n["client"], n["method"],
                          n["target"]), ("none", 503, "no_server", "", c_none, "GET", "/n"))
        self.assertEqual(n["bytes_in"], len(data), n)
        self.assertEqual(n["bytes_out"], len(raw), n)

    def test_header_timeout_line(self):
        data = b"GET /t HTTP/1.1\r\nHo"
        c_tmo, raw = exchange(self.tmo, data)
        self.assertEqual(parse_responses(raw)[0][0], 408)
        t, = self.lines(1)
        self.assertEqual((t["vs"], t["status"], t["error"], t["method"], t["client"]),
                         ("tmo", 408, "header_timeout", "", c_tmo))
        self.assertGreaterEqual(t["total_us"], 250_000, t)
        self.assertEqual(t["bytes_in"], len(data), t)
        self.assertEqual(t["bytes_out"], len(raw), t)

    def test_server_reset_line(self):
        data = b"POST /reset HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        c_reset, raw = exchange(self.web, data)
        self.assertEqual(parse_responses(raw)[0][0], 502)
        r, = self.lines(1)
        self.assertEqual((r["client"], r["status"], r["method"], r["target"], r["server"],
                          r["error"]), (c_reset, 502, "POST", "/reset", self.origin.address,
                                        "server_reset"))
        self.assertEqual(r["bytes_in"], len(data), r)
        self.assertEqual(r["bytes_out"], len(raw), r)

    def test_json_special_characters_in_the_target_stay_valid_json(self):
        origin = self.track(HttpOrigin("origin"))
        log = os.path.join(self.tmp.name, "access.log")
        port, admin = free_port(), free_port()
        b = self.track(Ballast(config(admin, [service("web", port, "http", "p", log)],
                                      [pool("p", [origin.address])]), wait_ports=(admin,)))
        wait_listening(b, port)
        targets = ['/q?a="b"', "/back\\slash\\", '/mix?x=\\"}{,:[]', "/%22%5C"]
        with HttpConn(port) as c:
            for t in targets:
                c.request("GET", t)
                r = c.read_response()
                self.assertEqual(r.status, 200, t)
                self.assertEqual(r.body, f"origin GET {t}".encode())
        lines = self.wait_lines(log, len(targets))
        self.assertEqual([x["target"] for x in lines], targets)
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class TcpAccessLog(AccessLogBase):
    def test_tcp_line_per_connection_with_exact_bytes(self):
        def handler(conn):
            got = b""
            while len(got) < 100:
                d = conn.recv(65536)
                if not d:
                    return
                got += d
            conn.sendall(b"y" * 5000)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass

        backend = self.track(RawBackend(handler))
        log = os.path.join(self.tmp.name, "tcp.log")
        tcp, retry, admin = free_port(), free_port(), free_port()
        refused = refused_address()
        b = self.track(Ballast(config(admin, [service("tcp", tcp, "tcp", "p", log),
                                              service("tcp-retry", retry, "tcp", "q", log)],
                                      [pool("p", [backend.address]),
                                       pool("q", [refused, backend.address])]),
                               wait_ports=(admin,)))
        wait_listening(b, tcp)
        wait_listening(b, retry)

        def session(port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                client = client_of(s)
                s.sendall(b"x" * 100)
                got = recv_all(s, timeout=10)
                t0 = time.monotonic()
                s.shutdown(socket.SHUT_WR)
                time.sleep(0.05)
            return client, got, t0

        client, got, _ = session(tcp)
        self.assertEqual(got, b"y" * 5000)
        r1 = session(retry)
        r2 = session(retry)
        lines = self.wait_lines(log, 3)
        self.assertEqual(len(lines), 3, lines)
        for line in lines:
            self.check_common(line, TCP_KEYS)
        main = next(x for x in lines if x["vs"] == "tcp")
        self.assertEqual(main["client"], client)
        self.assertEqual((main["server"], main["bytes_in"], main["bytes_out"], main["retries"],
                          main["error"]), (backend.address, 100, 5000, 0, ""))
        rl = [x for x in lines if x["vs"] == "tcp-retry"]
        self.assertTrue(all(x["retries"] in (0, 1) for x in rl), rl)
        refusals = metrics(admin).get(
            f'ballast_server_errors_total{{pool="q",server="{refused}",kind="connect_refused"}}')
        self.assertGreaterEqual(refusals, 1)
        self.assertEqual(sum(x["retries"] for x in rl), refusals, rl)
        self.assertEqual({x["client"] for x in rl}, {r1[0], r2[0]})
        self.assertTrue(all(x["server"] == backend.address and x["bytes_out"] == 5000
                            and x["error"] == "" for x in rl), rl)
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class StdoutTarget(AccessLogBase):
    def test_stdout_has_the_access_lines_and_stderr_the_logs(self):
        origin = self.track(HttpOrigin("origin"))
        port, admin = free_port(), free_port()
        path = os.path.join(self.tmp.name, "ballast.yaml")
        with open(path, "w") as f:
            f.write(config(admin, [service("web", port, "http", "p", "stdout")],
                           [pool("p", [origin.address])]))
        p = self.track(SeProcess(path, self.tmp.name))
        wait_listening(p, port)
        p.wait_admin(admin)
        with HttpConn(port) as c:
            for i in range(5):
                c.request("GET", f"/s{i}")
                self.assertEqual(c.read_response().status, 200)
        p.proc.send_signal(signal.SIGHUP)  # an event on stderr too
        wait_until(lambda: len(read_json_lines(p.stdout_path)[0]) >= 5, timeout=10,
                   message="5 lines on stdout")
        wait_until(lambda: "config_reloaded" in p.stderr(), timeout=10, message="reload event")
        rc = p.stop()
        self.assertEqual(rc, 0, p.output())
        objs, bad = read_json_lines(p.stdout_path)
        self.assertEqual(bad, [], "stdout has something else than access lines")
        self.assertEqual([o["target"] for o in objs], [f"/s{i}" for i in range(5)])
        self.assertTrue(all(o["vs"] == "web" for o in objs))
        err = p.stderr()
        self.assertIn("service engine", err)
        self.assertNotIn('"client"', err, "access lines on stderr")
        self.assertNotIn("/s0", err)


class UnderLoad(AccessLogBase):
    def test_one_valid_line_per_request_under_wrk(self):
        backend = self.track(CannedHttpBackend(b"hello"))
        log = os.path.join(self.tmp.name, "load.log")
        port, admin = free_port(), free_port()
        b = self.track(Ballast(config(admin, [service("web", port, "http", "p", log)],
                                      [pool("p", [backend.address])]), wait_ports=(admin,)))
        wait_listening(b, port)
        wrk = subprocess.run(["wrk", "-t2", "-c16", "-d2s", f"http://127.0.0.1:{port}/load"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(wrk.returncode, 0, wrk.stderr)
        m = re.search(r"(\d+) requests in", wrk.stdout)
        wrk_requests = int(m.group(1))
        self.assertNotIn("Socket errors", wrk.stdout, wrk.stdout)
        self.assertNotIn("Non-2xx", wrk.stdout, wrk.stdout)

        def settled():
            m = metrics(admin)
            req = m['ballast_vs_requests_total{vs="web"}']
            written = m[f'ballast_access_log_lines_total{{target="{log}"}}']
            dropped = m[f'ballast_access_log_dropped_total{{target="{log}"}}']
            return (req, written, dropped) if written + dropped == req else None
        req, written, dropped = wait_until(settled, timeout=10,
                                           message="written + dropped == requests")
        objs, bad = read_json_lines(log)
        print(f"\nFIGURES access log: wrk {wrk_requests} requests; ballast requests={int(req)} "
              f"lines written={int(written)} dropped={int(dropped)} in file={len(objs)} "
              f"invalid={len(bad)}")
        self.assertEqual(bad, [])
        self.assertEqual(len(objs), written)
        self.assertGreaterEqual(req, wrk_requests)
        self.assertLessEqual(req, wrk_requests + 16)  # requests cut off when wrk stopped
        # Enough lines for concurrency between the workers' buffers and the writer to matter;
        # not a throughput target (the sanitizer build is several times slower).
        self.assertGreaterEqual(wrk_requests, 2000, "not enough load for this test")
        self.assertGreaterEqual(sum(1 for o in objs if o["status"] == 200), wrk_requests - dropped)
        st = status(admin)["virtual_services"][0]["access_log"]
        self.assertEqual(st, {"target": log, "lines": written, "dropped": dropped})
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class Rotation(AccessLogBase):
    def test_rename_then_sighup_reopens_the_file(self):
        origin = self.track(HttpOrigin("origin"))
        log = os.path.join(self.tmp.name, "access.log")
        port, admin = free_port(), free_port()
        b = self.track(Ballast(config(admin, [service("web", port, "http", "p", log)],
                                      [pool("p", [origin.address])]), wait_ports=(admin,)))
        wait_listening(b, port)

        def get(target):
            with HttpConn(port) as c:
                c.request("GET", target)
                self.assertEqual(c.read_response().status, 200)

        get("/before")
        self.wait_lines(log, 1)
        os.rename(log, log + ".1")
        get("/between")  # still to the renamed file
        self.wait_lines(log + ".1", 2)
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metrics(admin)['ballast_config_reloads_total{result="ok"}'] == 1,
                   timeout=10, message="the reload")
        get("/after")
        lines = self.wait_lines(log, 1)
        self.assertEqual([x["target"] for x in lines], ["/after"])
        self.assertEqual([x["target"] for x in read_json_lines(log + ".1")[0]],
                         ["/before", "/between"])

        # A refused reload reopens too.
        os.rename(log, log + ".2")
        write_file_atomic(b.config_path, "se: [\n")
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metrics(admin)['ballast_config_reloads_total{result="failed"}'] == 1,
                   timeout=10, message="the failed reload")
        get("/refused")
        lines = self.wait_lines(log, 1)
        self.assertEqual([x["target"] for x in lines], ["/refused"])
        self.assertEqual([x["target"] for x in read_json_lines(log + ".2")[0]], ["/after"])
        out = b.output()
        self.assertEqual(b.stop(), 0, out)

    def test_reload_moves_the_log_to_another_file(self):
        origin = self.track(HttpOrigin("origin"))
        first = os.path.join(self.tmp.name, "first.log")
        second = os.path.join(self.tmp.name, "second.log")
        port, admin = free_port(), free_port()
        b = self.track(Ballast(config(admin, [service("web", port, "http", "p", first)],
                                      [pool("p", [origin.address])]), wait_ports=(admin,)))
        wait_listening(b, port)

        def get(target):
            with HttpConn(port) as c:
                c.request("GET", target)
                self.assertEqual(c.read_response().status, 200)

        get("/one")
        self.wait_lines(first, 1)
        write_file_atomic(b.config_path, config(admin, [service("web", port, "http", "p", second)],
                                                [pool("p", [origin.address])]))
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metrics(admin)['ballast_config_reloads_total{result="ok"}'] == 1,
                   timeout=10, message="the reload")
        get("/two")
        self.assertEqual([x["target"] for x in self.wait_lines(second, 1)], ["/two"])
        time.sleep(0.2)
        self.assertEqual([x["target"] for x in read_json_lines(first)[0]], ["/one"])
        m = metrics(admin)
        self.assertEqual(m.get(f'ballast_access_log_lines_total{{target="{second}"}}'), 1)
        self.assertEqual(status(admin)["virtual_services"][0]["access_log"]["target"], second)
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


if __name__ == "__main__":
    unittest.main()
