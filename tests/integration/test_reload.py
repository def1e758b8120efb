"""Hitless reload (issue 3, docs/operations.md "Reloading the configuration"): SIGHUP and
POST /reload under load, invalid files, listeners kept / opened / closed, in-flight requests on
the old snapshot, server state carried over by identity, unbindable addresses, restart-only
settings."""
import json
import os
import signal
import socket
import time
import unittest

from harness import (Ballast, CannedHttpBackend, ConnectionClosed, HttpBackend, HttpConn,
                     LoadGenerator, QuietBallastTestCase, RawBackend, admin_post,
                     connect_refused, free_port, http_get, listening_sockets, metrics,
                     process_socket_inodes, status, wait_listening, wait_port, wait_until,
                     write_file_atomic)


def make_config(admin, services, pools, workers=2, se_extra="", monitors=""):
    """services: [(name, port, protocol, pool, extra yaml lines for the service)];
    pools: [(name, [server yaml flow maps or addresses], extra yaml lines for the pool)]."""
    lines = ["se:", f"  workers: {workers}", f"  admin: 127.0.0.1:{admin}"]
    if se_extra:
        lines.append(se_extra.rstrip("\n"))
    lines.append("virtual_services:")
    for name, port, protocol, pool, extra in services:
        lines += [f"  - name: {name}", f"    listen: 127.0.0.1:{port}",
                  f"    protocol: {protocol}", f"    pool: {pool}"]
        if extra:
            lines.append(extra.rstrip("\n"))
    lines.append("pools:")
    for name, servers, extra in pools:
        lines += [f"  - name: {name}", "    servers:"]
        for s in servers:
            lines.append(f"      - {s}" if s.startswith("{") else f"      - address: {s}")
        if extra:
            lines.append(extra.rstrip("\n"))
    if monitors:
        lines.append("health_monitors:")
        lines.append(monitors.rstrip("\n"))
    return "\n".join(lines) + "\n"


def body_of(port, target="/"):
    r = http_get(port, target)
    return r.status, r.body


def own_listeners(pid, port):
    mine = process_socket_inodes(pid)
    return sorted(i for i in listening_sockets(port) if i in mine)


def reload_post(admin):
    st, _, body = admin_post(admin, "/reload")
    return st, json.loads(body)


class ReloadBase(QuietBallastTestCase):
    def start(self, text, wait=()):
        b = self.track(Ballast(text, wait_ports=()))
        for port in wait:
            wait_listening(b, port)
        return b

    def stop_clean(self, b):
        out = b.output()
        self.assertEqual(b.stop(), 0, out)

    def generation(self, admin):
        return metrics(admin).get("ballast_config_generation")

    def reloads(self, admin):
        m = metrics(admin)
        return (m.get('ballast_config_reloads_total{result="ok"}'),
                m.get('ballast_config_reloads_total{result="failed"}'))


class ReloadUnderLoad(ReloadBase):
    def test_50_sighup_reloads_alternating_configs_under_load(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        b3 = self.track(CannedHttpBackend(b"b3"))
        port, admin = free_port(), free_port()
        conf_a = make_config(admin, [("web", port, "http", "p", "")],
                             [("p", [b1.address, b2.address], "")])
        conf_b = make_config(admin, [("web", port, "http", "p", "")],
                             [("p", [f"{{ address: {b1.address}, weight: 3 }}", b2.address,
                                     b3.address], "    lb_algorithm: least_connections")])
        b = self.start(conf_a, wait=(port,))
        wait_port(admin)
        inodes_before = own_listeners(b.pid, port)
        self.assertEqual(len(inodes_before), 2)

        load = LoadGenerator(port, keepalive=4, fresh=3, connectors=1,
                             check_body=lambda body: body in (b"b1", b"b2", b"b3"))
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            for i in range(50):
                write_file_atomic(b.config_path, conf_b if i % 2 == 0 else conf_a)
                b.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: self.generation(admin) == i + 1, timeout=10,
                           message=f"reload {i + 1} applied")
                time.sleep(0.03)
            reload_seconds = time.monotonic() - t0
            time.sleep(0.3)
        finally:
            summary = load.stop()
        inodes_after = own_listeners(b.pid, port)
        ok, failed = self.reloads(admin)
        print(f"\nFIGURES reload: 50 reloads in {reload_seconds:.2f}s under load; "
              f"requests ok={summary['ok']} failed={summary['failed']} "
              f"refused={summary['refused']} connect_errors={summary['connect_errors']} "
              f"connects(only)={summary['connects']} bodies={summary['bodies']} "
              f"b3 requests={b3.requests}")
        self.assertEqual(summary["failed"], 0, summary["failures"])
        self.assertEqual(summary["refused"], 0, "a new connection was refused during the reloads")
        self.assertEqual(summary["connect_errors"], 0, summary["failures"])
        self.assertGreater(summary["ok"], 500, summary)
        self.assertGreater(summary["connects"], 100, summary)
        self.assertGreater(b3.requests, 0, "configuration B (with b3) was never in effect")
        self.assertEqual(self.generation(admin), 50)
        self.assertEqual((ok, failed), (50, 0))
        self.assertEqual(inodes_after, inodes_before, "the listening sockets were replaced")
        st = status(admin)
        self.assertEqual(st["config"]["generation"], 50)
        self.assertTrue(st["reload"]["ok"])
        self.assertEqual(st["reload"]["errors"], [])
        self.assertIsNone(b.proc.poll())
        self.stop_clean(b)


class InvalidConfig(ReloadBase):
    def test_invalid_file_keeps_old_config_and_is_reported_everywhere(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin = free_port(), free_port()
        valid_a = make_config(admin, [("web", port, "http", "p", "")], [("p", [b1.address], "")])
        b = self.start(valid_a, wait=(port,))
        wait_port(admin)
        self.assertEqual(body_of(port), (200, b"b1"))

        # Would send traffic to b2 if applied; its line 9 has an unknown key.
        invalid = make_config(admin, [("web", port, "http", "p", "    colour: red")],
                              [("p", [b2.address], "")])
        bad_line = invalid.splitlines().index("    colour: red") + 1
        write_file_atomic(b.config_path, invalid)
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.reloads(admin) == (0, 1), timeout=10, message="a failed reload")

        expected = f"{b.config_path}:{bad_line}: virtual_services[0].colour: unknown key"
        out = b.output()
        self.assertIn(f"reload: {expected}", out)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        failed_events = [e for e in events if e.get("event") == "config_reload_failed"]
        self.assertEqual(len(failed_events), 1, out)
        st = status(admin)
        self.assertEqual(st["reload"]["ok"], False)
        self.assertTrue(any(e.startswith(expected) for e in st["reload"]["errors"]), st["reload"])
        self.assertGreaterEqual(st["reload"]["seconds_ago"], 0)
        self.assertEqual(st["config"]["generation"], 0)
        self.assertEqual(self.generation(admin), 0)
        self.assertEqual([e["event"] for e in st["events"]][-1:], ["config_reload_failed"])
        # Still serving, routing unchanged.
        for _ in range(5):
            self.assertEqual(body_of(port), (200, b"b1"))

        # The same through the admin endpoint: 422 with the errors.
        code, report = reload_post(admin)
        self.assertEqual(code, 422, report)
        self.assertEqual(report["ok"], False)
        self.assertTrue(any(e.startswith(expected) for e in report["errors"]), report)
        self.assertEqual(self.reloads(admin), (0, 2))
        self.assertEqual(body_of(port), (200, b"b1"))

        # A valid file clears the error.
        valid_b = make_config(admin, [("web", port, "http", "p", "")], [("p", [b2.address], "")])
        write_file_atomic(b.config_path, valid_b)
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        self.assertEqual(report["ok"], True)
        self.assertEqual(report["errors"], [])
        self.assertIsInstance(report["notes"], list)
        st = status(admin)
        self.assertEqual(st["reload"]["ok"], True)
        self.assertEqual(st["reload"]["errors"], [])
        self.assertEqual(st["config"]["generation"], 1)
        self.assertEqual(st["events"][-1]["event"], "config_reloaded")
        self.assertEqual(self.reloads(admin), (1, 2))
        self.assertEqual(body_of(port), (200, b"b2"))

    def test_kinds_of_invalid_file_change_nothing(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin = free_port(), free_port()
        valid = make_config(admin, [("web", port, "http", "p", "")], [("p", [b1.address], "")])
        b = self.start(valid, wait=(port,))
        wait_port(admin)
        other = make_config(admin, [("web", port, "http", "p", "")], [("p", [b2.address], "")])
        cases = {
            "yaml syntax": other.replace("pools:", "pools: [", 1),
            "empty": "",
            "unknown pool": other.replace("    pool: p", "    pool: nope"),
            "bad value": other.replace("  workers: 2", "  workers: many"),
            "missing file": None,
        }
        failed = 0
        for name, text in cases.items():
            with self.subTest(name):
                if text is None:
                    os.unlink(b.config_path)
                else:
                    write_file_atomic(b.config_path, text)
                code, report = reload_post(admin)
                failed += 1
                self.assertEqual(code, 422, report)
                self.assertFalse(report["ok"])
                self.assertTrue(report["errors"], report)
                self.assertTrue(all(e.startswith(b.config_path) for e in report["errors"]), report)
                self.assertEqual(body_of(port), (200, b"b1"))
                self.assertEqual(self.reloads(admin), (0, failed))
                self.assertEqual(status(admin)["reload"]["ok"], False)
        self.assertIsNone(b.proc.poll())
        self.stop_clean(b)


class ListenersAcrossReloads(ReloadBase):
    def test_added_service_listens_and_removed_one_refuses(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        p1, p2, admin = free_port(), free_port(), free_port()
        pools = [("pa", [b1.address], ""), ("pb", [b2.address], "")]
        only_a = make_config(admin, [("a", p1, "http", "pa", "")], pools)
        both = make_config(admin, [("a", p1, "http", "pa", ""), ("b", p2, "http", "pb", "")], pools)
        only_b = make_config(admin, [("b", p2, "http", "pb", "")], pools)
        b = self.start(only_a, wait=(p1,))
        wait_port(admin)
        self.assertTrue(connect_refused(p2))

        write_file_atomic(b.config_path, both)
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        # Listening as soon as the reload is answered.
        self.assertEqual(len(own_listeners(b.pid, p2)), 2)
        self.assertEqual(body_of(p2), (200, b"b2"))
        self.assertEqual(body_of(p1), (200, b"b1"))

        write_file_atomic(b.config_path, only_b)
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        self.assertEqual(own_listeners(b.pid, p1), [], "the removed service still has sockets")
        self.assertTrue(connect_refused(p1), "the removed service's port still accepts")
        self.assertEqual(body_of(p2), (200, b"b2"))
        self.assertEqual([v["name"] for v in status(admin)["virtual_services"]], ["b"])

        # And it can come back.
        write_file_atomic(b.config_path, both)
        self.assertEqual(reload_post(admin)[0], 200)
        self.assertEqual(body_of(p1), (200, b"b1"))
        self.stop_clean(b)

    def test_kept_address_keeps_its_sockets_through_pool_protocol_and_name_changes(self):
        banner = b"220 server speaks first\r\n"

        def server_first(conn):
            conn.sendall(banner)
            while True:
                d = conn.recv(65536)
                if not d:
                    return
                conn.sendall(d)

        web = self.track(CannedHttpBackend(b"web"))
        tcp = self.track(RawBackend(server_first))
        port, admin = free_port(), free_port()
        pools = [("web", [web.address], ""), ("tcp", [tcp.address], "")]
        as_http = make_config(admin, [("svc", port, "http", "web", "")], pools)
        as_tcp = make_config(admin, [("renamed", port, "tcp", "tcp", "")], pools)
        b = self.start(as_http, wait=(port,))
        wait_port(admin)
        before = own_listeners(b.pid, port)
        self.assertEqual(len(before), 2)
        self.assertEqual(body_of(port), (200, b"web"))

        write_file_atomic(b.config_path, as_tcp)
        self.assertEqual(reload_post(admin)[0], 200)
        self.assertEqual(own_listeners(b.pid, port), before)
        # Now a TCP service: a server that speaks first is heard at once, without the client
        # sending anything (a listener left deferring accepts would hold the connection).
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                t0 = time.monotonic()
                s.settimeout(5)
                got = b""
                while len(got) < len(banner):
                    d = s.recv(100)
                    if not d:
                        break
                    got += d
                waited = time.monotonic() - t0
                self.assertEqual(got, banner)
                self.assertLess(waited, 0.5, "the banner was held back")
                s.sendall(b"ping")
                self.assertEqual(s.recv(100), b"ping")

        write_file_atomic(b.config_path, as_http)
        self.assertEqual(reload_post(admin)[0], 200)
        self.assertEqual(own_listeners(b.pid, port), before)
        self.assertEqual(body_of(port), (200, b"web"))
        self.stop_clean(b)

    def test_unbindable_new_address_refuses_the_whole_reload(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(8)
        self.track(blocker)
        taken = blocker.getsockname()[1]
        port, admin = free_port(), free_port()
        pools = [("p", [b1.address], ""), ("q", [b2.address], "")]
        start = make_config(admin, [("web", port, "http", "p", "")], pools)
        # Changes the existing service's pool too: none of it may be applied.
        clash = make_config(admin, [("web", port, "http", "q", ""),
                                    ("clash", taken, "http", "q", "")], pools)
        b = self.start(start, wait=(port,))
        wait_port(admin)
        write_file_atomic(b.config_path, clash)
        code, report = reload_post(admin)
        self.assertEqual(code, 422, report)
        self.assertFalse(report["ok"])
        self.assertTrue(any(f"127.0.0.1:{taken}" in e for e in report["errors"]), report)
        self.assertIn(f"127.0.0.1:{taken}", b.output())
        self.assertEqual(body_of(port), (200, b"b1"))
        st = status(admin)
        self.assertEqual([v["name"] for v in st["virtual_services"]], ["web"])
        self.assertEqual(st["virtual_services"][0]["pool"], "p")
        self.assertEqual(st["config"]["generation"], 0)
        self.assertFalse(st["reload"]["ok"])
        self.assertEqual(self.reloads(admin), (0, 1))
        # Nothing of ours was left on the taken port (only the blocker listens there).
        self.assertEqual(own_listeners(b.pid, taken), [])

        # Once the port is free, the same file applies.
        blocker.close()
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        self.assertEqual(body_of(port), (200, b"b2"))
        self.assertEqual(body_of(taken), (200, b"b2"))
        self.stop_clean(b)


class InFlight(ReloadBase):
    def test_slow_request_started_before_reload_completes_on_old_pool(self):
        def slow(req, body):
            if req.path == "/slow":
                time.sleep(1.0)
            return 200, {}, b"old " + req.path.encode()

        old = self.track(HttpBackend("old", handler=slow))
        new = self.track(CannedHttpBackend(b"new"))
        port, admin = free_port(), free_port()
        b = self.start(make_config(admin, [("web", port, "http", "p", "")],
                                   [("p", [old.address], "")]), wait=(port,))
        wait_port(admin)
        with HttpConn(port) as c:
            c.request("GET", "/slow")
            wait_until(lambda: any(r[1] == "/slow" for r in old.requests), timeout=5,
                       message="the slow request at the old server")
            write_file_atomic(b.config_path, make_config(
                admin, [("web", port, "http", "p2", "")], [("p2", [new.address], "")]))
            code, report = reload_post(admin)
            self.assertEqual(code, 200, report)
            # New connections already use the new pool while the old request runs.
            self.assertEqual(body_of(port), (200, b"new"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"old /slow"))
        self.stop_clean(b)


class KeepAliveAcrossReload(ReloadBase):
    """Issue 3: "in-flight requests finish on the snapshot they started with". A keep-alive
    connection opened before a reload is not a request in flight: its next requests follow the
    new configuration, or ballast ends the connection (Connection: close, or closing it while
    idle) so that the client comes back on a new one, as HAProxy's and Envoy's reloads do. The
    client here behaves like a real one: it reconnects when the connection is closed, and
    resends an idempotent GET that got no response byte on a reused connection."""

    def client(self, port):
        state = {"conn": HttpConn(port), "resent": 0, "reconnects": 0}

        def get():
            for _ in range(3):
                if state["conn"] is None:
                    state["conn"] = HttpConn(port)
                    state["reconnects"] += 1
                c = state["conn"]
                try:
                    c.request("GET", "/")
                    r = c.read_response()
                except (OSError, ConnectionClosed):
                    c.close()
                    state["conn"] = None
                    state["resent"] += 1
                    continue
                if "close" in r.header_list("connection"):
                    c.close()
                    state["conn"] = None
                return r
            raise AssertionError("no response after 3 attempts")
        return state, get

    def test_requests_on_an_old_keep_alive_connection_leave_a_removed_server(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin = free_port(), free_port()
        b = self.start(make_config(admin, [("web", port, "http", "p", "")],
                                   [("p", [b1.address], "")]), wait=(port,))
        wait_port(admin)
        state, get = self.client(port)
        self.assertEqual(get().body, b"b1")
        write_file_atomic(b.config_path, make_config(admin, [("web", port, "http", "p", "")],
                                                     [("p", [b2.address], "")]))
        self.assertEqual(reload_post(admin)[0], 200)
        b1_before = b1.requests
        deadline = time.monotonic() + 5
        bodies = []
        while time.monotonic() < deadline:
            r = get()
            self.assertEqual(r.status, 200)
            bodies.append(r.body)
            if r.body == b"b2":
                break
            time.sleep(0.05)
        self.assertEqual(bodies[-1], b"b2",
                         f"5 s after the reload, {b1.requests - b1_before} requests still went to "
                         f"the removed server over the connection opened before it")
        if state["conn"] is not None:
            state["conn"].close()
        self.stop_clean(b)

    def test_old_keep_alive_connection_of_a_removed_service_is_ended(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        port, other, admin = free_port(), free_port(), free_port()
        pools = [("p", [b1.address], "")]
        b = self.start(make_config(admin, [("web", port, "http", "p", ""),
                                           ("gone", other, "http", "p", "")], pools),
                       wait=(port, other))
        wait_port(admin)
        c = HttpConn(other)
        self.addCleanup(c.close)
        c.request("GET", "/")
        self.assertEqual(c.read_response().status, 200)
        write_file_atomic(b.config_path, make_config(admin, [("web", port, "http", "p", "")],
                                                     pools))
        self.assertEqual(reload_post(admin)[0], 200)
        self.assertTrue(connect_refused(other))
        served = 0
        deadline = time.monotonic() + 5
        ended = False
        while time.monotonic() < deadline:
            try:
                c.request("GET", "/")
                r = c.read_response()
            except (OSError, ConnectionClosed):
                ended = True
                break
            served += 1
            if "close" in r.header_list("connection"):
                ended = True
                break
            time.sleep(0.05)
        self.assertTrue(ended, f"the removed service still served {served} requests over 5 s "
                               f"on a connection opened before the reload")
        self.stop_clean(b)


class StateCarriesOver(ReloadBase):
    def test_health_and_counters_carry_over_by_server_identity(self):
        good = self.track(CannedHttpBackend(b"good"))

        def failing_health(req, body):
            if req.path == "/health":
                return 500, {}, b"sick"
            return 200, {}, b"bad"

        bad = self.track(HttpBackend("bad", handler=failing_health))
        extra = self.track(CannedHttpBackend(b"extra"))
        port, admin = free_port(), free_port()
        monitors = ("  - { name: hc, type: http, interval: 500ms, timeout: 400ms, rise: 1, fall: 2,"
                    " request: \"GET /health\" }")
        before_conf = make_config(admin, [("web", port, "http", "p", "")],
                                  [("p", [good.address, bad.address], "    health_monitors: [hc]")],
                                  monitors=monitors)
        # Same servers (by pool/address), plus one, other weights and retries.
        after_conf = make_config(
            admin, [("web", port, "http", "p", "    retries: 1")],
            [("p", [f"{{ address: {good.address}, weight: 2 }}", bad.address, extra.address],
              "    health_monitors: [hc]")],
            monitors=monitors)
        b = self.start(before_conf, wait=(port,))
        wait_port(admin)

        def server(st, address):
            return next(s for p in st["pools"] for s in p["servers"] if s["address"] == address)

        wait_until(lambda: server(status(admin), bad.address)["health"]["state"] == "down",
                   timeout=10, message="the failing server down")
        for _ in range(10):
            self.assertEqual(body_of(port), (200, b"good"))
        st = status(admin)
        good_requests = server(st, good.address)["requests"]
        vs_requests = st["virtual_services"][0]["requests"]
        self.assertGreaterEqual(good_requests, 10)
        reason = server(st, bad.address)["health"].get("reason")

        write_file_atomic(b.config_path, after_conf)
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        st = status(admin)
        m = metrics(admin)
        bad_health = server(st, bad.address)["health"]
        self.assertEqual(bad_health["state"], "down", bad_health)
        self.assertFalse(bad_health["healthy"])
        self.assertEqual(bad_health.get("reason"), reason)
        self.assertEqual(m[f'ballast_server_healthy{{pool="p",server="{bad.address}"}}'], 0)
        self.assertEqual(m[f'ballast_server_up{{pool="p",server="{bad.address}"}}'], 0)
        self.assertEqual(server(st, good.address)["requests"], good_requests)
        self.assertEqual(st["virtual_services"][0]["requests"], vs_requests)
        # Right after the reload, the down server still gets nothing.
        bodies = [body_of(port)[1] for _ in range(12)]
        self.assertNotIn(b"bad", bodies)
        self.assertEqual(set(bodies), {b"good", b"extra"})
        st = status(admin)
        self.assertEqual(server(st, good.address)["requests"] + server(st, extra.address)["requests"],
                         good_requests + 12)
        self.assertEqual(st["virtual_services"][0]["requests"], vs_requests + 12)
        self.stop_clean(b)


class RestartOnlySettings(ReloadBase):
    def test_workers_and_admin_changes_are_noted_and_the_rest_applied(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin, other_admin = free_port(), free_port(), free_port()
        b = self.start(make_config(admin, [("web", port, "http", "p", "")],
                                   [("p", [b1.address], "")], workers=2), wait=(port,))
        wait_port(admin)
        changed = make_config(other_admin, [("web", port, "http", "p", "")],
                              [("p", [b2.address], "")], workers=1)
        write_file_atomic(b.config_path, changed)
        code, report = reload_post(admin)
        self.assertEqual(code, 200, report)
        notes = " | ".join(report["notes"])
        self.assertTrue(any("se.workers" in n and "restart" in n for n in report["notes"]), notes)
        self.assertTrue(any("se.admin" in n and "restart" in n for n in report["notes"]), notes)
        self.assertEqual(body_of(port), (200, b"b2"))
        st = status(admin)  # still on the running admin address
        self.assertEqual(st["workers"], 2)
        self.assertEqual(metrics(admin)["ballast_workers"], 2)
        self.assertEqual(len(own_listeners(b.pid, port)), 2)
        self.assertTrue(connect_refused(other_admin))
        self.assertIn("se.workers", b.output())
        self.stop_clean(b)

    def test_header_size_needing_larger_buffers_is_refused(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin = free_port(), free_port()
        b = self.start(make_config(admin, [("web", port, "http", "p", "")],
                                   [("p", [b1.address], "")]), wait=(port,))
        wait_port(admin)
        write_file_atomic(b.config_path, make_config(
            admin, [("web", port, "http", "p", "    max_header_size: 1MiB")],
            [("p", [b2.address], "")]))
        code, report = reload_post(admin)
        self.assertEqual(code, 422, report)
        self.assertTrue(any("restart" in e for e in report["errors"]), report)
        self.assertEqual(body_of(port), (200, b"b1"))
        self.stop_clean(b)


if __name__ == "__main__":
    unittest.main()
