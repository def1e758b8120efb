"""Load-balancing algorithms (pools[].lb_algorithm), black box, 2 workers: round robin (weights exact
over any window, one rotation for the whole engine), least connections (long and short requests,
busy servers, weights), least response time (slow servers, servers without samples), random two
choices (weights, busy servers), consistent hash (header, cookie, path, client IP; disruption when
a server is added or removed, measured over many keys; fallback without a key) and /status."""
import collections
import os
import socket
import threading
import time
import unittest

from harness import (BackendProcess, ClientLoad, HttpConn, HttpOrigin, QuietBallastTestCase,
                     TrackingBackend, backend_name, http_get, lb_config, pipelined_requests,
                     reload_config, start_lb, status, wait_until)

# Keys for the disruption measurement (issue 3 asks for 100k; BALLAST_HASH_KEYS lowers it).
HASH_KEYS = int(os.environ.get("BALLAST_HASH_KEYS", "100000"))


def names_of_sequential(port, n, target="/", headers=None):
    """n requests one after the other on one keep-alive connection; the servers' names."""
    out = []
    with HttpConn(port) as c:
        for i in range(n):
            c.request("GET", f"{target}{i}" if target.endswith("/") else target, headers)
            r = c.read_response()
            assert r.status == 200, (r.status, r.body)
            out.append(backend_name(r.body))
    return out


def names_of_fresh(port, n, target="/f", headers=None):
    """n requests, each on a new connection (so they land on either worker)."""
    out = []
    for i in range(n):
        r = http_get(port, f"{target}{i}", headers)
        assert r.status == 200, (r.status, r.body)
        out.append(backend_name(r.body))
    return out


class Background:
    """Requests on new connections in threads; .results [(target, status or error, name)]."""

    def __init__(self, port):
        self.port = port
        self.threads = []
        self.results = []
        self.lock = threading.Lock()

    def get(self, target, headers=None):
        def run():
            try:
                r = http_get(self.port, target, headers, timeout=30)
                res = (target, r.status, backend_name(r.body))
            except Exception as e:  # noqa: BLE001 - recorded, asserted by the test
                res = (target, repr(e), None)
            with self.lock:
                self.results.append(res)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout)
        return list(self.results)


class RoundRobin(QuietBallastTestCase):
    def test_weights_honoured_exactly_over_any_window(self):
        origins = [self.track(HttpOrigin(n)) for n in "abc"]
        _, port, _ = start_lb(self, [{"address": o.address, "weight": w}
                                     for o, w in zip(origins, (1, 2, 3))])
        seq = names_of_sequential(port, 600)
        self.assertEqual(collections.Counter(seq), {"a": 100, "b": 200, "c": 300})
        want = {"a": 1, "b": 2, "c": 3}
        for i in range(len(seq) - 5):
            self.assertEqual(collections.Counter(seq[i:i + 6]), want,
                             f"choices {i}..{i + 5} are {seq[i:i + 6]} (sequence {seq[:24]}...)")
        # interleaved, not in bursts: the heaviest server never gets three in a row
        runs = max(len(list(g)) for g in _runs(seq))
        self.assertLessEqual(runs, 2, f"bursts in {seq[:24]}")

    def test_one_rotation_for_the_whole_engine(self):
        # Each request on a new connection lands on either of the 2 workers (SO_REUSEPORT): the
        # servers still take strict turns, as with a single worker.
        origins = [self.track(HttpOrigin(n)) for n in "abc"]
        _, port, _ = start_lb(self, [o.address for o in origins])
        seq = names_of_fresh(port, 150)
        for i in range(len(seq) - 2):
            self.assertEqual(len(set(seq[i:i + 3])), 3,
                             f"choices {i}..{i + 2} are {seq[i:i + 3]}: not one rotation "
                             f"(sequence {seq[:30]}...)")

    def test_concurrent_clients_get_exact_shares(self):
        origins = [self.track(HttpOrigin(n)) for n in "abc"]
        _, port, _ = start_lb(self, [{"address": o.address, "weight": w}
                                     for o, w in zip(origins, (1, 1, 2))])
        results = [[] for _ in range(4)]

        def client(k):
            results[k] = names_of_fresh(port, 100, f"/c{k}-")
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        counts = collections.Counter(n for r in results for n in r)
        self.assertEqual(counts, {"a": 100, "b": 100, "c": 200})


def _runs(seq):
    import itertools
    return (list(g) for _, g in itertools.groupby(seq))


class LeastConnections(QuietBallastTestCase):
    def long_paths(self, backend):
        return [p for p in backend.paths if p.startswith("/long")]

    def test_long_requests_mixed_with_short_ones_spread_evenly(self):
        # Long and short requests alternate. Round robin would put every long one on the same
        # server; least connections spreads them (counted across both workers).
        hold = lambda method, path: 2.5 if path.startswith("/long") else 0  # noqa: E731
        a, b = (self.track(TrackingBackend(n, hold)) for n in "ab")
        _, port, _ = start_lb(self, [a.address, b.address], lb_algorithm="least_connections")
        bg = Background(port)
        for i in range(6):
            bg.get(f"/long{i}")
            wait_until(lambda: a.in_flight + b.in_flight == i + 1, 10,
                       message=f"long request {i} at a backend")
            r = http_get(port, f"/short{i}")
            self.assertEqual(r.status, 200)
        self.assertEqual(a.in_flight + b.in_flight, 6, "the long requests were not all held")
        results = bg.join()
        self.assertEqual(sorted(s for _, s, _ in results), [200] * 6, results)
        self.assertEqual((len(self.long_paths(a)), len(self.long_paths(b))), (3, 3),
                         f"a: {a.paths}, b: {b.paths}")

    def test_busy_server_gets_no_new_requests_while_others_have_fewer(self):
        backs = [self.track(TrackingBackend(n)) for n in "abc"]
        _, port, _ = start_lb(self, [x.address for x in backs], lb_algorithm="least_connections")
        bg = Background(port)
        bg.get("/gate")
        busy = wait_until(lambda: next((x for x in backs if x.held == 1), None), 10,
                          message="a request held")
        others = [x for x in backs if x is not busy]
        seq = names_of_fresh(port, 20, "/s")
        self.assertNotIn(busy.name, seq)
        counts = collections.Counter(seq)
        self.assertLessEqual(abs(counts[others[0].name] - counts[others[1].name]), 2,
                             f"ties not broken fairly: {seq}")
        busy.release()
        self.assertEqual(bg.join()[0][1], 200)

    def test_weights_under_load(self):
        # 12 held requests over weights 1 and 3: in-flight / weight stays balanced -> 3 and 9.
        a, b = (self.track(TrackingBackend(n)) for n in "ab")
        _, port, _ = start_lb(self, [{"address": a.address, "weight": 1},
                                     {"address": b.address, "weight": 3}],
                              lb_algorithm="least_connections")
        bg = Background(port)
        for i in range(12):
            bg.get(f"/gate{i}")
            wait_until(lambda: a.held + b.held == i + 1, 10, message=f"request {i} held")
        self.assertIn(a.held, (2, 3, 4), f"weight 1 holds {a.held}, weight 3 holds {b.held}")
        self.assertEqual(a.held + b.held, 12)
        a.release()
        b.release()
        self.assertEqual([s for _, s, _ in bg.join()], [200] * 12)


class LeastResponseTime(QuietBallastTestCase):
    def test_slow_server_gets_clearly_fewer_requests(self):
        fast = self.track(TrackingBackend("fast"))
        slow = self.track(TrackingBackend("slow", lambda m, p: 0.05))
        _, port, _ = start_lb(self, [fast.address, slow.address],
                              lb_algorithm="least_response_time")
        load = ClientLoad(port, threads=4)
        time.sleep(3)
        results = load.stop()
        self.assertEqual([r for r in results if r[1] != 200], [])
        counts = collections.Counter(who for _, _, who in results)
        self.assertGreater(counts["fast"], 200, counts)
        self.assertLess(counts["slow"] * 4, counts["fast"], f"slow server not avoided: {counts}")

    def test_servers_without_samples_get_traffic(self):
        backs = [self.track(TrackingBackend(n)) for n in "abc"]
        b, port, admin = start_lb(self, [x.address for x in backs[:2]],
                                  lb_algorithm="least_response_time")
        # At the start nobody has answered yet: every server is tried.
        seq = names_of_sequential(port, 20)
        self.assertEqual(set(seq), {"a", "b"}, seq)
        seq = names_of_sequential(port, 40)
        # A server added by a reload has no samples: it is tried at once, not starved.
        reload_config(b, admin, lb_config(port, [x.address for x in backs], admin,
                                          lb_algorithm="least_response_time"))
        seq = names_of_sequential(port, 10)
        self.assertIn("c", seq, f"new server not tried in the first 10 requests: {seq}")


class RandomTwoChoices(QuietBallastTestCase):
    def test_proportional_to_weights_when_idle(self):
        backs = [self.track(BackendProcess(n, fast=True)) for n in "abc"]
        _, port, _ = start_lb(self, [{"address": x.address, "weight": w}
                                     for x, w in zip(backs, (1, 2, 3))],
                              lb_algorithm="random_two_choices")
        reqs = [f"GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(3000)]
        res = pipelined_requests(port, reqs, conns=1, batch=50)   # one at a time: all idle
        self.assertEqual({s for s, _ in res}, {200})
        counts = collections.Counter(body.decode() for _, body in res)
        for name, expected in (("a", 500), ("b", 1000), ("c", 1500)):
            self.assertLess(abs(counts[name] - expected), 110, counts)   # about 5 sigma

    def test_avoids_a_server_holding_requests(self):
        gated = self.track(TrackingBackend("a"))
        quick = [self.track(TrackingBackend(n, gate_timeout=0)) for n in "bc"]
        _, port, _ = start_lb(self, [gated.address] + [x.address for x in quick],
                              lb_algorithm="random_two_choices")
        bg = Background(port)
        for i in range(60):   # until one request is held at a (the others answer at once)
            bg.get(f"/gate{i}")
            wait_until(lambda: gated.held + sum(x.count for x in quick) == i + 1, 10)
            if gated.held:
                break
        self.assertEqual(gated.held, 1)
        # The quick answers must have passed through Ballast too (a backend counts a request when
        # it starts it; Ballast ends the attempt when the response is through): otherwise b or c
        # may still count one in flight, tie with a, and the tie goes to the first drawn.
        wait_until(lambda: len(bg.results) == i, 10)
        seq = names_of_fresh(port, 60)
        self.assertEqual(seq.count("a"), 0, f"a server with a request in flight was picked: {seq}")
        self.assertEqual(set(seq), {"b", "c"})
        gated.release()
        bg.join()


def hash_requests(keys, header=None, cookie=None, path=False):
    out = []
    for k in keys:
        extra = ""
        if header:
            extra += f"{header}: {k}\r\n"
        if cookie:
            extra += f"Cookie: theme=dark; {cookie}={k}; lang=en\r\n"
        target = f"/u/{k}?q=1" if path else "/x"
        out.append(f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
    return out


class ConsistentHash(QuietBallastTestCase):
    def start_hash(self, n_servers=3, hash_key="{type: header, name: X-User}", weights=None):
        self.backs = [self.track(BackendProcess(f"s{i}", fast=True)) for i in range(n_servers)]
        servers = [{"address": x.address, "weight": w}
                   for x, w in zip(self.backs, weights or [1] * n_servers)]
        return start_lb(self, servers, lb_algorithm="consistent_hash", hash_key=hash_key)

    def mapping(self, port, keys, **kw):
        res = pipelined_requests(port, hash_requests(keys, **kw), conns=16, batch=200)
        bad = [r for r in res if r[0] != 200]
        self.assertEqual(bad[:5], [])
        return [body.decode() for _, body in res]

    def assert_sticky_and_spread(self, port, n_keys=3000, rounds=3, **kw):
        keys = [f"user-{i}" for i in range(n_keys)]
        first = None
        for _ in range(rounds):   # 16 connections over both workers, in a different order
            m = self.mapping(port, keys, **kw)
            if first is None:
                first = m
            else:
                moved = [k for k, x, y in zip(keys, first, m) if x != y]
                self.assertEqual(moved[:10], [], "the same key went to different servers")
            keys.reverse()
            first.reverse()
        counts = collections.Counter(first)
        for x in self.backs:
            self.assertGreater(counts[x.name], n_keys * 0.25, counts)
        return dict(zip(keys, first))

    def test_header_key_same_server_spread_over_servers(self):
        _, port, _ = self.start_hash()
        self.assert_sticky_and_spread(port, header="X-User")
        # The same key on new connections (either worker), several times: one server.
        for k in range(40):
            seen = set(names_of_fresh(port, 5, "/n", [("X-User", f"fresh-{k}")]))
            self.assertEqual(len(seen), 1, f"key fresh-{k} went to {seen}")

    def test_cookie_key(self):
        _, port, _ = self.start_hash(hash_key="{type: cookie, name: sid}")
        mapping = self.assert_sticky_and_spread(port, n_keys=2000, cookie="sid")
        # only the named cookie counts
        for k in ("user-1", "user-2", "user-3"):
            r = http_get(port, "/", [("Cookie", f"sid={k}; other={time.monotonic()}")])
            self.assertEqual(backend_name(r.body), mapping[k])

    def test_path_key(self):
        _, port, _ = self.start_hash(hash_key="{type: path}")
        mapping = self.assert_sticky_and_spread(port, n_keys=2000, path=True)
        for k in ("user-1", "user-2", "user-3"):   # the query is not part of the key
            r = http_get(port, f"/u/{k}?other={time.monotonic()}")
            self.assertEqual(backend_name(r.body), mapping[k])

    def test_client_ip_key(self):
        _, port, _ = self.start_hash(hash_key="{type: client_ip}")
        seen = collections.defaultdict(set)
        for i in range(2, 62):
            ip = f"127.0.0.{i}"
            for j in range(4):   # new connections: new source ports, either worker
                with socket.socket() as s:
                    s.settimeout(10)
                    s.bind((ip, 0))
                    s.connect(("127.0.0.1", port))
                    s.sendall(b"GET /ip HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        d = s.recv(65536)
                        if not d:
                            break
                        data += d
                head, _, body = data.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 200"), data)
                seen[ip].add(body.decode())
        self.assertEqual({ip: s for ip, s in seen.items() if len(s) > 1}, {})
        spread = collections.Counter(next(iter(s)) for s in seen.values())
        self.assertEqual(len(spread), 3, f"60 client addresses all on {spread}")

    def test_client_ip_key_tcp(self):
        backs = [self.track(BackendProcess(f"t{i}")) for i in range(3)]
        _, port, _ = start_lb(self, [x.address for x in backs], protocol="tcp",
                              lb_algorithm="consistent_hash")   # hash_key defaults to client_ip
        seen = collections.defaultdict(set)
        for i in range(2, 32):
            for j in range(3):
                with socket.socket() as s:
                    s.settimeout(10)
                    s.bind((f"127.0.0.{i}", 0))
                    s.connect(("127.0.0.1", port))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        d = s.recv(65536)
                        if not d:
                            break
                        data += d
                seen[i].add(backend_name(data.partition(b"\r\n\r\n")[2]))
        self.assertEqual({i: s for i, s in seen.items() if len(s) > 1}, {})
        self.assertGreaterEqual(len({next(iter(s)) for s in seen.values()}), 2)

    def test_weights_honoured(self):
        _, port, _ = self.start_hash(n_servers=2, weights=[1, 3])
        m = self.mapping(port, [f"w-{i}" for i in range(20000)], header="X-User")
        share = m.count("s0") / len(m)
        self.assertLess(abs(share - 0.25), 0.03, f"weight 1 of 4 got {share:.3f} of the keys")

    def test_request_without_key_is_served_round_robin(self):
        _, port, _ = self.start_hash()
        seq = names_of_sequential(port, 30, "/nokey/")
        self.assertEqual(collections.Counter(seq), {"s0": 10, "s1": 10, "s2": 10}, seq)
        # an empty cookie header or other cookies: no key either, still served
        r = http_get(port, "/", [("Cookie", "other=1")])
        self.assertEqual(r.status, 200)

    def test_disruption_when_a_server_is_added_and_removed(self):
        backs = [self.track(BackendProcess(f"s{i}", fast=True)) for i in range(4)]
        key = "{type: header, name: X-User}"
        b, port, admin = start_lb(self, [x.address for x in backs[:3]],
                                  lb_algorithm="consistent_hash", hash_key=key)
        keys = [f"key-{i:06d}" for i in range(HASH_KEYS)]
        m3 = self.mapping(port, keys, header="X-User")

        # add s3: about a quarter of the keys move, (nearly) all of them to s3
        reload_config(b, admin, lb_config(port, [x.address for x in backs], admin,
                                          lb_algorithm="consistent_hash", hash_key=key))
        m4 = self.mapping(port, keys, header="X-User")
        moved = [(x, y) for x, y in zip(m3, m4) if x != y]
        elsewhere = [mv for mv in moved if mv[1] != "s3"]
        n = len(keys)
        self.added = (len(moved) / n, len(elsewhere) / n)
        self.assertTrue(0.21 <= len(moved) / n <= 0.29,
                        f"adding a 4th server moved {len(moved) / n:.3%} of {n} keys")
        self.assertLessEqual(len(elsewhere) / n, 0.01,
                             f"{len(elsewhere)} keys moved between the old servers "
                             f"({collections.Counter(elsewhere).most_common(6)})")

        # remove s1: its keys move, the others (nearly) stay
        reload_config(b, admin, lb_config(port, [backs[i].address for i in (0, 2, 3)], admin,
                                          lb_algorithm="consistent_hash", hash_key=key))
        m5 = self.mapping(port, keys, header="X-User")
        self.assertNotIn("s1", m5)
        kept = [(x, y) for x, y in zip(m4, m5) if x != "s1"]
        disturbed = [kv for kv in kept if kv[0] != kv[1]]
        self.removed = len(disturbed) / n
        self.assertLessEqual(len(disturbed) / n, 0.01,
                             f"removing s1 moved {len(disturbed)} keys of other servers")
        counts = collections.Counter(y for x, y in zip(m4, m5) if x == "s1")
        self.assertEqual(set(counts), {"s0", "s2", "s3"}, counts)
        print(f"\n  consistent hash over {n} keys: adding a 4th server moved {len(moved) / n:.2%}"
              f" ({len(elsewhere) / n:.2%} between old servers); removing one moved"
              f" {self.removed:.2%} of the other servers' keys", flush=True)


class StatusShowsAlgorithms(QuietBallastTestCase):
    def test_status_lists_lb_algorithm_and_hash_key(self):
        o = self.track(HttpOrigin("o"))
        algos = ["round_robin", "least_connections", "least_response_time", "random_two_choices",
                 "consistent_hash", "consistent_hash"]
        keys = [None, None, None, None, "{type: cookie, name: sid}", None]
        port, admin = _free_ports(len(algos) + 1)
        lines = ["se:", "  workers: 2", f"  admin: 127.0.0.1:{admin}", "virtual_services:"]
        for i in range(len(algos)):
            lines += [f"  - {{name: vs{i}, listen: 127.0.0.1:{port[i]}, protocol: http, pool: p{i}}}"]
        lines.append("pools:")
        for i, a in enumerate(algos):
            lines += [f"  - name: p{i}", f"    lb_algorithm: {a}"]
            if keys[i]:
                lines.append(f"    hash_key: {keys[i]}")
            lines += ["    servers:", f"      - address: {o.address}"]
        from harness import Ballast
        self.track(Ballast("\n".join(lines) + "\n", wait_ports=(admin,)))
        pools = {p["name"]: p for p in status(admin)["pools"]}
        for i, a in enumerate(algos):
            self.assertEqual(pools[f"p{i}"]["lb_algorithm"], a)
        for i in range(4):
            self.assertNotIn("hash_key", pools[f"p{i}"])
        self.assertEqual(pools["p4"]["hash_key"], {"type": "cookie", "name": "sid"})
        self.assertEqual(pools["p5"]["hash_key"], {"type": "client_ip"})


def _free_ports(n):
    from harness import free_port
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    ports = list(ports)
    return ports[:-1], ports[-1]


if __name__ == "__main__":
    unittest.main()
