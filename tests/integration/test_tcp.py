"""L4 (protocol: tcp) proxy: streaming, round robin, half-close, failover, timeouts, limits,
resets and byte counters. Real sockets on both sides of a real `ballast se`."""
import hashlib
import os
import socket
import threading
import time
import unittest

from harness import (Ballast, BlackholeListener, ConnectionRecorder, QuietBallastTestCase,
                     RawBackend, echo, free_port, http_config, metrics, peer_closed, recv_all,
                     recv_exactly, refused_address, reset_close, status, wait_until)

VS_ERR = 'ballast_vs_errors_total{vs="vs",kind="%s"}'


def server_key(family, address, extra=""):
    return f'{family}{{pool="p",server="{address}"{extra}}}'


def tcp_connect(port, timeout=10.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def echo_roundtrip(sock, data=b"ping", timeout=5.0):
    """Sends data and reads back as many bytes (through an echo backend)."""
    sock.sendall(data)
    return recv_exactly(sock, len(data), timeout)


def tag_backend(name):
    """A backend that records the first line the client sends (its tag), answers
    '<name> <tag>\\n' and then echoes until EOF."""
    def handler(conn, rec):
        buf = b""
        while b"\n" not in buf:
            b = conn.recv(4096)
            if not b:
                return
            buf += b
        tag, _, rest = buf.partition(b"\n")
        rec["tag"] = tag.decode()
        conn.sendall(f"{name} {rec['tag']}\n".encode() + rest)
        echo(conn)
    return ConnectionRecorder(name, handler)


def read_line(sock, timeout=5.0):
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            break
        buf += b
    return buf.decode()


class Streaming(QuietBallastTestCase):
    def test_echo_several_megabytes_both_ways_concurrently(self):
        backend = self.track(RawBackend(echo))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp")
        payload = os.urandom(8 * 1024 * 1024)
        received = hashlib.sha256()
        got = 0
        with tcp_connect(port) as s:
            errors = []

            def send():
                try:
                    view = memoryview(payload)
                    for i in range(0, len(payload), 100_000):
                        s.sendall(view[i:i + 100_000])
                    s.shutdown(socket.SHUT_WR)
                except OSError as e:
                    errors.append(e)

            t = threading.Thread(target=send, daemon=True)
            t.start()
            s.settimeout(20)
            while True:
                b = s.recv(262144)
                if not b:
                    break
                received.update(b)
                got += len(b)
            t.join(20)
        self.assertEqual(errors, [])
        self.assertEqual(got, len(payload))
        self.assertEqual(received.hexdigest(), hashlib.sha256(payload).hexdigest())

    def test_echo_with_smallest_and_largest_buffer_size(self):
        backend = self.track(RawBackend(echo))
        payload = os.urandom(3 * 1024 * 1024 + 17)
        for size in ("4KiB", "1MiB"):
            with self.subTest(buffer_size=size):
                _, port, _ = self.start_ballast_quiet([backend.address],
                                                      se_extra=f"  buffer_size: {size}")
                with tcp_connect(port) as s:
                    t = threading.Thread(
                        target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)),
                        daemon=True)
                    t.start()
                    got = recv_all(s, timeout=20)
                    t.join(20)
                self.assertEqual(len(got), len(payload))
                self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(payload).digest())

    def test_independent_streams_both_ways(self):
        """Backend sends its own 6 MB while it receives the client's 6 MB (not an echo)."""
        down = os.urandom(6 * 1024 * 1024)

        def handler(conn, rec):
            h = hashlib.sha256()
            n = 0

            def reader():
                nonlocal n
                while True:
                    b = conn.recv(262144)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            conn.sendall(down)
            conn.shutdown(socket.SHUT_WR)
            t.join(30)
            rec["sha"], rec["n"] = h.hexdigest(), n

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp")
        up = os.urandom(6 * 1024 * 1024)
        with tcp_connect(port) as s:
            t = threading.Thread(target=lambda: (s.sendall(up), s.shutdown(socket.SHUT_WR)),
                                 daemon=True)
            t.start()
            got = recv_all(s, timeout=20)
            t.join(20)
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(down).hexdigest())
        backend.wait(lambda r: r and r[0].get("done"), timeout=20)
        self.assertEqual(backend.records[0]["n"], len(up))
        self.assertEqual(backend.records[0]["sha"], hashlib.sha256(up).hexdigest())

    def test_200_concurrent_connections_echo_distinct_data(self):
        backend = self.track(RawBackend(echo))
        _, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp")
        n = 200
        socks = [tcp_connect(port, timeout=20) for _ in range(n)]
        try:
            # Every connection is open at once before any data moves.
            wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == n,
                       timeout=20, message=f"{n} active connections")
            results = [None] * n

            def run(i):
                data = (f"conn-{i:04d}-".encode() * 4000)[:40_000 + i]
                try:
                    socks[i].sendall(data)
                    socks[i].shutdown(socket.SHUT_WR)
                    back = recv_all(socks[i], timeout=20)
                    results[i] = back == data
                except OSError as e:
                    results[i] = repr(e)

            threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            bad = [(i, r) for i, r in enumerate(results) if r is not True]
            self.assertEqual(bad, [])
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=10, message="active connections back to 0")
        self.assertEqual(status(admin)["virtual_services"][0]["connections"]["total"], n)


class ServerFirst(QuietBallastTestCase):
    def test_backend_speaks_first(self):
        """Server-first protocols (SMTP, MySQL...): the server connection is made at accept,
        without waiting for client bytes."""
        def handler(conn, rec):
            conn.sendall(b"220 banner\r\n")
            rec["got"] = conn.recv(100)
            conn.sendall(b"bye\r\n")

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address])
        with tcp_connect(port) as s:
            self.assertEqual(recv_exactly(s, 12, timeout=5), b"220 banner\r\n")
            s.sendall(b"QUIT\r\n")
            self.assertEqual(recv_all(s, timeout=5), b"bye\r\n")
        self.assertEqual(backend.records[0]["got"], b"QUIT\r\n")

    def test_backend_that_closes_at_once(self):
        backend = self.track(ConnectionRecorder("b", lambda conn, rec: None))
        _, port, admin = self.start_ballast_quiet([backend.address])
        with tcp_connect(port) as s:
            self.assertIn(peer_closed(s, timeout=5), ("eof", "reset"))
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=5, message="no active connection")


class Ipv6(QuietBallastTestCase):
    def test_ipv6_listen_and_server(self):
        lsock = socket.create_server(("::1", 0), family=socket.AF_INET6)
        self.track(lsock)
        bport = lsock.getsockname()[1]

        def serve():
            while True:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    return
                with conn:
                    try:
                        echo(conn)
                    except OSError:
                        pass

        threading.Thread(target=serve, daemon=True).start()
        port, admin = free_port(), free_port()
        config = http_config(port, [f'"[::1]:{bport}"'], admin, protocol="tcp").replace(
            f"listen: 127.0.0.1:{port}", f'listen: "[::1]:{port}"')
        self.track(Ballast(config, wait_ports=(admin,)))
        with wait_until(lambda: socket.create_connection(("::1", port), timeout=10),
                        timeout=10, message="the IPv6 listener") as s:
            self.assertEqual(echo_roundtrip(s, b"over v6"), b"over v6")
        st = status(admin)
        self.assertEqual(st["virtual_services"][0]["listen"], f"[::1]:{port}")
        self.assertEqual(st["pools"][0]["servers"][0]["address"], f"[::1]:{bport}")
        self.assertIn(f'ballast_server_connections_total{{pool="p",server="[::1]:{bport}"}}',
                      metrics(admin))


class RoundRobin(QuietBallastTestCase):
    def test_connections_rotate_over_servers(self):
        backends = [self.track(tag_backend(name)) for name in ("a", "b", "c")]
        _, port, _ = self.start_ballast_quiet([b.address for b in backends], protocol="tcp")
        seen = []
        for i in range(9):
            with tcp_connect(port) as s:
                s.sendall(f"c{i}\n".encode())
                line = read_line(s)
                seen.append(line.split()[0] if line else None)
                self.assertEqual(line.split()[1:], [f"c{i}"])
        # Sequential connections: a strict rotation (which server comes first is not specified).
        self.assertEqual(sorted(seen[:3]), ["a", "b", "c"], seen)
        self.assertEqual(seen[3:6], seen[:3], seen)
        self.assertEqual(seen[6:9], seen[:3], seen)
        for b in backends:
            self.assertEqual(sorted(r["tag"] for r in b.records),
                             sorted(f"c{i}" for i, name in enumerate(seen) if name == b.name))

    def _rotation(self, servers, n):
        _, port, _ = self.start_ballast_quiet(servers)
        seen = []
        for i in range(n):
            with tcp_connect(port) as s:
                s.sendall(f"w{i}\n".encode())
                seen.append(read_line(s).split()[0])
        return seen

    def test_weights(self):
        a, b = (self.track(tag_backend(name)) for name in ("a", "b"))
        # http_config writes "- address: X"; the extra keys of a server follow on their own lines.
        seen = self._rotation([f"{a.address}\n        weight: 2", b.address], 9)
        self.assertEqual((seen.count("a"), seen.count("b")), (6, 3), seen)

    def test_disabled_server_gets_nothing_and_weights_still_hold(self):
        a, b, c = (self.track(tag_backend(name)) for name in ("a", "b", "c"))
        seen = self._rotation([f"{a.address}\n        weight: 2", b.address,
                               f"{c.address}\n        enabled: false"], 9)
        self.assertEqual(c.records, [])
        # docs/configuration.md: "a server of weight 2 gets twice as many as one of weight 1".
        self.assertEqual((seen.count("a"), seen.count("b")), (6, 3), seen)


    def test_refused_server_turns_are_shared_fairly(self):
        """A server that refuses: its connections fail over, and the live servers still share
        the connections equally (round robin per connection)."""
        a, b = (self.track(tag_backend(name)) for name in ("a", "b"))
        seen = self._rotation([a.address, b.address, refused_address()], 12)
        self.assertEqual((seen.count("a"), seen.count("b")), (6, 6), seen)


class HalfClose(QuietBallastTestCase):
    def test_client_shuts_write_backend_still_sends(self):
        tail = os.urandom(1024 * 1024)

        def handler(conn, rec):
            data = b""
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                data += b
            rec["got"] = data
            # The client's write side is shut: the server can still answer, at length.
            conn.sendall(b"after-eof:" + data + tail)
            conn.shutdown(socket.SHUT_WR)

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp")
        with tcp_connect(port) as s:
            s.sendall(b"question")
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s, timeout=10)
        self.assertEqual(len(got), len(b"after-eof:question") + len(tail))
        self.assertEqual(got, b"after-eof:question" + tail)
        self.assertEqual(backend.records[0]["got"], b"question")

    def test_backend_shuts_write_client_still_sends(self):
        upload = os.urandom(1024 * 1024)

        def handler(conn, rec):
            conn.sendall(b"hello, then EOF")
            conn.shutdown(socket.SHUT_WR)
            h, n = hashlib.sha256(), 0
            conn.settimeout(20)
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                h.update(b)
                n += len(b)
            rec["sha"], rec["n"] = h.hexdigest(), n

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp")
        with tcp_connect(port) as s:
            s.settimeout(10)
            greeting = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break  # EOF from the server side: our write side must still work
                greeting += b
            self.assertEqual(greeting, b"hello, then EOF")
            s.sendall(upload)
            s.shutdown(socket.SHUT_WR)
            backend.wait(lambda r: r and r[0].get("done"), timeout=15)
            # Both directions are now closed: the client sees the connection end.
            self.assertEqual(peer_closed(s, timeout=5), "eof")
        self.assertEqual(backend.records[0]["n"], len(upload))
        self.assertEqual(backend.records[0]["sha"], hashlib.sha256(upload).hexdigest())


class ConnectFailover(QuietBallastTestCase):
    def test_refused_server_is_skipped(self):
        live = self.track(tag_backend("live"))
        dead = refused_address()
        _, port, admin = self.start_ballast_quiet([dead, live.address], protocol="tcp")
        for i in range(4):
            with tcp_connect(port) as s:
                s.sendall(f"r{i}\n".encode())
                self.assertEqual(read_line(s), f"live r{i}\n")
        m = metrics(admin)
        self.assertGreaterEqual(
            m[server_key("ballast_server_errors_total", dead, ',kind="connect_refused"')], 1)
        self.assertEqual(m[VS_ERR % "no_server"], 0)

    def test_connect_timeout_fails_over(self):
        hole = self.track(BlackholeListener())
        live = self.track(tag_backend("live"))
        _, port, admin = self.start_ballast_quiet([hole.address, live.address],
                                                  vs_extra="    timeouts: {connect: 300ms}")
        durations = []
        for i in range(2):  # at least one of them tries the silent server first
            t0 = time.monotonic()
            with tcp_connect(port) as s:
                s.sendall(f"t{i}\n".encode())
                self.assertEqual(read_line(s, timeout=10), f"live t{i}\n")
            durations.append(time.monotonic() - t0)
        slow = [d for d in durations if d >= 0.25]
        self.assertTrue(slow, durations)                 # waited for the connect timeout
        self.assertLess(max(durations), 3.0, durations)  # ... and not much longer
        key = server_key("ballast_server_errors_total", hole.address, ',kind="connect_timeout"')
        self.assertEqual(metrics(admin)[key], len(slow), durations)
        self.assertEqual(metrics(admin)[VS_ERR % "no_server"], 0)

    def test_all_servers_down_closes_client_and_counts_no_server(self):
        _, port, admin = self.start_ballast_quiet([refused_address(), refused_address()])
        t0 = time.monotonic()
        try:
            with tcp_connect(port) as s:
                try:
                    s.sendall(b"anyone?")
                except OSError:
                    pass
                how = peer_closed(s, timeout=5)
        except ConnectionResetError:
            how = "reset"
        self.assertIn(how, ("eof", "reset"))
        self.assertLess(time.monotonic() - t0, 2.0)
        wait_until(lambda: metrics(admin)[VS_ERR % "no_server"] == 1, timeout=5,
                   message="no_server == 1")
        self.assertEqual(status(admin)["virtual_services"][0]["errors"]["no_server"], 1)


    def test_all_servers_silent_closes_client_after_connect_timeouts(self):
        holes = [self.track(BlackholeListener()) for _ in range(2)]
        _, port, admin = self.start_ballast_quiet([h.address for h in holes],
                                                  vs_extra="    timeouts: {connect: 300ms}")
        t0 = time.monotonic()
        try:
            with tcp_connect(port) as s:
                how = peer_closed(s, timeout=8)
        except ConnectionResetError:
            how = "reset"
        elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"))
        self.assertGreater(elapsed, 0.25)
        self.assertLess(elapsed, 3.0)  # two attempts of 300 ms, not the default 5 s each
        wait_until(lambda: metrics(admin)[VS_ERR % "no_server"] == 1, timeout=5,
                   message="no_server == 1")

    def test_client_leaving_during_connect_is_cleaned_up(self):
        hole = self.track(BlackholeListener())
        _, port, admin = self.start_ballast_quiet([hole.address],
                                                  vs_extra="    timeouts: {connect: 3s}")
        for _ in range(5):
            with tcp_connect(port) as s:
                s.sendall(b"early bytes")
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["total"] == 5,
                   timeout=5, message="5 connections accepted")
        # The client is gone: ballast gives up on the connect (at the latest at the timeout).
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0
                   and status(admin)["pools"][0]["servers"][0]["connections"]["active"] == 0,
                   timeout=8, message="no active connection left")


class IdleTimeout(QuietBallastTestCase):
    def test_idle_connection_is_closed(self):
        backend = self.track(RawBackend(echo))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                        vs_extra="    timeouts: {idle: 500ms}")
        with tcp_connect(port) as s:
            self.assertEqual(echo_roundtrip(s, b"x"), b"x")
            t0 = time.monotonic()
            how = peer_closed(s, timeout=5)
            elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"))
        self.assertGreater(elapsed, 0.35)
        self.assertLess(elapsed, 2.5)

    def test_active_connection_is_kept(self):
        backend = self.track(RawBackend(echo))
        _, port, _ = self.start_ballast_quiet([backend.address], protocol="tcp",
                                        vs_extra="    timeouts: {idle: 500ms}")
        with tcp_connect(port) as s:
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < 2.0:
                msg = f"tick {i}".encode()
                self.assertEqual(echo_roundtrip(s, msg), msg, f"after {time.monotonic() - t0:.2f}s")
                i += 1
                time.sleep(0.2)
            # Only the client side sends (the backend stays silent): still activity.
            s.sendall(b"final")
            self.assertEqual(recv_exactly(s, 5), b"final")
            self.assertIn(peer_closed(s, timeout=5), ("eof", "reset"))  # idle again: closed


    def test_download_only_is_activity(self):
        """Only the server sends (a slow download): the client side is silent but the
        connection is not idle."""
        def handler(conn, rec):
            conn.recv(10)
            for i in range(10):
                conn.sendall(f"chunk {i}\n".encode())
                time.sleep(0.2)
            conn.sendall(b"end\n")
            rec["sent"] = True
            conn.recv(10)

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address],
                                              vs_extra="    timeouts: {idle: 500ms}")
        with tcp_connect(port) as s:
            s.sendall(b"go")
            lines = [read_line(s, timeout=5) for _ in range(11)]
        self.assertEqual(lines, [f"chunk {i}\n" for i in range(10)] + ["end\n"])

    def test_upload_only_is_activity(self):
        """Only the client sends (a slow upload): the server side is silent but the
        connection is not idle."""
        def handler(conn, rec):
            data = b""
            conn.settimeout(10)
            while not data.endswith(b"end\n"):
                b = conn.recv(100)
                if not b:
                    break
                data += b
            rec["data"] = data
            conn.sendall(b"thanks")

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, _ = self.start_ballast_quiet([backend.address],
                                              vs_extra="    timeouts: {idle: 500ms}")
        with tcp_connect(port) as s:
            for i in range(10):
                s.sendall(f"chunk {i}\n".encode())
                time.sleep(0.2)
            s.sendall(b"end\n")
            self.assertEqual(recv_exactly(s, 6, timeout=5), b"thanks")
        backend.wait(lambda r: r and "data" in r[0], timeout=5)
        self.assertEqual(backend.records[0]["data"],
                         b"".join(f"chunk {i}\n".encode() for i in range(10)) + b"end\n")


class MaxConnections(QuietBallastTestCase):
    def test_third_connection_refused_then_served_again(self):
        backend = self.track(RawBackend(echo))
        _, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp",
                                            vs_extra="    max_connections: 2")
        first, second = tcp_connect(port), tcp_connect(port)
        try:
            self.assertEqual(echo_roundtrip(first, b"one"), b"one")
            self.assertEqual(echo_roundtrip(second, b"two"), b"two")
            t0 = time.monotonic()
            try:
                with tcp_connect(port) as third:
                    try:
                        third.sendall(b"three")
                    except OSError:
                        pass
                    self.assertIn(peer_closed(third, timeout=5), ("eof", "reset"))
            except ConnectionResetError:
                pass  # reset before connect() returned: refused at once as well
            self.assertLess(time.monotonic() - t0, 1.5)
            self.assertEqual(backend.connections, 2)
            wait_until(lambda: metrics(admin)[VS_ERR % "max_connections"] == 1, timeout=5,
                       message="max_connections == 1")
            # The two first still work.
            self.assertEqual(echo_roundtrip(first, b"still"), b"still")
            first.close()
            wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 1,
                       timeout=5, message="one active connection")
            with tcp_connect(port) as fourth:
                self.assertEqual(echo_roundtrip(fourth, b"four"), b"four")
        finally:
            first.close()
            second.close()
        self.assertEqual(metrics(admin)[VS_ERR % "max_connections"], 1)


    def test_limit_is_per_engine_across_workers(self):
        backend = self.track(RawBackend(echo))
        _, port, admin = self.start_ballast_quiet([backend.address], workers=4,
                                                  vs_extra="    max_connections: 10")
        socks, served, refused = [], 0, 0
        try:
            for i in range(20):
                try:
                    s = tcp_connect(port)
                except ConnectionResetError:  # reset before connect() returned
                    refused += 1
                    continue
                socks.append(s)
                try:
                    s.sendall(b"hi")
                    if recv_exactly(s, 2, timeout=3) == b"hi":
                        served += 1
                        continue
                except (ConnectionResetError, BrokenPipeError):
                    pass
                except socket.timeout:
                    self.fail(f"connection {i} neither served nor closed")
                refused += 1
        finally:
            for s in socks:
                s.close()
        self.assertEqual((served, refused), (10, 10))
        self.assertEqual(metrics(admin)[VS_ERR % "max_connections"], 10)


class Resets(QuietBallastTestCase):
    def test_no_descriptor_leak_after_failures(self):
        def handler(conn, rec):
            cmd = conn.recv(10)
            if cmd == b"reset":
                reset_close(conn)
            elif cmd == b"close":
                return
            else:
                conn.sendall(cmd)
                echo(conn)

        backend = self.track(ConnectionRecorder("b", handler))
        b, port, admin = self.start_ballast_quiet([refused_address(), backend.address])
        baseline = len(os.listdir(f"/proc/{b.pid}/fd"))
        for i in range(30):
            with tcp_connect(port) as s:
                kind = ("reset", "close", "echo", "client-reset")[i % 4]
                s.sendall(b"ping" if kind in ("echo", "client-reset") else kind.encode())
                if kind == "echo":
                    self.assertEqual(recv_exactly(s, 4), b"ping")
                    s.shutdown(socket.SHUT_WR)
                    self.assertEqual(recv_all(s), b"")
                elif kind == "client-reset":
                    self.assertEqual(recv_exactly(s, 4), b"ping")
                    reset_close(s)
                else:
                    self.assertIn(peer_closed(s), ("eof", "reset"))
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=5, message="no active connection")
        wait_until(lambda: len(os.listdir(f"/proc/{b.pid}/fd")) <= baseline, timeout=5,
                   message=f"descriptors back to {baseline}")

    def test_backend_reset_mid_stream_closes_client(self):
        def handler(conn, rec):
            conn.recv(100)
            conn.sendall(b"x" * 100_000)
            time.sleep(0.2)
            reset_close(conn)

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp")
        with tcp_connect(port) as s:
            s.sendall(b"go")
            t0 = time.monotonic()
            how = peer_closed(s, timeout=5)
            self.assertIn(how, ("eof", "reset"))
            self.assertLess(time.monotonic() - t0, 3.0)
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=5, message="no active connection")

    def test_client_reset_closes_backend(self):
        def handler(conn, rec):
            conn.settimeout(10)
            rec["first"] = conn.recv(100)
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        rec["end"] = "eof"
                        break
            except ConnectionResetError:
                rec["end"] = "reset"
            except socket.timeout:
                rec["end"] = "timeout"

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp")
        s = tcp_connect(port)
        s.sendall(b"hello")
        backend.wait(lambda r: r and r[0].get("first"), timeout=5)
        reset_close(s)
        backend.wait(lambda r: r[0].get("done"), timeout=8)
        self.assertIn(backend.records[0]["end"], ("eof", "reset"))
        wait_until(lambda: status(admin)["virtual_services"][0]["connections"]["active"] == 0,
                   timeout=5, message="no active connection")


class ByteCounters(QuietBallastTestCase):
    def test_bytes_in_metrics_match_traffic(self):
        down = b"D" * 70_000

        def handler(conn, rec):
            n = 0
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                n += len(b)
            rec["n"] = n
            conn.sendall(down)

        backend = self.track(ConnectionRecorder("b", handler))
        _, port, admin = self.start_ballast_quiet([backend.address], protocol="tcp")
        sizes = [123_456, 1, 50_000]
        for size in sizes:
            with tcp_connect(port) as s:
                s.sendall(b"u" * size)
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(len(recv_all(s, timeout=10)), len(down))
        up_total, down_total = sum(sizes), len(down) * len(sizes)
        keys = {
            'ballast_vs_bytes_in_total{vs="vs"}': up_total,
            'ballast_vs_bytes_out_total{vs="vs"}': down_total,
            server_key("ballast_server_bytes_out_total", backend.address): up_total,
            server_key("ballast_server_bytes_in_total", backend.address): down_total,
            'ballast_pool_bytes_out_total{pool="p"}': up_total,
            'ballast_pool_bytes_in_total{pool="p"}': down_total,
            'ballast_vs_connections_total{vs="vs"}': len(sizes),
            server_key("ballast_server_connections_total", backend.address): len(sizes),
        }
        try:
            wait_until(lambda: all(metrics(admin).get(k) == v for k, v in keys.items()),
                       timeout=5, message="byte counters")
        except TimeoutError:
            pass  # the exact comparison below says which one is off
        m = metrics(admin)
        self.assertEqual({k: m.get(k) for k in keys}, keys)
        self.assertEqual(sorted(r["n"] for r in backend.records), sorted(sizes))


if __name__ == "__main__":
    unittest.main()
