"""Binary upgrade without dropping connections (issue 3, docs/operations.md "Upgrading the binary
without dropping connections"): `ballast se --config F --takeover PATH` takes the listening
sockets of the running engine over se.control_socket; the old one drains and exits 0."""
import os
import signal
import socket
import tempfile
import time
import unittest

from harness import (CannedHttpBackend, HttpBackend, HttpConn, LoadGenerator,
                     QuietBallastTestCase, SeProcess, connect_refused, free_port, http_get,
                     listening_sockets, process_socket_inodes, read_json_lines, status,
                     wait_listening, wait_until)


def make_config(admin, control_socket, services, servers, workers=2, drain_timeout="30s"):
    """services: [(name, port)] (http, all on pool p); servers: addresses of pool p."""
    lines = ["se:", f"  workers: {workers}", f"  admin: 127.0.0.1:{admin}",
             f"  control_socket: {control_socket}", f"  drain_timeout: {drain_timeout}",
             "virtual_services:"]
    for name, port in services:
        lines += [f"  - name: {name}", f"    listen: 127.0.0.1:{port}", "    protocol: http",
                  "    pool: p"]
    lines += ["pools:", "  - name: p", "    servers:"]
    lines += [f"      - address: {s}" for s in servers]
    return "\n".join(lines) + "\n"


def own_listeners(pid, port):
    mine = process_socket_inodes(pid)
    return sorted(i for i in listening_sockets(port) if i in mine)


class TakeoverBase(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-takeover-")
        self.addCleanup(self.tmp.cleanup)
        self.sock_path = os.path.join(self.tmp.name, "se.sock")
        self.n_configs = 0

    def write_config(self, text):
        self.n_configs += 1
        path = os.path.join(self.tmp.name, f"ballast-{self.n_configs}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def se(self, config_path, takeover=False):
        args = ["--takeover", self.sock_path] if takeover else []
        return self.track(SeProcess(config_path, self.tmp.name, args))

    def start_serving(self, config_path, admin, ports):
        p = self.se(config_path)
        for port in ports:
            wait_listening(p, port)
        p.wait_admin(admin)
        wait_until(lambda: os.path.exists(self.sock_path), timeout=5,
                   message="the control socket")
        return p

    def upgrade(self, old, config_path, admin, timeout=20, check_control=False):
        """Starts a successor with --takeover; waits for the old one to exit. Returns (new
        process, old exit code, seconds until the old one exited). check_control: the
        successor must have logged no error (it holds the control socket for the next one)."""
        t0 = time.monotonic()
        new = self.se(config_path, takeover=True)
        deadline = t0 + timeout
        while old.proc.poll() is None and new.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        rc = old.proc.poll()
        elapsed = time.monotonic() - t0
        self.assertIsNone(new.proc.poll(), f"the new engine exited:\n{new.output()}")
        self.assertIsNotNone(rc, f"the old engine did not exit:\n{old.output()}\n{new.output()}")
        new.wait_admin(admin)
        if check_control:
            self.assertNotIn(" error ", new.stderr(), f"the new engine:\n{new.output()}")
        return new, rc, elapsed


class UpgradeUnderLoad(TakeoverBase):
    def test_two_chained_upgrades_under_load_drop_nothing(self):
        b1 = self.track(CannedHttpBackend(b"b1"))
        b2 = self.track(CannedHttpBackend(b"b2"))
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [b1.address, b2.address]))
        a = self.start_serving(path, admin, [port])
        load = LoadGenerator(port, keepalive=4, fresh=3, connectors=1,
                             check_body=lambda body: body in (b"b1", b"b2"))
        figures = []
        try:
            time.sleep(0.5)
            b, rc_a, t_a = self.upgrade(a, path, admin)
            figures.append(("A->B", rc_a, round(t_a, 2), load.snapshot()))
            time.sleep(0.5)
            # B must hold the control socket now, for the next upgrade.
            self.assertNotIn(" error ", b.stderr(), f"the new engine:\n{b.output()}")
            c, rc_b, t_b = self.upgrade(b, path, admin, check_control=True)
            figures.append(("B->C", rc_b, round(t_b, 2), load.snapshot()))
            time.sleep(0.5)
        finally:
            summary = load.stop()
            print(f"\nFIGURES takeover: chained upgrades under load: requests ok={summary['ok']} "
                  f"failed={summary['failed']} refused={summary['refused']} "
                  f"connect_errors={summary['connect_errors']} connects(only)={summary['connects']} "
                  f"upgrades done {[(n, rc, t) for n, rc, t, _ in figures]} "
                  f"(old engine's exit code, seconds to exit)")
        self.assertEqual(summary["failed"], 0, summary["failures"])
        self.assertEqual(summary["refused"], 0, "a new connection was refused during an upgrade")
        self.assertEqual(summary["connect_errors"], 0, summary["failures"])
        self.assertEqual(rc_a, 0, a.output())
        self.assertEqual(rc_b, 0, b.output())
        self.assertGreater(summary["ok"], 300, summary)
        # Every phase had traffic.
        self.assertGreater(figures[1][3]["ok"], figures[0][3]["ok"])
        self.assertGreater(summary["ok"], figures[1][3]["ok"])
        st = status(admin)
        self.assertEqual(st["pid"], c.pid)
        self.assertEqual(st["state"], "running")
        self.assertEqual(len(own_listeners(c.pid, port)), 2)
        self.assertEqual(http_get(port).status, 200)
        self.assertIn("takeover", a.stderr())
        self.assertIn("takeover", c.stderr())
        out = c.output()
        self.assertEqual(c.stop(), 0, out)

    def test_request_in_flight_at_the_old_engine_completes(self):
        def slow(req, body):
            if req.path == "/slow":
                time.sleep(1.0)
            return 200, {}, b"answer " + req.path.encode()

        backend = self.track(HttpBackend("b", handler=slow))
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]))
        a = self.start_serving(path, admin, [port])
        with HttpConn(port) as conn:
            conn.request("GET", "/slow")
            wait_until(lambda: any(r[1] == "/slow" for r in backend.requests), timeout=5,
                       message="the slow request at the backend")
            t0 = time.monotonic()
            b = self.se(path, takeover=True)
            b.wait_admin(admin)
            # The new engine serves while the old one still has its request.
            self.assertEqual(http_get(port, "/fast").body, b"answer /fast")
            self.assertIsNone(a.proc.poll(), "the old engine left before its request finished")
            r = conn.read_response()
            self.assertEqual((r.status, r.body), (200, b"answer /slow"))
        rc = a.wait_exit(10)
        self.assertEqual(rc, 0, a.output())
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(status(admin)["pid"], b.pid)
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class FailedUpgrade(TakeoverBase):
    def test_invalid_config_exits_1_and_the_old_engine_keeps_serving(self):
        backend = self.track(CannedHttpBackend(b"old"))
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]))
        a = self.start_serving(path, admin, [port])
        listeners = own_listeners(a.pid, port)
        bad = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                            [backend.address]).replace("workers: 2", "workers: 0"))
        b = self.se(bad, takeover=True)
        rc = b.wait_exit(10)
        self.assertEqual(rc, 1, b.output())
        self.assertIn(f"{bad}:2: se.workers", b.stderr())
        time.sleep(0.3)
        self.assertIsNone(a.proc.poll(), a.output())
        st = status(admin)
        self.assertEqual((st["pid"], st["state"]), (a.pid, "running"))
        self.assertEqual(own_listeners(a.pid, port), listeners)
        self.assertEqual(http_get(port).body, b"old")
        # The control socket still works: a valid upgrade goes through afterwards.
        c, rc_a, _ = self.upgrade(a, path, admin)
        self.assertEqual(rc_a, 0, a.output())
        self.assertEqual(http_get(port).body, b"old")
        out = c.output()
        self.assertEqual(c.stop(), 0, out)

    def test_new_engine_that_cannot_bind_exits_1_and_the_old_one_keeps_serving(self):
        backend = self.track(CannedHttpBackend(b"old"))
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(8)
        self.track(blocker)
        taken = blocker.getsockname()[1]
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]))
        a = self.start_serving(path, admin, [port])
        listeners = own_listeners(a.pid, port)
        clash = self.write_config(make_config(admin, self.sock_path,
                                              [("web", port), ("clash", taken)],
                                              [backend.address]))
        load = LoadGenerator(port, keepalive=2, fresh=1, connectors=0)
        try:
            time.sleep(0.2)
            b = self.se(clash, takeover=True)
            rc = b.wait_exit(15)
            time.sleep(0.3)
        finally:
            summary = load.stop()
        self.assertEqual(rc, 1, b.output())
        self.assertIn(f"127.0.0.1:{taken}", b.stderr())
        self.assertIsNone(a.proc.poll(), a.output())
        st = status(admin)
        self.assertEqual((st["pid"], st["state"]), (a.pid, "running"))
        self.assertEqual(own_listeners(a.pid, port), listeners)
        self.assertEqual(summary["failed"] + summary["refused"] + summary["connect_errors"], 0,
                         summary)
        self.assertEqual(http_get(port).body, b"old")
        c, rc_a, _ = self.upgrade(a, path, admin)
        self.assertEqual(rc_a, 0)
        out = c.output()
        self.assertEqual(c.stop(), 0, out)


class ControlSocket(TakeoverBase):
    def test_second_engine_without_takeover_refuses_to_start(self):
        backend = self.track(CannedHttpBackend(b"first"))
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]))
        a = self.start_serving(path, admin, [port])
        listeners = own_listeners(a.pid, port)
        b = self.se(path)
        rc = b.wait_exit(5)
        if rc is None:
            extra = own_listeners(b.pid, port)
            b.stop(signal.SIGKILL)
            self.fail(f"a second engine on a live control socket kept running (and holds "
                      f"{len(extra)} listening sockets on the service port):\n{b.output()}")
        self.assertEqual(rc, 1, b.output())
        err = b.stderr()
        self.assertIn(self.sock_path, err)
        self.assertIn("--takeover", err)
        self.assertIsNone(a.proc.poll())
        self.assertEqual(status(admin)["pid"], a.pid)
        self.assertEqual(own_listeners(a.pid, port), listeners)
        self.assertEqual(http_get(port).body, b"first")
        # The live engine's control socket still works.
        c, rc_a, _ = self.upgrade(a, path, admin)
        self.assertEqual(rc_a, 0)
        out = c.output()
        self.assertEqual(c.stop(), 0, out)

    def test_stale_socket_of_a_killed_engine_does_not_prevent_a_start(self):
        backend = self.track(CannedHttpBackend(b"b"))
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]))
        a = self.start_serving(path, admin, [port])
        a.stop(signal.SIGKILL)
        self.assertTrue(os.path.exists(self.sock_path), "no stale socket file to test with")
        wait_until(lambda: connect_refused(port), timeout=5, message="the killed engine gone")

        # Taking over from nobody fails at once, with a clear message.
        t0 = time.monotonic()
        orphan = self.se(path, takeover=True)
        rc = orphan.wait_exit(15)
        self.assertEqual(rc, 1, orphan.output())
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn(self.sock_path, orphan.stderr())
        self.assertTrue(connect_refused(port))

        # A plain start over the stale file works, and can itself be taken over.
        b = self.start_serving(path, admin, [port])
        self.assertEqual(http_get(port).body, b"b")
        c, rc_b, _ = self.upgrade(b, path, admin)
        self.assertEqual(rc_b, 0, b.output())
        self.assertEqual(http_get(port).body, b"b")
        out = c.output()
        self.assertEqual(c.stop(), 0, out)


class ChangedServices(TakeoverBase):
    def test_new_config_adds_and_drops_services(self):
        backend = self.track(CannedHttpBackend(b"b"))
        kept, dropped, added, admin = free_port(), free_port(), free_port(), free_port()
        old = self.write_config(make_config(admin, self.sock_path,
                                            [("kept", kept), ("dropped", dropped)],
                                            [backend.address]))
        new = self.write_config(make_config(admin, self.sock_path,
                                            [("kept", kept), ("added", added)],
                                            [backend.address]))
        a = self.start_serving(old, admin, [kept, dropped])
        kept_sockets = own_listeners(a.pid, kept)
        self.assertTrue(connect_refused(added))
        b, rc, _ = self.upgrade(a, new, admin)
        self.assertEqual(rc, 0, a.output())
        # The kept address: the very sockets the old engine had, now in the new one.
        self.assertEqual(own_listeners(b.pid, kept), kept_sockets)
        self.assertEqual(len(own_listeners(b.pid, added)), 2)
        self.assertEqual(own_listeners(b.pid, dropped), [])
        self.assertEqual(listening_sockets(dropped), [])
        self.assertTrue(connect_refused(dropped))
        self.assertEqual(http_get(kept).body, b"b")
        self.assertEqual(http_get(added).body, b"b")
        self.assertEqual([v["name"] for v in status(admin)["virtual_services"]], ["kept", "added"])
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class AccessLogAcrossUpgrade(TakeoverBase):
    def test_every_request_has_its_line_across_an_upgrade(self):
        backend = self.track(CannedHttpBackend(b"b"))
        log = os.path.join(self.tmp.name, "access.log")
        port, admin = free_port(), free_port()
        path = self.write_config(make_config(admin, self.sock_path, [("web", port)],
                                             [backend.address]).replace(
            "    pool: p\n", f"    pool: p\n    access_log: {log}\n"))
        a = self.start_serving(path, admin, [port])
        load = LoadGenerator(port, keepalive=3, fresh=2, connectors=0)
        try:
            time.sleep(0.3)
            b, rc, _ = self.upgrade(a, path, admin)
            time.sleep(0.3)
        finally:
            summary = load.stop()
        self.assertEqual(rc, 0, a.output())
        self.assertEqual(summary["failed"] + summary["refused"] + summary["connect_errors"], 0,
                         summary)
        out = b.output()
        self.assertEqual(b.stop(), 0, out)
        objs, bad = read_json_lines(log)
        self.assertEqual(bad, [])
        self.assertEqual(len(objs), summary["ok"],
                         f"{len(objs)} lines for {summary['ok']} requests")


if __name__ == "__main__":
    unittest.main()
