"""Process lifecycle of `ballast se`: graceful stop on SIGTERM/SIGINT (drain), drain timeout,
second signal, several workers on SO_REUSEPORT sockets, bind failures, binding a VIP that is not
on any interface (IP_FREEBIND), SIGHUP."""
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import (BALLAST_BIN, Ballast, HttpBackend, QuietBallastTestCase, RawBackend, echo,
                     free_port, http_config, listening_sockets, metrics, parse_responses,
                     peer_closed, process_socket_inodes, recv_all, recv_exactly, status,
                     wait_listening, wait_until, connect_refused)


def slow_fast_handler(req, body):
    if req.path.startswith("/slow"):
        time.sleep(1.0)
        return 200, {}, b"slow answer " + b"s" * 10_000
    return 200, {}, b"fast answer"


def read_one_response(sock, timeout=10.0):
    """Reads one Content-Length response from a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        b = sock.recv(65536)
        if not b:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        b = sock.recv(65536)
        if not b:
            break
        rest += b
    return parse_responses(head + b"\r\n\r\n" + rest)[0]


class GracefulStop(QuietBallastTestCase):
    def _graceful(self, sig):
        backend = self.track(HttpBackend("b", handler=slow_fast_handler))
        b, port, admin = self.start_ballast_quiet([backend.address], protocol="http",
                                                  se_extra="  drain_timeout: 30s")
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            idle.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
            st, _, body = read_one_response(idle)
            self.assertEqual((st, body), (200, b"fast answer"))
            busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_until(lambda: any(r[1] == "/slow" for r in backend.requests), timeout=5,
                       message="the slow request at the backend")
            t0 = time.monotonic()
            b.proc.send_signal(sig)
            # Stops accepting at once, while the in-flight request is still running.
            wait_until(lambda: connect_refused(port), timeout=1.0, interval=0.01,
                       message="new connections refused")
            self.assertIsNone(b.proc.poll(), "exited before the in-flight request finished")
            # The idle keep-alive connection is closed.
            self.assertIn(peer_closed(idle, timeout=3), ("eof", "reset"))
            # The in-flight request gets its whole response, with Connection: close.
            data = recv_all(busy, timeout=10)
            responses = parse_responses(data)
            self.assertEqual(len(responses), 1, data[:300])
            st, headers, body = responses[0]
            self.assertEqual(st, 200)
            self.assertEqual(body, b"slow answer " + b"s" * 10_000)
            self.assertEqual(headers.get("connection", "").lower(), "close", headers)
            rc = b.proc.wait(timeout=10)
            elapsed = time.monotonic() - t0
        finally:
            idle.close()
            busy.close()
        self.assertEqual(rc, 0, b.output())
        self.assertGreater(elapsed, 0.5)   # it did wait for the slow response ...
        self.assertLess(elapsed, 5.0)      # ... and no longer than needed (drain_timeout 30s)

    def test_sigterm_drains_in_flight_and_exits_0(self):
        self._graceful(signal.SIGTERM)

    def test_sigint_drains_in_flight_and_exits_0(self):
        self._graceful(signal.SIGINT)

    def test_drain_timeout_closes_open_tcp_connection(self):
        backend = self.track(RawBackend(echo))
        b, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                              se_extra="  drain_timeout: 1s")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            t0 = time.monotonic()
            b.proc.send_signal(signal.SIGTERM)
            how = peer_closed(s, timeout=8)
            closed_after = time.monotonic() - t0
            rc = b.proc.wait(timeout=10)
            elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(rc, 0, b.output())
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 5.0)
        self.assertGreaterEqual(closed_after, 0.8)  # not closed before the drain timeout

    def test_tcp_connection_finishing_during_drain_ends_it_early(self):
        backend = self.track(RawBackend(echo))
        b, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                              se_extra="  drain_timeout: 30s")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            b.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: connect_refused(port), timeout=2, message="draining")
            # The open connection keeps working during the drain, then ends normally.
            s.sendall(b"more")
            self.assertEqual(recv_exactly(s, 4), b"more")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s, timeout=5), b"")
            t0 = time.monotonic()
        rc = b.proc.wait(timeout=10)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_sigterm_with_nothing_open_exits_at_once(self):
        backend = self.track(RawBackend(echo))
        b, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                              se_extra="  drain_timeout: 30s")
        t0 = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        rc = b.proc.wait(timeout=10)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 1.0)

    def test_drain_timeout_0s_closes_connections_at_once(self):
        backend = self.track(RawBackend(echo))
        b, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                              se_extra="  drain_timeout: 0s")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            t0 = time.monotonic()
            b.proc.send_signal(signal.SIGTERM)
            self.assertIn(peer_closed(s, timeout=5), ("eof", "reset"))
            rc = b.proc.wait(timeout=10)
            self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(rc, 0)

    def test_second_sigterm_stops_at_once(self):
        backend = self.track(RawBackend(echo))
        b, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                              se_extra="  drain_timeout: 30s")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            b.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: connect_refused(port), timeout=2, message="draining")
            self.assertIsNone(b.proc.poll())
            # Still draining: the connection works.
            s.sendall(b"again")
            self.assertEqual(recv_exactly(s, 5), b"again")
            t0 = time.monotonic()
            b.proc.send_signal(signal.SIGTERM)
            try:
                rc = b.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.fail("a second SIGTERM did not stop the process")
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertIn(peer_closed(s, timeout=3), ("eof", "reset"))
        # Killed by the signal (negative) would not be a clean stop.
        self.assertGreaterEqual(rc, 0, b.output())


class Workers(QuietBallastTestCase):
    def test_four_workers_all_serve_on_reuseport_sockets(self):
        backend = self.track(RawBackend(echo))
        b, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp", workers=4)
        wait_listening(b, port, count=4)
        mine = process_socket_inodes(b.pid)
        listeners = [i for i in listening_sockets(port) if i in mine]
        self.assertEqual(len(listeners), 4, "one SO_REUSEPORT listening socket per worker")
        self.assertEqual(status(admin)["workers"], 4)
        self.assertEqual(metrics(admin)["ballast_workers"], 4)
        # 400 connections open at once: the kernel spreads them over the four sockets, so a
        # worker that did not accept would leave about 100 of them unanswered.
        n = 400
        socks = []
        try:
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for i, s in enumerate(socks):
                msg = f"c{i:03d}".encode()
                s.sendall(msg)
                self.assertEqual(recv_exactly(s, len(msg), timeout=10), msg, f"connection {i}")
            self.assertEqual(status(admin)["virtual_services"][0]["connections"]["active"], n)
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=10, message="active back to 0")
        self.assertEqual(status(admin)["virtual_services"][0]["connections"]["total"], n)


class Binding(QuietBallastTestCase):
    def _start_on_taken_port(self):
        """Runs ballast with a second virtual service on a port that a plain (no SO_REUSEPORT)
        socket listens on. Returns (CompletedProcess, taken port, other port, seconds)."""
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(8)
        self.track(blocker)
        taken = blocker.getsockname()[1]
        ok_port, admin = free_port(), free_port()
        config = f"""se:
  workers: 2
  admin: 127.0.0.1:{admin}
virtual_services:
  - name: first-ok
    listen: 127.0.0.1:{ok_port}
    protocol: tcp
    pool: p
  - name: clash-vs
    listen: 127.0.0.1:{taken}
    protocol: tcp
    pool: p
pools:
  - name: p
    servers:
      - address: 127.0.0.1:{free_port()}
"""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "b.yaml")
            with open(path, "w") as f:
                f.write(config)
            t0 = time.monotonic()
            p = subprocess.run([BALLAST_BIN, "se", "--config", path], capture_output=True,
                               timeout=15)
        return p, taken, ok_port, time.monotonic() - t0

    def test_listen_address_in_use_exits_1_naming_service_and_address(self):
        p, taken, ok_port, elapsed = self._start_on_taken_port()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertLess(elapsed, 5)
        out = (p.stdout + p.stderr).decode()
        lines = [line for line in out.splitlines() if f"127.0.0.1:{taken}" in line]
        self.assertTrue(lines, out)
        self.assertIn("clash-vs", lines[0], out)
        self.assertTrue(connect_refused(ok_port), "the other service must not keep listening")

    def test_bind_error_is_on_stderr(self):
        # docs/operations.md: "It refuses to start, with exit status 1 and every error on stderr".
        p, taken, _, _ = self._start_on_taken_port()
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"127.0.0.1:{taken}", p.stderr.decode(),
                      f"stdout: {p.stdout.decode()!r} stderr: {p.stderr.decode()!r}")

    def test_vip_not_on_any_interface_binds_with_freebind(self):
        backend = self.track(RawBackend(echo))
        port, admin = free_port(), free_port()
        config = http_config(port, [backend.address], admin, protocol="tcp").replace(
            f"listen: 127.0.0.1:{port}", f"listen: 192.0.2.10:{port}")
        b = self.track(Ballast(config, wait_ports=(admin,)))
        wait_listening(b, port, host="192.0.2.10", count=2)
        self.assertIsNone(b.proc.poll())
        vs = status(admin)["virtual_services"][0]
        self.assertEqual(vs["listen"], f"192.0.2.10:{port}")
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


class Sighup(QuietBallastTestCase):
    def test_sighup_reloads_and_keeps_running(self):
        backend = self.track(RawBackend(echo))
        b, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp")
        b.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config_reloaded" in b.output(), timeout=5,
                   message="a reload event in the log")
        self.assertIsNone(b.proc.poll())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"still here")
            self.assertEqual(recv_exactly(s, 10), b"still here")
        self.assertEqual(status(admin)["state"], "running")
        out = b.output()
        self.assertEqual(b.stop(), 0, out)


if __name__ == "__main__":
    unittest.main()
