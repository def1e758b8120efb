"""Session persistence (virtual_services[].persistence, store; issue 4), one or two engines: the
memory store on one engine, TTL expiry and extension in Redis, app_cookie learning (the servers'
JSESSIONID, on every engine), http_cookie insertion (cookie set, honoured, a cookie-less retry
from the same address lands alike, a cookie naming an unusable server replaced), client_ip on a
TCP virtual service across two engines and ipv4_prefix grouping, and what an operator sees:
GET /state (?key=), `ballast se state`, the /metrics families."""
import collections
import json
import re
import threading
import time
import unittest
import urllib.parse

from harness import (HttpBackend, HttpConn, NamedTcpBackend, PersistenceTestCase, admin_get,
                     backend_name, free_port, http_get_from, keyed_request, metric_family_values,
                     metric_sample, parse_prometheus, persist_key, pipelined_to, reload_config,
                     run_ballast, server_id, start_engine, status, store_config, tcp_name_from,
                     wait_store_connected, wait_until)

HEADER = "{type: http_header, header: X-Client, timeout: 300s}"
COOKIE_RE = re.compile(r"^BALLAST_SERVER=([0-9a-f]{16}); Path=/; HttpOnly$")
FIGURES = {}


def names_of(engine, keys, conns=4, header="X-Client"):
    """Keyed requests pipelined to one engine; asserts 200; the servers' names."""
    res = pipelined_to(engine.host, engine.port, [keyed_request(k, header) for k in keys],
                       conns=conns)
    assert not res.errors, res.errors
    bad = [r for r in res if r is None or r[0] != 200]
    assert not bad, bad[:3]
    return [backend_name(r[1]) for r in res]


class MemoryStore(PersistenceTestCase):
    def test_one_engine_keeps_each_client_on_its_server(self):
        backs = self.start_backends("abc")
        addrs = [b.address for b in backs]
        e, = self.start_engines(1, addrs, HEADER, store="memory")
        st = e.state()
        self.assertEqual(st["store"]["type"], "memory")
        self.assertTrue(st["store"]["connected"])
        keys = [f"m-{i}" for i in range(300)]
        first = names_of(e, keys, conns=8)
        self.assertEqual(set(first), {"a", "b", "c"})
        for conns in (1, 3, 8):  # new connections, both workers
            self.assertEqual(names_of(e, keys, conns=conns), first)
        d = e.decisions()
        self.assertEqual(d["created"], len(keys), d)
        self.assertEqual(d["cache_hit"] + d["existing"], 3 * len(keys), d)
        self.assertEqual((d["replaced"], d["degraded"], d["unknown"]), (0, 0, 0), d)
        entry = e.state(f"vs:{keys[0]}")["entry"]
        self.assertEqual(entry["store"]["value"], self.ids[first[0]])
        self.assertTrue(0 < entry["store"]["ttl_ms"] <= 300000, entry)
        self.assertEqual(entry["cached"], self.ids[first[0]])
        # A drained server's clients move, each to one new server, and stay there.
        x = backs[0]
        servers = [{"address": a, "drain": True} if a == x.address else a for a in addrs]
        reload_config(e.b, e.admin, e.config(servers=servers))
        moved = [k for k, n in zip(keys, first) if n == x.name]
        after = names_of(e, moved, conns=8)
        self.assertNotIn(x.name, after)
        for conns in (1, 5):
            self.assertEqual(names_of(e, moved, conns=conns), after)
        self.assertGreaterEqual(e.decisions()["replaced"], len(moved))
        rest = [k for k in keys if k not in set(moved)]
        self.assertEqual(names_of(e, rest), [n for k, n in zip(keys, first) if n != x.name])

    def test_memory_entries_expire(self):
        backs = self.start_backends("ab")
        e, = self.start_engines(1, [b.address for b in backs],
                                "{type: http_header, header: X-Client, timeout: 1s}",
                                store="memory")
        name = names_of(e, ["short"])[0]
        entry = e.state("vs:short")["entry"]
        self.assertEqual(entry["store"]["value"], self.ids[name])
        self.assertTrue(0 < entry["store"]["ttl_ms"] <= 1000, entry)
        wait_until(lambda: e.state("vs:short")["entry"]["store"] is None, 3, interval=0.05,
                   message="the memory entry expires")
        created = e.decisions()["created"]
        names_of(e, ["short"])
        self.assertEqual(e.decisions()["created"], created + 1)


class Expiry(PersistenceTestCase):
    def test_an_unused_entry_expires_and_a_used_one_lives_on(self):
        redis = self.start_redis()
        backs = self.start_backends("abc")
        a, b = self.start_engines(2, [b.address for b in backs],
                                  "{type: http_header, header: X-Client, timeout: 2s}", redis)
        for e in (a, b):
            wait_store_connected(e)
        idle, busy = persist_key("vs", "idle"), persist_key("vs", "busy")
        s_idle = names_of(a, ["idle"])[0]
        created_at = time.monotonic()
        pttl = redis.command("PTTL", idle)
        self.assertTrue(1500 < pttl <= 2000, pttl)
        self.assertEqual(redis.command("GET", idle), self.ids[s_idle])
        entry = a.state("vs:idle")["entry"]
        self.assertEqual(entry["store"]["value"], self.ids[s_idle])
        self.assertTrue(0 < entry["store"]["ttl_ms"] <= 2000, entry)
        self.assertEqual(names_of(b, ["idle"]), [s_idle])
        # "busy" is used every 200 ms, through both engines, for 5 s (2.5 lifetimes).
        s_busy = names_of(a, ["busy"])[0]
        gone_at, lowest, turn = None, 2000, 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            e = (a, b)[turn % 2]
            turn += 1
            self.assertEqual(names_of(e, ["busy"], conns=1), [s_busy])
            p = redis.command("PTTL", busy)
            lowest = min(lowest, p)
            self.assertGreater(p, 0, f"the used entry expired after {turn} uses")
            if gone_at is None and redis.command("PTTL", idle) == -2:
                gone_at = time.monotonic()
            time.sleep(0.2)
        self.assertIsNotNone(gone_at, "the unused entry did not expire")
        self.assertTrue(1.7 <= gone_at - created_at <= 3.0, gone_at - created_at)
        entry = a.state("vs:idle")["entry"]
        self.assertIsNone(entry["store"], entry)
        self.assertIsNone(entry["cached"], entry)
        # After expiry the key is decided anew (and stored with a fresh lifetime), alike on both.
        created = a.decisions()["created"]
        again = names_of(a, ["idle"])[0]
        self.assertEqual(a.decisions()["created"], created + 1)
        self.assertEqual(redis.command("GET", idle), self.ids[again])
        self.assertTrue(1500 < redis.command("PTTL", idle) <= 2000)
        self.assertEqual(names_of(b, ["idle"]), [again])
        # Left alone, the busy entry goes too.
        stopped = time.monotonic()
        wait_until(lambda: redis.command("PTTL", busy) == -2, 4, interval=0.05,
                   message="the busy entry expires once unused")
        self.assertLess(time.monotonic() - stopped, 2.0 + 1.0)
        FIGURES["expiry"] = (f"unused entry gone {gone_at - created_at:.2f}s after creation "
                             f"(timeout 2s); used entry's PTTL never below {lowest} ms over 5s")


def session_backend(name):
    """Issues JSESSIONID=<name>.<n> on /login; answers "<name> <path>" (backend_name: name)."""
    count = [0]
    lock = threading.Lock()

    def handler(req, body):
        if req.path.startswith("/login"):
            with lock:
                count[0] += 1
                value = f"{name}.{count[0]}"
            return 200, {"Set-Cookie": f"JSESSIONID={value}; Path=/; HttpOnly"}, f"{name} login".encode()
        return 200, {}, f"{name} {req.path}".encode()
    return HttpBackend(name, handler)


class AppCookie(PersistenceTestCase):
    def test_sessions_learned_from_set_cookie_reach_their_server_on_every_engine(self):
        redis = self.start_redis()
        backs = [self.track(session_backend(n)) for n in "abc"]
        self.ids = {x.name: server_id(x.address) for x in backs}
        a, b = self.start_engines(2, [x.address for x in backs],
                                  "{type: app_cookie, cookie: JSESSIONID, timeout: 300s}", redis,
                                  vs="app")
        for e in (a, b):
            wait_store_connected(e)
        sessions = {}
        for i in range(30):
            e = (a, b)[i % 2]
            r = http_get_from(e.host, e.port, "/login")
            self.assertEqual(r.status, 200)
            sc = r.header("set-cookie")
            m = re.fullmatch(r"JSESSIONID=(([abc])\.\d+); Path=/; HttpOnly", sc or "")
            self.assertIsNotNone(m, f"Set-Cookie not passed on intact: {r.headers}")
            self.assertEqual(m.group(2), backend_name(r.body))
            sessions[m.group(1)] = backend_name(r.body)
        self.assertGreaterEqual(len(set(sessions.values())), 2, sessions)
        want = {persist_key("app", v): self.ids[n] for v, n in sessions.items()}
        def learned():
            with redis.client() as c:
                return c.get_many(want) == want
        wait_until(learned, 5, interval=0.05, message="every session cookie learned in Redis")
        # Every later request carrying the cookie reaches the issuing server, on both engines,
        # on new connections and mixed on one keep-alive connection.
        for v, n in sessions.items():
            for e in (b, a):
                r = http_get_from(e.host, e.port, "/cart",
                                  [("Cookie", f"theme=dark; JSESSIONID={v}; lang=en")])
                self.assertEqual((r.status, backend_name(r.body)), (200, n), (v, e.name))
        with HttpConn(b.port, host=b.host) as c:
            for v, n in list(sessions.items()) * 2:
                c.request("GET", "/ka", [("Cookie", f"JSESSIONID={v}")])
                r = c.read_response()
                self.assertEqual(backend_name(r.body), n, v)
        entry = b.state(f"app:{next(iter(sessions))}")["entry"]
        self.assertEqual(entry["store"]["value"], self.ids[sessions[next(iter(sessions))]])
        # A value nobody issued goes to the algorithm, counted as unknown, and is not stored.
        unknown0 = b.decisions("app")["unknown"]
        got = collections.Counter()
        for i in range(12):
            r = http_get_from(b.host, b.port, "/x", [("Cookie", f"JSESSIONID=forged-{i}")])
            self.assertEqual(r.status, 200)
            got[backend_name(r.body)] += 1
        self.assertGreaterEqual(len(got), 2, got)
        self.assertGreaterEqual(b.decisions("app")["unknown"] - unknown0, 12)
        for i in range(3):  # no cookie at all: the algorithm, nothing stored
            self.assertEqual(http_get_from(a.host, a.port, "/y").status, 200)
        self.assertEqual(len(redis.keys("ballast:v1:persist:app:*")), len(sessions))


def cookie_backend(name):
    """Sets the Set-Cookie given in ?sc= (URL-encoded), waits ?sleep= seconds; answers
    "<name> <path>"."""
    def handler(req, body):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(req.path).query)
        if "sleep" in query:
            time.sleep(float(query["sleep"][0]))
        sc = query.get("sc")
        return 200, ({"Set-Cookie": sc[0]} if sc else {}), f"{name} {req.path}".encode()
    return HttpBackend(name, handler)


class CookieDetails(PersistenceTestCase):
    def setup_app(self, persistence="{type: app_cookie, cookie: JSESSIONID, timeout: 300s}",
                  vs="app"):
        self.redis = self.start_redis()
        backs = [self.track(cookie_backend(n)) for n in "abc"]
        self.ids = {x.name: server_id(x.address) for x in backs}
        engines = self.start_engines(2, [x.address for x in backs], persistence, self.redis, vs=vs)
        for e in engines:
            wait_store_connected(e)
        return engines

    def issue(self, e, set_cookie, cookie=None):
        """A request through e whose server sets `set_cookie`; the server's name."""
        r = http_get_from(e.host, e.port, "/issue?sc=" + urllib.parse.quote(set_cookie),
                          [("Cookie", cookie)] if cookie else None)
        self.assertEqual(r.status, 200)
        return backend_name(r.body)

    def through(self, e, cookie):
        r = http_get_from(e.host, e.port, "/use", [("Cookie", cookie)])
        self.assertEqual(r.status, 200)
        return backend_name(r.body)

    def test_app_cookie_issued_again_by_another_server_moves_on_every_engine(self):
        a, b = self.setup_app()
        first = self.issue(a, "JSESSIONID=z8; Path=/")
        self.assertEqual(self.through(b, "JSESSIONID=z8"), first)  # b caches z8 -> first
        second = first
        while second == first:  # round robin: another server issues the same session id
            second = self.issue(a, "JSESSIONID=z8; Path=/")
        wait_until(lambda: self.redis.command("GET", persist_key("app", "z8")) == self.ids[second],
                   5, interval=0.05, message="the store follows the server that issued z8 last")
        wait_until(lambda: self.through(b, "JSESSIONID=z8") == second, 5, interval=0.05,
                   message="the other engine follows too (its cached copy dropped)")
        for e in (a, b):
            for _ in range(3):
                self.assertEqual(self.through(e, "JSESSIONID=z8"), second, e.name)

    def test_app_cookie_whitespace_and_deletions(self):
        a, b = self.setup_app()
        # RFC 6265 5.2: whitespace around the name and the value is not part of them.
        w2 = self.issue(a, "JSESSIONID=w2 ; Path=/")
        w1 = self.issue(a, " JSESSIONID = w1")
        wait_until(lambda: self.redis.command("GET", persist_key("app", "w1")) == self.ids[w1], 5,
                   interval=0.05, message="w1 learned")
        self.assertEqual(self.redis.command("GET", persist_key("app", "w2")), self.ids[w2])
        for e in (a, b):
            for cookie in ("JSESSIONID=w2", "a=1;\tJSESSIONID=w2", "JSESSIONID=w2 ; a=1"):
                self.assertEqual(self.through(e, cookie), w2, (e.name, cookie))
            self.assertEqual(self.through(e, "theme=x; JSESSIONID=w1"), w1, e.name)
        # A cookie the server deletes names no session.
        self.issue(a, "JSESSIONID=gone; Max-Age=0; Path=/")
        self.issue(a, "JSESSIONID=gone2; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/")
        self.issue(a, "JSESSIONID=kept; Expires=Wed, 01 Jan 2098 00:00:00 GMT; Path=/")
        wait_until(lambda: self.redis.command("GET", persist_key("app", "kept")) is not None, 5,
                   interval=0.05, message="a cookie that expires later is learned")
        self.assertIsNone(self.redis.command("GET", persist_key("app", "gone")))
        self.assertIsNone(self.redis.command("GET", persist_key("app", "gone2")))

    def test_http_cookie_set_once_when_the_server_sets_the_same_name(self):
        a, _ = self.setup_app("{type: http_cookie, timeout: 300s}", vs="shop")
        r = http_get_from(a.host, a.port, "/issue?sc=" + urllib.parse.quote("BALLAST_SERVER=app; Path=/"))
        self.assertEqual(r.status, 200)
        mine = [v for v in r.header_all("set-cookie") if v.startswith("BALLAST_SERVER=")]
        self.assertEqual(len(mine), 1, r.raw_head)
        self.assertRegex(mine[0], COOKIE_RE)
        # With a valid cookie the client keeps it: the server's one of that name is not passed on.
        r2 = http_get_from(a.host, a.port, "/issue?sc=" + urllib.parse.quote("BALLAST_SERVER=app"),
                           [("Cookie", mine[0].split(";")[0])])
        self.assertEqual(r2.header_all("set-cookie"), [], r2.raw_head)
        self.assertEqual(backend_name(r2.body), backend_name(r.body))

    def test_http_cookie_kept_when_its_server_is_only_full(self):
        # The cookie's server is at max_connections: this request goes elsewhere, but the client
        # keeps its cookie (a passing overflow does not move the session for good).
        backs = [self.track(cookie_backend(n)) for n in "ab"]
        self.ids = {x.name: server_id(x.address) for x in backs}
        e, = self.start_engines(1, [{"address": x.address, "max_connections": 1} for x in backs],
                                "{type: http_cookie, timeout: 300s}", None, store="memory",
                                vs="shop", workers=1)
        r = http_get_from(e.host, e.port, "/first")
        cookie = r.header("set-cookie").split(";")[0]
        home = backend_name(r.body)
        slow = threading.Thread(target=http_get_from, args=(e.host, e.port, "/slow?sleep=1.5",
                                                             [("Cookie", cookie)]), daemon=True)
        slow.start()
        time.sleep(0.5)  # the slow request holds the cookie's server's only connection
        r = http_get_from(e.host, e.port, "/while-full", [("Cookie", cookie)])
        self.assertEqual(r.status, 200)
        self.assertNotEqual(backend_name(r.body), home)
        self.assertEqual(r.header_all("set-cookie"), [], r.raw_head)
        slow.join(5)
        r = http_get_from(e.host, e.port, "/after", [("Cookie", cookie)])
        self.assertEqual(backend_name(r.body), home)

    def test_http_header_in_several_lines_keys_like_one_list(self):
        # RFC 9110 5.3: "X-Client: alice" + "X-Client: bob" means "X-Client: alice, bob".
        self.redis = self.start_redis()
        backs = self.start_backends("abc")
        e, = self.start_engines(1, [x.address for x in backs], HEADER, self.redis)
        wait_store_connected(e)
        with HttpConn(e.port, host=e.host) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Client: alice\r\nX-Client: \r\n"
                   b"X-Client: bob\r\n\r\n")
            split = backend_name(c.read_response().body)
        self.assertEqual(self.redis.command("GET", persist_key("vs", "alice, bob")), self.ids[split])
        for _ in range(4):
            r = http_get_from(e.host, e.port, "/", [("X-Client", "alice, bob")])
            self.assertEqual(backend_name(r.body), split)


class HttpCookie(PersistenceTestCase):
    def test_inserted_cookie_set_honoured_shared_and_replaced(self):
        redis = self.start_redis()
        backs = self.start_backends("abc")
        addrs = [x.address for x in backs]
        a, b = self.start_engines(2, addrs, "{type: http_cookie, timeout: 300s}", redis,
                                  vs="shop")
        for e in (a, b):
            wait_store_connected(e)
        r = http_get_from(a.host, a.port, "/", source="127.0.0.1")
        s1 = backend_name(r.body)
        m = COOKIE_RE.match(r.header("set-cookie") or "")
        self.assertIsNotNone(m, r.headers)
        # The client's address keys a shared entry: a retry without the cookie lands alike.
        wait_until(lambda: redis.command("GET", persist_key("shop", "127.0.0.1")) == self.ids[s1],
                   3, interval=0.05, message="the address entry in Redis")
        for e in (b, a, b):
            self.assertEqual(backend_name(http_get_from(e.host, e.port, "/", source="127.0.0.1").body), s1)
        # Each server's cookie: the same value from both engines, opaque, distinct.
        cookies = collections.defaultdict(set)
        cookies[s1].add(m.group(1))
        for i in range(1, 40):
            e = (a, b)[i % 2]
            r = http_get_from(e.host, e.port, "/", source=f"127.0.9.{i}")
            mm = COOKIE_RE.match(r.header("set-cookie") or "")
            self.assertIsNotNone(mm, r.headers)
            cookies[backend_name(r.body)].add(mm.group(1))
            if len(cookies) == 3 and i >= 12:
                break
        self.assertEqual(set(cookies), {"a", "b", "c"})
        self.assertTrue(all(len(v) == 1 for v in cookies.values()), cookies)
        value = {n: next(iter(v)) for n, v in cookies.items()}
        self.assertEqual(len(set(value.values())), 3)
        for x in backs:
            self.assertNotIn(str(x.port), value[x.name])
        # The cookie beats the address entry, on both engines, among other cookies.
        s2 = next(n for n in "abc" if n != s1)
        for e in (a, b, a):
            r = http_get_from(e.host, e.port, "/", source="127.0.0.1",
                              headers=[("Cookie", f"x=1; BALLAST_SERVER={value[s2]}; y=2")])
            self.assertEqual(backend_name(r.body), s2)
        # A cookie that names no server is no cookie: the address entry decides, a cookie is set.
        r = http_get_from(b.host, b.port, "/", source="127.0.0.1",
                          headers=[("Cookie", "BALLAST_SERVER=0123456789abcdef")])
        self.assertEqual(backend_name(r.body), s1)
        self.assertEqual(r.header("set-cookie"), f"BALLAST_SERVER={value[s1]}; Path=/; HttpOnly")
        # s2 is drained: its cookie is replaced by one naming the server that answered.
        x2 = next(x for x in backs if x.name == s2)
        servers = [{"address": s, "drain": True} if s == x2.address else s for s in addrs]
        for e in (a, b):
            reload_config(e.b, e.admin, e.config(servers=servers))
        for e, source in ((a, "127.0.0.1"), (b, "127.0.0.1"), (a, "127.0.8.1"), (b, "127.0.8.2")):
            r = http_get_from(e.host, e.port, "/", source=source,
                              headers=[("Cookie", f"BALLAST_SERVER={value[s2]}")])
            got = backend_name(r.body)
            self.assertNotEqual(got, s2, (e.name, source))
            self.assertEqual(r.header("set-cookie"), f"BALLAST_SERVER={value[got]}; Path=/; HttpOnly",
                             (e.name, source, r.headers))
            for e2 in (a, b):
                follow = http_get_from(e2.host, e2.port, "/", source=source,
                                       headers=[("Cookie", f"BALLAST_SERVER={value[got]}")])
                self.assertEqual(backend_name(follow.body), got)

    def test_cookie_name_is_configurable(self):
        backs = self.start_backends("ab")
        e, = self.start_engines(1, [x.address for x in backs],
                                "{type: http_cookie, cookie: SRV, timeout: 60s}", store="memory")
        r = http_get_from(e.host, e.port, "/")
        m = re.fullmatch(r"SRV=([0-9a-f]{16}); Path=/; HttpOnly", r.header("set-cookie") or "")
        self.assertIsNotNone(m, r.headers)
        first = backend_name(r.body)
        for i in range(4):
            r = http_get_from(e.host, e.port, "/", source=f"127.0.7.{i + 1}",
                              headers=[("Cookie", f"SRV={m.group(1)}")])
            self.assertEqual(backend_name(r.body), first)


class ClientIpTcp(PersistenceTestCase):
    def test_same_client_same_server_on_two_engines_and_prefix_grouping(self):
        redis = self.start_redis()
        backs = [self.track(NamedTcpBackend(n)) for n in "abc"]
        self.ids = {x.name: server_id(x.address) for x in backs}
        engines = []
        for i in range(2):
            host = self.HOSTS[i]
            p32, p24, admin = free_port(), free_port(), free_port()
            text = store_config(
                [("db", f"{host}:{p32}", "tcp", "{type: client_ip, timeout: 300s}"),
                 ("db24", f"{host}:{p24}", "tcp", "{type: client_ip, ipv4_prefix: 24, timeout: 300s}")],
                [x.address for x in backs], admin, redis_port=redis.port)
            e = start_engine(self, text, [(host, p32), (host, p24)], admin, name=f"se{i + 1}")
            e.p24 = p24
            engines.append(e)
        a, b = engines
        for e in engines:
            wait_store_connected(e)
        # Twenty clients, each connecting first through both engines at once.
        sources = [f"127.0.3.{i}" for i in range(1, 21)]
        seen = collections.defaultdict(list)
        lock = threading.Lock()

        def connect(e, port, source):
            name = tcp_name_from(e.host, port, source)
            with lock:
                seen[source].append(name)
        ts = [threading.Thread(target=connect, args=(e, e.port, s)) for s in sources for e in engines]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        for _ in range(2):
            for s in sources:
                for e in engines:
                    seen[s].append(tcp_name_from(e.host, e.port, s))
        split = {s: v for s, v in seen.items() if len(set(v)) != 1 or len(v) != 6}
        self.assertEqual(split, {}, "a client reached different servers")
        self.assertGreaterEqual(len({v[0] for v in seen.values()}), 2, seen)
        for s in sources:
            self.assertEqual(redis.command("GET", persist_key("db", s)), self.ids[seen[s][0]])
        # ipv4_prefix 24: 127.0.0.2, .3 and .9 share one entry (and server), on both engines;
        # other /24 networks have their own.
        groups = {"127.0.0": ["127.0.0.2", "127.0.0.3", "127.0.0.9"],
                  "127.0.5": ["127.0.5.1", "127.0.5.200"], "127.0.6": ["127.0.6.7", "127.0.6.8"]}
        got = {}
        for net, members in groups.items():
            names = [tcp_name_from(e.host, e.p24, s) for s in members for e in (a, b, b, a)]
            self.assertEqual(len(set(names)), 1, (net, names))
            got[net] = names[0]
        self.assertGreaterEqual(len(set(got.values())), 2, got)
        stored = redis.keys("ballast:v1:persist:db24:*")
        self.assertEqual(len(stored), len(groups), stored)
        for net, name in got.items():
            key, = [k for k in stored if k.startswith(f"ballast:v1:persist:db24:{net}.0")]
            self.assertEqual(redis.command("GET", key), self.ids[name])


class Inspection(PersistenceTestCase):
    def test_state_of_a_key_that_is_not_utf8(self):
        # Client keys are header bytes (obs-text allowed): /state must answer valid JSON for them
        # and the admin listener must stay up.
        redis = self.start_redis()
        backs = self.start_backends("ab")
        e, = self.start_engines(1, [x.address for x in backs], HEADER, redis)
        wait_store_connected(e)
        res = pipelined_to(e.host, e.port, [keyed_request("caf\xe9\xff")], conns=1)
        self.assertEqual(res[0][0], 200, res)
        for path in ("/state?key=vs:caf%E9%FF", "/state?key=vs:%FF%FE"):
            code, body = admin_get(e.admin, path)
            self.assertEqual(code, 200, body)
            entry = json.loads(body)["entry"]
            self.assertIn("\ufffd", entry["key"])
        self.assertEqual(json.loads(admin_get(e.admin, "/state?key=vs:caf%E9%FF")[1])["entry"]["store"]["value"],
                         self.ids[backend_name(res[0][1])])
        self.assertEqual(status(e.admin)["state"], "running")
        # A key as long as a head allows can be inspected too (percent-encoded, three times longer).
        long_key = "%" * 12000
        res = pipelined_to(e.host, e.port, [keyed_request(long_key)], conns=1)
        self.assertEqual(res[0][0], 200, res)
        rc, out, err = run_ballast("se", "state", "--admin", f"127.0.0.1:{e.admin}", "--key",
                                   "vs:" + long_key)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["entry"]["store"]["value"], self.ids[backend_name(res[0][1])])

    def test_state_cli_and_metrics(self):
        redis = self.start_redis()
        backs = self.start_backends("abc")
        e, = self.start_engines(1, [x.address for x in backs], HEADER, redis, cache_size=5000)
        st = wait_store_connected(e)
        self.assertEqual(st["store"]["type"], "redis")
        self.assertEqual(st["store"]["address"], redis.address)
        for k in ("round_trips", "errors", "timeouts", "reconnects", "notifications"):
            self.assertIsInstance(st["store"][k], int, k)
        self.assertEqual({k: st["cache"][k] for k in ("entries", "capacity", "hits", "misses")},
                         {"entries": 0, "capacity": 5000, "hits": 0, "misses": 0})
        self.assertEqual(st["cache"]["hit_rate"], 0)
        self.assertEqual(st["sync"], {"pending": 0, "dropped": 0, "resynced": 0, "conflicts": 0})
        self.assertEqual(st["virtual_services"], [{
            "name": "vs", "persistence": "http_header", "timeout_seconds": 300,
            "decisions": {o: 0 for o in ("cache_hit", "existing", "created", "replaced",
                                         "degraded", "unknown")}}])
        self.assertEqual(st["degraded_decisions"], 0)
        self.assertEqual(status(e.admin)["config"]["store"], "redis")
        code, body = admin_get(e.admin, "/metrics")
        families, _, problems = parse_prometheus(body)
        self.assertEqual(problems, [])
        want = {"ballast_store_connected": "gauge", "ballast_store_round_trips_total": "counter",
                "ballast_store_errors_total": "counter", "ballast_store_timeouts_total": "counter",
                "ballast_store_reconnects_total": "counter",
                "ballast_store_notifications_total": "counter",
                "ballast_persistence_cache_entries": "gauge",
                "ballast_persistence_cache_hits_total": "counter",
                "ballast_persistence_cache_misses_total": "counter",
                "ballast_persistence_sync_pending": "gauge",
                "ballast_persistence_resynced_total": "counter",
                "ballast_vs_persistence_decisions_total": "counter"}
        self.assertEqual({f: families[f]["type"] for f in want if f in families}, want)
        self.assertEqual(metric_sample(e, "ballast_store_connected", type="redis"), 1)
        trips0 = metric_sample(e, "ballast_store_round_trips_total", type="redis")

        keys = [f"k{i}" for i in range(50)] + ["user@example.com"]
        first = names_of(e, keys)
        self.assertEqual(names_of(e, keys), first)
        st = e.state()
        d = st["virtual_services"][0]["decisions"]
        self.assertEqual((d["created"], d["cache_hit"]), (len(keys), len(keys)), d)
        self.assertEqual(st["cache"]["entries"], len(keys))
        self.assertGreaterEqual(st["cache"]["hits"], len(keys))
        self.assertGreaterEqual(st["cache"]["misses"], len(keys))
        self.assertAlmostEqual(st["cache"]["hit_rate"],
                               st["cache"]["hits"] / (st["cache"]["hits"] + st["cache"]["misses"]),
                               places=3)
        self.assertGreaterEqual(st["store"]["round_trips"], len(keys))
        outcomes = {l["outcome"]: v for l, v in
                    metric_family_values(e, "ballast_vs_persistence_decisions_total")
                    if l.get("vs") == "vs"}
        self.assertEqual(set(outcomes), {"cache_hit", "existing", "created", "replaced",
                                         "degraded", "unknown"})
        self.assertEqual((outcomes["created"], outcomes["cache_hit"]), (len(keys), len(keys)))
        self.assertGreaterEqual(metric_sample(e, "ballast_store_round_trips_total", type="redis"),
                                trips0 + len(keys))
        self.assertEqual(metric_sample(e, "ballast_persistence_cache_entries"), len(keys))
        self.assertEqual(metric_sample(e, "ballast_persistence_cache_hits_total"), st["cache"]["hits"])
        self.assertEqual(metric_sample(e, "ballast_persistence_cache_misses_total"),
                         st["cache"]["misses"])
        # ?key=
        entry = e.state("vs:k7")["entry"]
        self.assertEqual(entry["key"], "vs:k7")
        self.assertEqual(entry["store"]["value"], self.ids[first[7]])
        self.assertTrue(290000 < entry["store"]["ttl_ms"] <= 300000, entry)
        self.assertEqual(entry["cached"], self.ids[first[7]])
        entry = e.state("vs:user@example.com")["entry"]
        self.assertEqual((entry["key"], entry["store"]["value"]),
                         ("vs:user@example.com", self.ids[first[-1]]))
        self.assertEqual(e.state("vs:nobody")["entry"],
                         {"key": "vs:nobody", "store": None, "cached": None})
        # ballast se state prints the same.
        rc, out, err = run_ballast("se", "state", "--admin", f"127.0.0.1:{e.admin}")
        self.assertEqual(rc, 0, err)
        cli = json.loads(out)
        now = e.state()
        self.assertEqual(set(cli), set(now))
        self.assertEqual(cli["virtual_services"], now["virtual_services"])
        self.assertEqual(cli["store"]["address"], redis.address)
        rc, out, err = run_ballast("se", "state", "--admin", f"127.0.0.1:{e.admin}", "--key", "vs:k7")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["entry"]["store"]["value"], self.ids[first[7]])
        rc, out, err = run_ballast("se", "state", "--config", e.b.config_path, "--key",
                                   "vs:user@example.com")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["entry"]["store"]["value"], self.ids[first[-1]])
        rc, out, err = run_ballast("se", "state", "--admin", f"127.0.0.1:{free_port()}")
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot connect", err)


def tearDownModule():
    if FIGURES:
        print("\n  persistence: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()), flush=True)


if __name__ == "__main__":
    unittest.main()
