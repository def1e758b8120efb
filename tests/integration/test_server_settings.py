"""Server settings (pools[].servers[]): enabled: false gets nothing; drain: true gets no new
requests or connections (set at start, or by a reload while a request is in flight and a keep-alive
client connection is open; TCP connections in progress continue); max_connections caps the
requests in flight at a server across both workers, the excess goes elsewhere, and 503 (HTTP) or a
refused connection (TCP) when every server is full."""
import collections
import socket
import threading
import time
import unittest

from harness import (ClientLoad, HttpConn, HttpOrigin, QuietBallastTestCase, RawBackend,
                     TrackingBackend, backend_name, http_get, lb_config, metric, peer_closed,
                     recv_exactly, reload_config, server_metric, server_status, start_lb,
                     vs_error_key, wait_until)


def names(port, n, conn=None, target="/n"):
    out = []
    for i in range(n):
        if conn is None:
            r = http_get(port, f"{target}{i}")
        else:
            conn.request("GET", f"{target}{i}")
            r = conn.read_response()
        assert r.status == 200, (r.status, r.body)
        out.append(backend_name(r.body))
    return out


class Background:
    def __init__(self):
        self.threads, self.results, self.lock = [], [], threading.Lock()

    def get(self, port, target):
        def run():
            try:
                r = http_get(port, target, timeout=30)
                res = (target, r.status, backend_name(r.body))
            except Exception as e:  # noqa: BLE001 - asserted by the test
                res = (target, repr(e), None)
            with self.lock:
                self.results.append(res)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self):
        for t in self.threads:
            t.join(30)
        return sorted(self.results)


class EnabledAndDrain(QuietBallastTestCase):
    def test_disabled_server_gets_no_traffic(self):
        origins = [self.track(HttpOrigin(n)) for n in "abc"]
        _, port, admin = start_lb(self, [origins[0].address,
                                         {"address": origins[1].address, "enabled": False},
                                         origins[2].address])
        seq = names(port, 30)
        self.assertEqual(collections.Counter(seq), {"a": 15, "c": 15})
        self.assertEqual(origins[1].connections, 0)
        st = server_status(admin, origins[1].address)
        self.assertEqual((st["enabled"], st["health"]["state"]), (False, "disabled"))
        self.assertEqual(metric(admin, server_metric("ballast_server_up", origins[1].address)), 0)

    def test_draining_server_gets_no_traffic(self):
        origins = [self.track(HttpOrigin(n)) for n in "abc"]
        _, port, admin = start_lb(self, [origins[0].address, origins[1].address,
                                         {"address": origins[2].address, "drain": True}])
        self.assertEqual(collections.Counter(names(port, 30)), {"a": 15, "b": 15})
        self.assertEqual(origins[2].connections, 0)
        st = server_status(admin, origins[2].address)
        self.assertEqual((st["drain"], st["health"]["state"]), (True, "draining"))

    def test_drain_by_reload_in_flight_request_finishes_no_new_requests(self):
        hold = lambda m, p: 1.5 if p.startswith("/slow") else 0  # noqa: E731
        backs = {n: self.track(TrackingBackend(n, hold)) for n in "ab"}
        b, port, admin = start_lb(self, [x.address for x in backs.values()])
        bg = Background()
        bg.get(port, "/slow")
        drained = wait_until(lambda: next((x for x in backs.values() if x.in_flight), None), 10,
                             message="the slow request at a server")
        other = next(x for x in backs.values() if x is not drained)
        count_before = drained.count
        reload_config(b, admin, lb_config(port, [{"address": drained.address, "drain": True},
                                                 other.address], admin))
        self.assertEqual(server_status(admin, drained.address)["health"]["state"], "draining")
        self.assertEqual(drained.in_flight, 1, "the slow request did not outlive the reload")
        self.assertEqual(set(names(port, 10)), {other.name})
        self.assertEqual(bg.join(), [("/slow", 200, drained.name)])
        self.assertEqual(drained.count, count_before, f"new requests after the drain: {drained.paths}")

    def keepalive_client_after_reload(self, setting):
        # A keep-alive client connection opened before the reload (its last request served by
        # the server being drained or disabled) stays open; its next requests go to the other
        # server.
        backs = {n: self.track(TrackingBackend(n)) for n in "ab"}
        b, port, admin = start_lb(self, [x.address for x in backs.values()])
        client = self.track(HttpConn(port))
        target = backs[names(port, 1, client, "/before")[0]]
        other = next(x for x in backs.values() if x is not target)
        count_before = target.count
        reload_config(b, admin, lb_config(port, [dict(address=target.address, **setting),
                                                 other.address], admin))
        seq = names(port, 10, client, "/after-")
        self.assertTrue(client.is_open(0.1), "the client connection was closed by the reload")
        self.assertEqual(seq, [other.name] * 10,
                         f"requests on a keep-alive connection opened before the reload went to "
                         f"the server with {setting}: {target.paths[count_before:]}")

    def test_drain_by_reload_keepalive_client_moves_on(self):
        self.keepalive_client_after_reload({"drain": True})

    def test_disable_by_reload_keepalive_client_moves_on(self):
        self.keepalive_client_after_reload({"enabled": False})

    def test_drain_tcp_connection_in_progress_continues(self):
        def named_echo(name):
            def serve(conn):
                conn.sendall(name + b"\n")
                while True:
                    d = conn.recv(65536)
                    if not d:
                        return
                    conn.sendall(d)
            return RawBackend(serve)
        backs = {n: self.track(named_echo(n)) for n in (b"a", b"b")}
        b, port, admin = start_lb(self, [x.address for x in backs.values()], protocol="tcp")
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._stoppers.append(conn.close)
        first = recv_exactly(conn, 2).strip()
        drained = backs[first]
        other_name = b"b" if first == b"a" else b"a"
        reload_config(b, admin, lb_config(port, [{"address": drained.address, "drain": True},
                                                 backs[other_name].address], admin,
                                          protocol="tcp"))
        for i in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                self.assertEqual(recv_exactly(s, 2).strip(), other_name)
        conn.sendall(b"still here")
        self.assertEqual(recv_exactly(conn, 10), b"still here")
        self.assertEqual(drained.connections, 1)


class MaxConnections(QuietBallastTestCase):
    def test_limit_holds_under_load_across_workers(self):
        hold = lambda m, p: 0.05  # noqa: E731
        limited = self.track(TrackingBackend("limited", hold))
        free = self.track(TrackingBackend("free", hold))
        _, port, admin = start_lb(self, [{"address": limited.address, "max_connections": 2},
                                         free.address])
        load = ClientLoad(port, threads=8)
        self._stoppers.append(load.stop)
        time.sleep(2.5)
        results = load.stop()
        self.assertEqual([r for r in results if r[1] != 200][:10], [])
        self.assertEqual(limited.max_in_flight, 2, "the limit was exceeded or never reached")
        self.assertGreater(free.max_in_flight, 2)
        self.assertGreater(free.count, limited.count)

    def test_excess_goes_to_other_servers(self):
        a = self.track(TrackingBackend("a"))
        b_ = self.track(TrackingBackend("b"))
        _, port, admin = start_lb(self, [{"address": a.address, "max_connections": 2},
                                         b_.address])
        bg = Background()
        for i in range(8):
            bg.get(port, f"/gate{i}")
            wait_until(lambda: a.held + b_.held == i + 1, 10, message=f"request {i} held")
        self.assertEqual((a.held, b_.held), (2, 6))
        a.release()
        b_.release()
        self.assertEqual([s for _, s, _ in bg.join()], [200] * 8)

    def test_all_servers_full_503(self):
        backs = [self.track(TrackingBackend(n)) for n in "ab"]
        _, port, admin = start_lb(self, [{"address": x.address, "max_connections": 2}
                                         for x in backs])
        bg = Background()
        for i in range(4):
            bg.get(port, f"/gate{i}")
            wait_until(lambda: sum(x.held for x in backs) == i + 1, 10)
        for i in range(3):
            r = http_get(port, f"/full{i}")
            self.assertEqual(r.status, 503)
            self.assertLess(len(r.body), 512)
        self.assertEqual([x.count for x in backs], [2, 2])
        self.assertEqual(metric(admin, vs_error_key("no_server")), 3)
        for x in backs:
            x.release()
        self.assertEqual([s for _, s, _ in bg.join()], [200] * 4)
        self.assertEqual(http_get(port, "/again").status, 200)

    def test_tcp_server_full_refuses(self):
        def echo_forever(conn):
            while True:
                d = conn.recv(65536)
                if not d:
                    return
                conn.sendall(d)
        srv = self.track(RawBackend(echo_forever))
        _, port, admin = start_lb(self, [{"address": srv.address, "max_connections": 1}],
                                  protocol="tcp")
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._stoppers.append(first.close)
        first.sendall(b"one")
        self.assertEqual(recv_exactly(first, 3), b"one")
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"two")
            outcome = peer_closed(s, 5)
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        finally:
            s.close()
        self.assertIn(outcome, ("reset", "eof"))
        self.assertEqual(srv.connections, 1)
        first.close()

        def third():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as t:
                t.sendall(b"three")
                return recv_exactly(t, 5, timeout=2) == b"three"
        wait_until(third, 10, message="a connection once the first one closed")


if __name__ == "__main__":
    unittest.main()
