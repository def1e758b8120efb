"""The store fails (issue 4, "Failure behaviour"; DESIGN.md "Data store layout", degraded mode):
three `ballast se` on 127.0.0.2-.4 share a real redis-server that the test kills (SIGKILL),
stops (SIGSTOP, a store that does not answer) and restarts empty. No request fails or stalls;
known clients keep their server (the engine's cache); new clients get a consistent hash of their
key, the same on every engine; degraded decisions are counted in /state and /metrics; when Redis
is back the decisions made meanwhile are written (an existing entry wins) and every engine agrees
with Redis again. Also: an engine that starts while Redis is down."""
import os
import signal
import threading
import time
import unittest

from harness import (HttpConn, KeyedLoad, PersistenceTestCase, backend_name, ballast_events,
                     divergent_keys, metric_sample, names_through_engines, persist_key,
                     wait_events, wait_store_connected, wait_until)

HEADER = "{type: http_header, header: X-Client, timeout: 300s}"
TIMEOUT = 0.2  # store.redis.timeout of the engines
FIGURES = {}


def timed_requests(engines, keys, threads=10):
    """The first request of every key through every engine at once, `threads` keep-alive
    connections per engine (keys dealt out among them), each request timed. Returns
    {engine name: {key: (status or None, server name or error, seconds)}}."""
    out = {e.name: {} for e in engines}
    lock = threading.Lock()
    barrier = threading.Barrier(len(engines) * threads)

    def run(e, part):
        barrier.wait()
        conn = None
        for k in part:
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = HttpConn(e.port, 10, host=e.host)
                conn.request("GET", "/t", [("X-Client", k)])
                r = conn.read_response()
                rec = (r.status, backend_name(r.body), time.monotonic() - t0)
            except Exception as ex:  # noqa: BLE001 - recorded, asserted by the test
                rec = (None, repr(ex)[:200], time.monotonic() - t0)
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                out[e.name][k] = rec
        if conn is not None:
            conn.close()
    ts = [threading.Thread(target=run, args=(e, keys[i::threads]), daemon=True)
          for e in engines for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def load_problems(records, expected):
    """Failed requests and known clients sent elsewhere than `expected` (key -> server name)."""
    failed = [r for r in records if r[2] != 200]
    moved = [r for r in records if r[2] == 200 and r[3] != expected[r[1]]]
    return failed, moved


class StoreFailureCase(PersistenceTestCase):
    def setup_cluster(self, count=3, backends="abc", redis_started=True, **kw):
        self.redis = self.start_redis(start=redis_started)
        self.backs = self.start_backends(backends)
        self.engines = self.start_engines(count, [b.address for b in self.backs], HEADER,
                                          self.redis, redis_timeout=f"{int(TIMEOUT * 1000)}ms",
                                          **kw)
        if redis_started:
            for e in self.engines:
                wait_store_connected(e)
        return self.engines

    def agreed(self, keys, engines=None):
        """First requests through the engines at once: asserts no failure and no divergence;
        returns key -> server name."""
        engines = engines or self.engines
        names, failures, _ = names_through_engines(engines, keys)
        self.assertEqual({n: f[:5] for n, f in failures.items() if f}, {})
        div = divergent_keys(names, keys)
        self.assertEqual(div[:5], [], f"{len(div)} of {len(keys)} keys diverge")
        return dict(zip(keys, names[engines[0].name]))

    def stored(self, keys):
        with self.redis.client() as c:
            got = c.get_many(persist_key("vs", k) for k in keys)
        return {k: got[persist_key("vs", k)] for k in keys}

    def assert_redis_has(self, servers, timeout=5.0):
        """Waits until Redis holds every key -> the id of its server (key -> server name)."""
        want = {k: self.ids[n] for k, n in servers.items()}
        last = {}

        def ok():
            last.update(self.stored(list(want)))
            return last == want
        try:
            wait_until(ok, timeout, interval=0.1)
        except TimeoutError:
            bad = {k: (last.get(k), v) for k, v in want.items() if last.get(k) != v}
            self.fail(f"{len(bad)} of {len(want)} entries in Redis are not the engines' "
                      f"(stored, used): {list(bad.items())[:5]}")

    def wait_recovered(self, engine, reachable_before, resynced=0, timeout=15.0):
        """store_reachable logged again, connected, nothing left to write and at least
        `resynced` decisions written back (the count grows as Redis answers); returns /state."""
        wait_events(engine.b, "store_reachable", count=reachable_before + 1, timeout=timeout)
        last = [None]

        def done():
            last[0] = s = engine.state()
            return s if (s["store"]["connected"] and s["sync"]["pending"] == 0
                         and s["sync"]["resynced"] >= resynced) else None
        try:
            return wait_until(done, timeout, interval=0.05)
        except TimeoutError:
            self.fail(f"{engine.name}: not recovered within {timeout}s (want resynced >= "
                      f"{resynced}): store {last[0] and last[0]['store']}, sync "
                      f"{last[0] and last[0]['sync']}")


class RedisKilled(StoreFailureCase):
    def test_redis_killed_under_load_then_restarted(self):
        engines = self.setup_cluster()
        known = self.agreed([f"known-{i}" for i in range(300)])
        load = self.track(KeyedLoad(engines, list(known), threads=2))
        wait_until(lambda: len(load.snapshot()) >= 300, 10, message="load running")
        reachable = {e.name: len(ballast_events(e.b, "store_reachable")) for e in engines}

        self.redis.kill()
        outage = [f"outage-{i}" for i in range(1000)]
        names1, failures1, took1 = names_through_engines(engines, outage[:500])
        time.sleep(0.3)
        names2, failures2, took2 = names_through_engines(engines, outage[500:])
        time.sleep(0.5)
        self.assertEqual({n: f[:5] for n, f in failures1.items() if f}, {})
        self.assertEqual({n: f[:5] for n, f in failures2.items() if f}, {})
        div = divergent_keys(names1, outage[:500]) + divergent_keys(names2, outage[500:])
        self.assertEqual(div[:5], [], f"{len(div)} of {len(outage)} outage keys diverge")
        used = dict(zip(outage, names1[engines[0].name] + names2[engines[0].name]))
        self.assertEqual(set(used.values()), set(self.ids), "the fallback hash spreads keys")

        states = {e.name: e.state() for e in engines}
        for e in engines:
            st = states[e.name]
            self.assertFalse(st["store"]["connected"], st["store"])
            self.assertGreaterEqual(st["degraded_decisions"], len(outage), st)
            vs, = [v for v in st["virtual_services"] if v["name"] == "vs"]
            self.assertEqual(vs["decisions"]["degraded"], st["degraded_decisions"])
            self.assertGreater(st["sync"]["pending"], 0, st["sync"])
            self.assertEqual(metric_sample(e, "ballast_store_connected", type="redis"), 0)
            self.assertEqual(metric_sample(e, "ballast_vs_persistence_decisions_total", vs="vs",
                                           outcome="degraded"), st["degraded_decisions"])
            self.assertEqual(metric_sample(e, "ballast_persistence_sync_pending"),
                             st["sync"]["pending"])
        records = load.stop()
        failed, moved = load_problems(records, known)
        worst = max(r[4] for r in records)
        self.assertEqual(failed[:5], [], f"{len(failed)} of {len(records)} requests failed")
        self.assertEqual(moved[:5], [], f"{len(moved)} known clients sent elsewhere")
        self.assertLess(worst, TIMEOUT + 1.0, f"a request took {worst:.2f}s")

        # Redis is back (empty, same port): the decisions made meanwhile are written.
        self.redis.start()
        synced = {e.name: self.wait_recovered(e, reachable[e.name],
                                              resynced=states[e.name]["sync"]["pending"])
                  for e in engines}
        for e in engines:
            self.assertEqual(metric_sample(e, "ballast_store_connected", type="redis"), 1)
            self.assertGreater(metric_sample(e, "ballast_persistence_resynced_total"), 0)
        self.assert_redis_has(used)
        # and the store decides again, atomically.
        before = sum(e.decisions()["created"] for e in engines)
        fresh = self.agreed([f"after-{i}" for i in range(200)])
        self.assertEqual(sum(e.decisions()["created"] for e in engines) - before, 200)
        self.assert_redis_has(fresh)
        FIGURES["redis killed"] = (
            f"{len(records)} keyed requests during the load, {len(failed)} failed, "
            f"{len(moved)} known clients moved, slowest {worst * 1000:.0f} ms; "
            f"{len(outage)} new keys x 3 engines in {took1 + took2:.2f}s, {len(div)} divergent; "
            "degraded " + "/".join(str(states[e.name]["degraded_decisions"]) for e in engines)
            + ", pending " + "/".join(str(states[e.name]["sync"]["pending"]) for e in engines)
            + ", resynced " + "/".join(str(synced[e.name]["sync"]["resynced"]) for e in engines)
            + ", conflicts " + "/".join(str(synced[e.name]["sync"]["conflicts"]) for e in engines))


class RedisStopped(StoreFailureCase):
    def test_a_stopped_redis_costs_at_most_the_timeout_then_recovery(self):
        engines = self.setup_cluster()
        known = self.agreed([f"known-{i}" for i in range(150)])
        load = self.track(KeyedLoad(engines, list(known), threads=1))
        wait_until(lambda: len(load.snapshot()) >= 100, 10, message="load running")
        before = {e.name: e.state() for e in engines}

        self.redis.pause()
        stall = [f"stall-{i}" for i in range(150)]
        t0 = time.monotonic()
        timed = timed_requests(engines, stall, threads=10)
        took = time.monotonic() - t0
        records = load.stop()
        states = {e.name: e.state() for e in engines}
        failed = {n: [(k, r) for k, r in got.items() if r[0] != 200] for n, got in timed.items()}
        self.assertEqual({n: f[:5] for n, f in failed.items() if f}, {})
        slowest = max(r[2] for got in timed.values() for r in got.values())
        self.assertLess(slowest, TIMEOUT + 0.8, f"a new client waited {slowest:.2f}s")
        div = [k for k in stall if len({timed[e.name][k][1] for e in engines}) != 1]
        self.assertEqual(div[:5], [], f"{len(div)} of {len(stall)} keys diverge")
        lfailed, lmoved = load_problems(records, known)
        self.assertEqual(lfailed[:5], [])
        self.assertEqual(lmoved[:5], [], "known clients moved while Redis was stopped")
        load_slowest = max(r[4] for r in records)
        self.assertLess(load_slowest, TIMEOUT + 0.8, f"a known client waited {load_slowest:.2f}s")
        for e in engines:
            st, st0 = states[e.name], before[e.name]
            self.assertGreater(st["store"]["timeouts"], st0["store"]["timeouts"], st["store"])
            self.assertGreaterEqual(st["degraded_decisions"] - st0["degraded_decisions"],
                                    len(stall), st)
            self.assertGreater(metric_sample(e, "ballast_store_timeouts_total", type="redis"), 0)

        # Redis answers again: the store decides again, and every engine ends up agreeing with
        # what Redis holds for the keys decided meanwhile (an entry that exists wins).
        self.redis.resume()
        resumed = time.monotonic()
        for e in engines:
            want = before[e.name]["sync"]["resynced"] + states[e.name]["sync"]["pending"]
            wait_until(lambda: (lambda s: s if s["store"]["connected"] and s["sync"]["pending"] == 0
                                and s["sync"]["resynced"] >= want else None)(e.state()),
                       15, interval=0.05,
                       message=f"{e.name}: store back, {want} decisions written back")
        recovery = time.monotonic() - resumed
        created0 = sum(e.decisions()["created"] for e in engines)
        fresh = self.agreed([f"after-{i}" for i in range(100)])
        self.assertEqual(sum(e.decisions()["created"] for e in engines) - created0, 100)
        self.assert_redis_has(fresh)
        # Clients first seen while Redis was stopped keep the server they were sent to, although
        # Redis carried out the engines' timed-out SET NX (their own proposals) when it resumed.
        degraded_choice = {k: timed[engines[0].name][k][1] for k in stall}
        seen = {}

        def kept_all():
            seen.update(self.agreed(stall))
            return seen == degraded_choice
        try:
            wait_until(kept_all, 5, interval=0.2)
        except TimeoutError:
            moved = [(k, degraded_choice[k], seen.get(k)) for k in stall
                     if seen.get(k) != degraded_choice[k]]
            self.fail(f"{len(moved)} of {len(stall)} clients decided during the stall moved "
                      f"(key, sent to, now): {moved[:5]}")
        now = seen
        self.assert_redis_has(now)
        kept = sum(1 for k in stall if now[k] == degraded_choice[k])
        FIGURES["redis stopped"] = (
            f"{len(stall)} new keys x 3 engines in {took:.2f}s, slowest {slowest * 1000:.0f} ms "
            f"(timeout {TIMEOUT * 1000:.0f} ms), {len(div)} divergent; {len(records)} known-client "
            f"requests, slowest {load_slowest * 1000:.0f} ms; timeouts "
            + "/".join(str(states[e.name]["store"]["timeouts"]) for e in engines)
            + "; pending " + "/".join(str(states[e.name]["sync"]["pending"]) for e in engines)
            + f"; synced {recovery:.2f}s after SIGCONT; {kept}/{len(stall)} kept the fallback server")


class RedisRestartedEmpty(StoreFailureCase):
    def test_entries_are_recreated_on_next_use_alike_on_every_engine(self):
        engines = self.setup_cluster()
        a, b, c = engines
        # Known to engine A only, and known to all three.
        only_a = self.agreed([f"a-only-{i}" for i in range(150)], [a])
        everywhere = self.agreed([f"all-{i}" for i in range(150)])
        reachable = {e.name: len(ballast_events(e.b, "store_reachable")) for e in engines}

        self.redis.restart()  # SIGKILL, and an empty one on the same port
        self.assertEqual(self.redis.command("DBSIZE"), 0)
        for e in engines:
            self.wait_recovered(e, reachable[e.name])
        # A's clients first reach B and C, then A; the others reach all three at once.
        bc, failures, _ = names_through_engines([b, c], list(only_a))
        self.assertEqual({n: f[:5] for n, f in failures.items() if f}, {})
        ta, failures, _ = names_through_engines([a], list(only_a))
        self.assertEqual(failures[a.name][:5], [])
        all3, failures, _ = names_through_engines(engines, list(everywhere))
        self.assertEqual({n: f[:5] for n, f in failures.items() if f}, {})
        div_a = [k for i, k in enumerate(only_a)
                 if len({bc[b.name][i], bc[c.name][i], ta[a.name][i]}) != 1]
        div_all = divergent_keys(all3, list(everywhere))
        # Redis holds the entries again, naming the servers the engines use (A's choice for
        # A's clients: B's and C's are in the divergence figure).
        now = dict(zip(only_a, ta[a.name]))
        now.update(zip(everywhere, all3[a.name]))
        time.sleep(0.5)  # whatever is written in the background
        stored = self.stored(list(now))
        missing = [k for k in now if stored[k] is None]
        unlike = [k for k in now if stored[k] is not None and stored[k] != self.ids[now[k]]]
        kept = sum(1 for k, n in now.items() if n == {**only_a, **everywhere}[k])
        FIGURES["redis restarted empty"] = (
            f"clients known to A only: {len(div_a)}/{len(only_a)} divergent (B and C vs A); "
            f"known to all: {len(div_all)}/{len(everywhere)} divergent; after use "
            f"{len(missing)}/{len(now)} entries missing in Redis, {len(unlike)} unlike the engines'"
            f"; {kept} kept their server")
        self.assertEqual((len(div_a), len(div_all), len(missing), len(unlike)), (0, 0, 0, 0),
                         FIGURES["redis restarted empty"] + f"; e.g. divergent {div_a[:3]}, "
                         f"missing {missing[:3]}, unlike {unlike[:3]}")
        # ... and so every engine agrees with Redis, once more.
        again, _, _ = names_through_engines(engines, list(now))
        self.assertEqual(divergent_keys(again, list(now)), [])
        self.assertEqual(dict(zip(now, again[a.name])), now)


class ExistingEntryWins(StoreFailureCase):
    def test_an_entry_made_while_the_engines_were_cut_off_wins_over_theirs(self):
        engines = self.setup_cluster(count=2)
        reachable = {e.name: len(ballast_events(e.b, "store_reachable")) for e in engines}
        self.redis.kill()
        keys = [f"cut-{i}" for i in range(60)]
        fallback = self.agreed(keys)
        pending = {e.name: e.state()["sync"]["pending"] for e in engines}
        # Redis comes back while the engines are frozen (SIGSTOP), and meanwhile someone else
        # (another engine, say) creates entries for half of these clients, on other servers.
        for e in engines:
            os.kill(e.b.pid, signal.SIGSTOP)
        try:
            self.redis.start()
            seeded = {}
            with self.redis.client() as c:
                for i, k in enumerate(keys[::2]):
                    other = sorted(n for n in self.ids if n != fallback[k])[i % 2]
                    self.assertIsNone(c.command("SET", persist_key("vs", k), self.ids[other],
                                                "NX", "GET", "PX", 300000))
                    seeded[k] = other
        finally:
            for e in engines:
                os.kill(e.b.pid, signal.SIGCONT)
        states = {e.name: self.wait_recovered(e, reachable[e.name], resynced=pending[e.name])
                  for e in engines}
        for e in engines:
            self.assertGreaterEqual(states[e.name]["sync"]["conflicts"], len(seeded),
                                    states[e.name]["sync"])
        expected = {k: seeded.get(k, fallback[k]) for k in keys}
        self.assert_redis_has(expected)
        names, failures, _ = names_through_engines(engines, keys)
        self.assertEqual({n: f for n, f in failures.items() if f}, {})
        for e in engines:
            self.assertEqual(dict(zip(keys, names[e.name])), expected, e.name)
        FIGURES["existing entry wins"] = (
            f"{len(seeded)} of {len(keys)} outage decisions met an entry made meanwhile; "
            "conflicts " + "/".join(str(states[e.name]["sync"]["conflicts"]) for e in engines)
            + ", all engines follow Redis")


class RedisAnswersErrors(StoreFailureCase):
    def test_decisions_made_while_redis_refused_writes_are_written_when_it_accepts_them(self):
        # Redis out of memory answers every write with an error, over a connection that stays
        # up: no reconnect tells the engines it is back, the first good answer does.
        engines = self.setup_cluster(count=2)
        self.redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.redis.command("CONFIG", "SET", "maxmemory", "1")
        keys = [f"oom-{i}" for i in range(100)]
        fallback = self.agreed(keys)
        for e in engines:
            st = e.state()
            self.assertTrue(st["store"]["connected"], st["store"])
            self.assertGreaterEqual(st["sync"]["pending"], len(keys), st["sync"])
            self.assertGreater(st["store"]["errors"], 0, st["store"])
        self.assertEqual(self.stored(keys), {k: None for k in keys})
        self.redis.command("CONFIG", "SET", "maxmemory", "0")
        self.agreed([f"after-oom-{i}" for i in range(20)])  # the store answers again
        for e in engines:
            wait_until(lambda: e.state()["sync"]["pending"] == 0, 10, interval=0.05,
                       message=f"{e.name}: the decisions made during the errors written")
        self.assert_redis_has(fallback)
        # An engine that never saw these clients follows what the others decided.
        third, = self.start_engines(1, [b.address for b in self.backs], HEADER, self.redis,
                                    redis_timeout=f"{int(TIMEOUT * 1000)}ms")
        wait_store_connected(third)
        names, failures, _ = names_through_engines([third], keys)
        self.assertEqual({n: f for n, f in failures.items() if f}, {})
        self.assertEqual(dict(zip(keys, names[third.name])), fallback)


class StoreDownAtStart(StoreFailureCase):
    def test_engines_serve_without_the_store_and_write_their_decisions_when_it_comes(self):
        engines = self.setup_cluster(count=2, redis_started=False)
        keys = [f"early-{i}" for i in range(1000)]  # several resync windows
        used = self.agreed(keys)
        self.assertEqual(set(used.values()), set(self.ids))
        pending = {}
        for e in engines:
            st = e.state()
            self.assertFalse(st["store"]["connected"])
            self.assertGreaterEqual(st["degraded_decisions"], len(keys))
            self.assertGreater(st["sync"]["pending"], 0)
            pending[e.name] = st["sync"]["pending"]
            self.assertEqual(metric_sample(e, "ballast_store_connected", type="redis"), 0)
        reachable = {e.name: len(ballast_events(e.b, "store_reachable")) for e in engines}
        self.redis.start()
        for e in engines:
            self.wait_recovered(e, reachable[e.name], resynced=pending[e.name], timeout=20)
        self.assert_redis_has(used)
        created0 = sum(e.decisions()["created"] for e in engines)
        fresh = self.agreed([f"later-{i}" for i in range(100)])
        self.assertEqual(sum(e.decisions()["created"] for e in engines) - created0, 100)
        self.assert_redis_has(fresh)


def tearDownModule():
    if FIGURES:
        print("\n  store failures: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()),
              flush=True)


if __name__ == "__main__":
    unittest.main()
