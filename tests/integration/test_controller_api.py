"""`ballast controller`: the REST API of docs/api.md against a real controller process (auth,
objects and versions, validation, apply, restart from SQLite, HTTPS), and the service engine
side of it (register, long poll, report, loss and failover) driven over HTTP by the test."""

import os
import shutil
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

from ctlr import ADMIN_TOKEN, READONLY_TOKEN, SE_TOKEN, Controller
from harness import BALLAST_BIN, free_port, wait_until

POOL = {"name": "web", "servers": [{"address": "127.0.0.1:9001"}]}
VS = {"name": "web", "listen": "127.0.0.1:18080", "protocol": "http", "pool": "web"}

DOC = """\
health_monitors:
  - {name: ok, type: tcp, interval: 2s}
pools:
  - name: web
    servers:
      - {address: 127.0.0.1:9001, weight: 2}
    health_monitors: [ok]
virtual_services:
  - name: web
    listen: 127.0.0.1:18080
    protocol: http
    pool: web
"""


class ControllerCase(unittest.TestCase):
    extra = ()

    def setUp(self):
        self.c = Controller(extra=self.extra)
        self.addCleanup(self.c.close)

    def api(self, method, path, body=None, token=ADMIN_TOKEN, **kw):
        return self.c.api(method, path, body, token=token, **kw)

    def se_api(self, method, path, body=None, **kw):
        return self.c.api(method, path, body, token=SE_TOKEN, **kw)

    def create_web(self):
        status, body, _ = self.api("POST", "/api/v1/pools", POOL)
        self.assertEqual(status, 201, body)
        status, body, _ = self.api("POST", "/api/v1/virtual_services", VS)
        self.assertEqual(status, 201, body)
        return body

    def events(self, **filters):
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        status, body, _ = self.api("GET", "/api/v1/events?" + query)
        self.assertEqual(status, 200, body)
        return body["items"]


class AuthTest(ControllerCase):
    def test_no_token_bad_token_and_wrong_scheme_are_401(self):
        for token, headers in ((None, {}), ("not-the-token", {}),
                               (None, {"Authorization": "Basic YWRtaW46YWRtaW4="}),
                               (ADMIN_TOKEN + "x", {}), (ADMIN_TOKEN[:-1], {})):
            status, body, h = self.c.api("GET", "/api/v1/pools", token=token, headers=headers)
            self.assertEqual(status, 401, (token, headers))
            self.assertEqual(body, {"error": "unauthorized"})
            self.assertEqual(h["WWW-Authenticate"], "Bearer")

    def test_read_only_token_reads_but_does_not_write(self):
        self.assertEqual(self.api("GET", "/api/v1/pools", token=READONLY_TOKEN)[0], 200)
        for method, path, body in (("POST", "/api/v1/pools", POOL),
                                   ("PUT", "/api/v1/pools/web", POOL),
                                   ("DELETE", "/api/v1/pools/web", None),
                                   ("POST", "/api/v1/apply", DOC)):
            status, answer, _ = self.api(method, path, body, token=READONLY_TOKEN)
            self.assertEqual(status, 403, (method, path))
            self.assertEqual(answer, {"error": "forbidden: read-only token"})
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)  # nothing was written

    def test_se_token_only_on_se_endpoints(self):
        status, body, _ = self.se_api("GET", "/api/v1/pools")
        self.assertEqual(status, 403)
        self.assertEqual(body, {"error": "forbidden: service engine token"})
        self.assertEqual(self.se_api("POST", "/api/v1/pools", POOL)[0], 403)
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)
        for token in (ADMIN_TOKEN, READONLY_TOKEN):
            status, _, _ = self.api("POST", "/api/v1/se/register", {"name": "se1"}, token=token)
            self.assertEqual(status, 403)
        self.assertEqual(self.api("GET", "/api/v1/ses")[1]["items"], [])
        self.assertEqual(self.se_api("POST", "/api/v1/se/register", {"name": "se1"})[0], 200)

    def test_tokens_are_never_logged(self):
        self.create_web()
        self.c.api("GET", "/api/v1/pools", token="guess-" + ADMIN_TOKEN)
        out = self.c.output()
        for token in (ADMIN_TOKEN, READONLY_TOKEN, SE_TOKEN):
            self.assertNotIn(token, out)


class ObjectsTest(ControllerCase):
    def test_crud_versions_and_etag(self):
        status, created, _ = self.api("POST", "/api/v1/pools", POOL)
        self.assertEqual(status, 201)
        v1 = created["version"]
        self.assertEqual({k: v for k, v in created.items() if k != "version"}, POOL)
        status, got, headers = self.api("GET", "/api/v1/pools/web")
        self.assertEqual((status, got["version"]), (200, v1))
        self.assertEqual(headers["ETag"], f'"{v1}"')
        status, body, _ = self.api("POST", "/api/v1/pools", POOL)
        self.assertEqual(status, 409)
        self.assertIn("already exists", body["error"])

        changed = dict(got, servers=[{"address": "127.0.0.1:9002"}])
        status, updated, _ = self.api("PUT", "/api/v1/pools/web", changed,
                                      headers={"If-Match": f'"{v1}"'})
        self.assertEqual(status, 200, updated)
        v2 = updated["version"]
        self.assertGreater(v2, v1)
        # A stale version is refused and changes nothing.
        status, body, _ = self.api("PUT", "/api/v1/pools/web", POOL,
                                   headers={"If-Match": f'"{v1}"'})
        self.assertEqual(status, 409)
        self.assertEqual(body, {"error": f"version mismatch: current is {v2}"})
        status, body, _ = self.api("DELETE", "/api/v1/pools/web", headers={"If-Match": str(v1)})
        self.assertEqual(status, 409)
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[1]["servers"],
                         [{"address": "127.0.0.1:9002"}])
        # PUT creates; the body's name must match the path.
        status, body, _ = self.api("PUT", "/api/v1/pools/api",
                                   {"servers": [{"address": "127.0.0.1:9003"}]})
        self.assertEqual(status, 201, body)
        self.assertEqual(body["name"], "api")
        status, body, _ = self.api("PUT", "/api/v1/pools/api", POOL)
        self.assertEqual(status, 400)
        status, body, _ = self.api("GET", "/api/v1/pools")
        self.assertEqual([p["name"] for p in body["items"]], ["api", "web"])

        status, body, _ = self.api("DELETE", "/api/v1/pools/web", headers={"If-Match": str(v2)})
        self.assertEqual(status, 204)
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)
        self.assertEqual(self.api("DELETE", "/api/v1/pools/web")[0], 404)
        # Versions never repeat after a delete.
        status, again, _ = self.api("POST", "/api/v1/pools", POOL)
        self.assertEqual(status, 201)
        self.assertGreater(again["version"], v2 + 1)

    def test_http_errors(self):
        status, body, _ = self.api("GET", "/api/v1/nothing")
        self.assertEqual(status, 404)
        self.assertIn("error", body)
        status, body, h = self.api("PATCH", "/api/v1/pools/web", POOL)
        self.assertEqual(status, 405)
        self.assertEqual(h["Allow"], "GET, PUT, DELETE")
        status, body, h = self.api("DELETE", "/api/v1/pools")
        self.assertEqual((status, h["Allow"]), (405, "GET, POST"))
        status, body, _ = self.api("POST", "/api/v1/pools", "{not json: [",
                                   content_type="application/json")
        self.assertEqual(status, 400)
        self.assertIn("error", body)
        status, body, _ = self.api("POST", "/api/v1/pools", "[1, 2]",
                                   content_type="application/json")
        self.assertEqual(status, 400)
        status, body, _ = self.api("POST", "/api/v1/apply", "x" * (4 * 1024 * 1024 + 10))
        self.assertEqual(status, 413)
        self.assertIn("too large", body["error"])

    def test_default_group_exists_and_stays(self):
        status, body, _ = self.api("GET", "/api/v1/se_groups")
        self.assertEqual([g["name"] for g in body["items"]], ["default"])
        status, body, _ = self.api("DELETE", "/api/v1/se_groups/default")
        self.assertEqual(status, 409)
        status, body, _ = self.api("PUT", "/api/v1/se_groups/default",
                                   {"max_vs_per_se": 5, "min_se_per_vs": 2, "spares": 1})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["min_se_per_vs"], 2)


class ValidationTest(ControllerCase):
    def invalid(self, kind, body, method="POST", path=None):
        status, answer, _ = self.api(method, path or f"/api/v1/{kind}", body)
        self.assertEqual(status, 422, answer)
        self.assertEqual(answer["error"], f"invalid {kind}/{body['name']}")
        return {e["path"]: e["message"] for e in answer["errors"]}

    def test_bad_value(self):
        errors = self.invalid("pools", {"name": "web", "servers": [
            {"address": "127.0.0.1:9001"}, {"address": "nowhere-port"}]})
        self.assertIn("servers[1].address", errors)
        errors = self.invalid("health_monitors", {"name": "m", "type": "http", "interval": "soon"})
        self.assertIn("interval", errors)
        errors = self.invalid("pools", {"name": "web", "servers": [
            {"address": "127.0.0.1:9001", "weight": 1000}]})
        self.assertEqual(errors, {"servers[0].weight": "expected an integer from 1 to 256"})
        errors = self.invalid("se_groups", {"name": "g", "ha_mode": "active_active"})
        self.assertIn("ha_mode", errors)

    def test_unknown_and_missing_keys(self):
        errors = self.invalid("pools", {"name": "web", "servers": [{"address": "127.0.0.1:9001"}],
                                        "colour": "blue"})
        self.assertIn("unknown key", errors["colour"])
        errors = self.invalid("pools", {"name": "web"})
        self.assertEqual(errors, {"servers": "at least one server is required"})
        errors = self.invalid("virtual_services", {"name": "web", "pool": "web"})
        self.assertIn("listen", errors)

    def test_missing_references(self):
        errors = self.invalid("virtual_services", dict(VS, pool="nope"))
        self.assertEqual(errors, {"pool": 'no pool named "nope"'})
        self.api("POST", "/api/v1/pools", POOL)
        errors = self.invalid("virtual_services", dict(VS, se_group="blue"))
        self.assertEqual(errors, {"se_group": 'no SE group named "blue"'})
        errors = self.invalid("pools", dict(POOL, name="api", health_monitors=["missing"]))
        self.assertEqual(errors, {"health_monitors[0]": 'no health monitor named "missing"'})

    def test_duplicates(self):
        self.create_web()
        errors = self.invalid("virtual_services", dict(VS, name="other"))  # same listen address
        self.assertIn("already used by virtual service", errors["listen"])
        errors = self.invalid("pools", {"name": "two", "servers": [
            {"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9001"}]})
        self.assertIn("duplicate address", errors["servers[1].address"])

    def test_engine_sections_refused_in_apply(self):
        status, body, _ = self.api("POST", "/api/v1/apply", "se:\n  workers: 2\n" + DOC)
        self.assertEqual(status, 422)
        self.assertEqual(body["errors"][0]["path"], "se")
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)

    def test_delete_refused_while_referenced(self):
        status, body, _ = self.api("POST", "/api/v1/apply",
                                   DOC + "se_groups:\n  - {name: blue}\n")
        self.assertEqual(status, 200, body)
        status, body, _ = self.api("PUT", "/api/v1/virtual_services/web", dict(VS, se_group="blue"))
        self.assertEqual(status, 200, body)
        for path, user in (("/api/v1/pools/web", "virtual_services/web"),
                           ("/api/v1/health_monitors/ok", "pools/web"),
                           ("/api/v1/se_groups/blue", "virtual_services/web")):
            status, body, _ = self.api("DELETE", path)
            self.assertEqual(status, 409, path)
            self.assertIn(user, body["error"])
        self.assertEqual(self.api("DELETE", "/api/v1/virtual_services/web")[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/pools/web")[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/health_monitors/ok")[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/se_groups/blue")[0], 204)


class ApplyTest(ControllerCase):
    def test_dry_run_apply_and_diff(self):
        status, body, _ = self.api("POST", "/api/v1/apply?dry_run=true", DOC)
        self.assertEqual(status, 200, body)
        self.assertTrue(body["dry_run"])
        self.assertEqual(sorted((c["op"], c["kind"], c["name"]) for c in body["changes"]),
                         [("create", "health_monitors", "ok"), ("create", "pools", "web"),
                          ("create", "virtual_services", "web")])
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)

        status, body, _ = self.api("POST", "/api/v1/apply", DOC)
        self.assertEqual(status, 200, body)
        self.assertFalse(body["dry_run"])
        revision = body["revision"]
        pool = self.api("GET", "/api/v1/pools/web")[1]
        self.assertEqual(pool["version"], revision)
        self.assertEqual(pool["servers"], [{"address": "127.0.0.1:9001", "weight": 2}])

        status, body, _ = self.api("POST", "/api/v1/apply", DOC)
        self.assertEqual(body["changes"], [])
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[1]["version"], revision)

        # JSON works as well: the monitor goes, the pool changes, the service stays.
        doc = {"pools": [{"name": "web", "servers": [{"address": "127.0.0.1:9005"}]}],
               "virtual_services": [VS]}
        status, body, _ = self.api("POST", "/api/v1/apply?dry_run=true", doc)
        self.assertEqual(sorted((c["op"], c["kind"], c["name"]) for c in body["changes"]),
                         [("delete", "health_monitors", "ok"), ("update", "pools", "web")])
        status, body, _ = self.api("POST", "/api/v1/apply", doc)
        self.assertEqual(status, 200)
        self.assertEqual(self.api("GET", "/api/v1/health_monitors/ok")[0], 404)
        self.assertEqual(self.api("GET", "/api/v1/virtual_services/web")[1]["version"], revision)
        self.assertEqual(self.api("GET", "/api/v1/se_groups/default")[0], 200)

        # Every change is an event, newest last; since_id pages forward, limit keeps the newest.
        changed = self.events(type="object_changed")
        ids = [e["id"] for e in changed]
        self.assertEqual(ids, sorted(ids))
        self.assertIn("deleted health_monitors/ok", changed[-1]["message"] + changed[-2]["message"])
        self.assertEqual(self.events(type="object_changed", limit=2), changed[-2:])
        self.assertEqual(self.events(since_id=ids[0], limit=1)[0]["id"], ids[1])
        self.assertEqual(self.events(object="pools/web")[-1]["details"]["op"], "update")

    def test_errors_name_the_line_and_apply_nothing(self):
        bad = DOC.replace("{address: 127.0.0.1:9001, weight: 2}",
                          "{address: 127.0.0.1:9001}\n      - {address: nope}")
        status, body, _ = self.api("POST", "/api/v1/apply", bad)
        self.assertEqual(status, 422, body)
        self.assertIn("line 7: pools[0].servers[1].address: ", body["error"])
        self.assertEqual(body["errors"][0]["line"], 7)
        self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 404)
        status, body, _ = self.api("POST", "/api/v1/apply", "pools: [\n")
        self.assertEqual(status, 400)
        self.assertIn("YAML syntax error", body["error"])


class RestartTest(ControllerCase):
    def test_state_survives_a_restart(self):
        self.api("POST", "/api/v1/apply", DOC)
        self.se_api("POST", "/api/v1/se/register", {"name": "se1", "address": "10.0.0.1"})
        before = {k: self.api("GET", f"/api/v1/{k}")[1]
                  for k in ("virtual_services", "pools", "health_monitors", "se_groups")}
        placements = self.api("GET", "/api/v1/placements")[1]
        self.assertEqual(placements["items"][0]["ses"], ["se1"])
        events = self.events()
        self.assertEqual(self.c.stop(), 0)
        self.c.start()
        for kind, items in before.items():
            self.assertEqual(self.api("GET", f"/api/v1/{kind}")[1], items, kind)
        self.assertEqual(self.api("GET", "/api/v1/placements")[1], placements)
        ses = self.api("GET", "/api/v1/ses")[1]["items"]
        self.assertEqual([(s["name"], s["address"]) for s in ses], [("se1", "10.0.0.1")])
        self.assertEqual(self.events()[:len(events)], events)
        # The revision keeps growing from where it was.
        status, body, _ = self.api("POST", "/api/v1/pools", dict(POOL, name="later"))
        self.assertGreater(body["version"], max(p["version"] for p in before["pools"]["items"]))


class CommandLineTest(unittest.TestCase):
    def run_controller(self, *args):
        return subprocess.run([BALLAST_BIN, "controller", *args], capture_output=True, text=True,
                              timeout=10)

    def test_bad_arguments_exit_2_with_one_line(self):
        with _TempDir() as d:
            token = os.path.join(d, "t")
            with open(token, "w") as f:
                f.write("abc\n")
            empty = os.path.join(d, "empty")
            open(empty, "w").close()
            base = ["--listen", f"127.0.0.1:{free_port()}", "--data-dir", os.path.join(d, "data")]
            cases = [
                ["--data-dir", d, "--admin-token-file", token],              # no --listen
                base,                                                        # no admin token
                base + ["--admin-token-file", empty],
                base + ["--admin-token-file", os.path.join(d, "missing")],
                base + ["--admin-token-file", token, "--se-lost-after", "3"],
                base + ["--admin-token-file", token, "--se-lost-after", "500ms",
                        "--heartbeat-interval", "1s"],                       # would flap
                base + ["--admin-token-file", token, "--tls-cert", token],
                base + ["--admin-token-file", token, "--bogus"],
            ]
            for args in cases:
                r = self.run_controller(*args)
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertTrue(r.stderr.startswith("ballast controller: "), r.stderr)


class ExclusiveTest(ControllerCase):
    def test_a_second_controller_on_the_same_port_or_data_dir_fails(self):
        self.create_web()
        for port, data_dir in ((self.c.port, None), (free_port(), self.c.data_dir)):
            with _TempDir() as d:
                data_dir = data_dir or os.path.join(d, "data")
                r = subprocess.run(
                    [BALLAST_BIN, "controller", "--listen", f"127.0.0.1:{port}",
                     "--data-dir", data_dir, "--admin-token-file", self.c.tokens["admin"]],
                    capture_output=True, text=True, timeout=10)
                self.assertNotEqual(r.returncode, 0)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # The first one still answers, alone.
        for _ in range(10):
            self.assertEqual(self.api("GET", "/api/v1/pools/web")[0], 200)


class _TempDir:
    def __enter__(self):
        import tempfile
        self.t = tempfile.TemporaryDirectory(prefix="ballast-ctlr-args-")
        return self.t.name

    def __exit__(self, *exc):
        self.t.cleanup()


@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class HttpsTest(unittest.TestCase):
    def test_api_over_https(self):
        with _TempDir() as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", cert], check=True, capture_output=True,
                           timeout=60)
            c = Controller(tls=(cert, key))
            try:
                self.assertTrue(c.url.startswith("https://"))
                status, body, _ = c.api("POST", "/api/v1/pools", POOL)
                self.assertEqual(status, 201, body)
                self.assertEqual(c.api("GET", "/api/v1/pools/web")[1]["name"], "web")
                self.assertEqual(c.api("GET", "/api/v1/pools", token=None)[0], 401)
                # Plain HTTP on the HTTPS port gets no API answer.
                plain = f"http://127.0.0.1:{c.port}/api/v1/pools"
                req = urllib.request.Request(
                    plain, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                with self.assertRaises(Exception):
                    with urllib.request.urlopen(req, timeout=5) as r:
                        r.read()
            finally:
                c.close()


class Reporter:
    """Reports for some SEs every 200 ms (their heartbeat), from a thread."""

    def __init__(self, controller, names):
        self.c = controller
        self.names = set(names)
        self.acked = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_event.is_set():
            for name in list(self.names):
                try:
                    self.c.api("POST", f"/api/v1/se/{name}/report",
                               {"acked_revision": self.acked.get(name, 0), "apply_error": None,
                                "status": {}, "interval_s": 0.2, "counters": {}}, token=SE_TOKEN)
                except OSError:  # the controller is stopped (a test's SIGSTOP): report again
                    pass
            self.stop_event.wait(0.2)

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)


class ServiceEngineTest(ControllerCase):
    extra = ("--se-lost-after", "1s", "--heartbeat-interval", "200ms")

    def register(self, name, **fields):
        status, body, _ = self.se_api("POST", "/api/v1/se/register", dict(name=name, **fields))
        self.assertEqual(status, 200, body)
        return body

    def config(self, name, known, wait=0, timeout=15):
        return self.se_api("GET", f"/api/v1/se/{name}/config?known={known}&wait={wait}",
                           timeout=timeout)

    def test_register_long_poll_and_report(self):
        answer = self.register("se1", address="10.0.0.1", se_group="default", version="0.1.0")
        self.assertEqual(answer,
                         {"name": "se1", "heartbeat_interval_ms": 200, "lost_after_ms": 1000})
        status, body, _ = self.config("se1", 0)
        self.assertEqual(status, 200)
        self.assertEqual(body["config"],
                         {"virtual_services": [], "pools": [], "health_monitors": []})
        empty_revision = body["revision"]
        reporter = Reporter(self.c, ["se1"])
        self.addCleanup(reporter.stop)

        # Nothing new: 304 after the wait, not before.
        start = time.monotonic()
        status, _, _ = self.config("se1", empty_revision, wait=1)
        self.assertEqual(status, 304)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)

        # A change answers a waiting poll at once.
        result = {}

        def poll():
            result["t0"] = time.monotonic()
            result["answer"] = self.config("se1", empty_revision, wait=20, timeout=30)
            result["t1"] = time.monotonic()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        changed_at = time.monotonic()
        self.api("POST", "/api/v1/apply", DOC)
        t.join(25)
        self.assertFalse(t.is_alive())
        status, body, _ = result["answer"]
        self.assertEqual(status, 200)
        self.assertLess(result["t1"] - changed_at, 2.0)
        revision = body["revision"]
        self.assertGreater(revision, empty_revision)
        config = body["config"]
        self.assertEqual([v["name"] for v in config["virtual_services"]], ["web"])
        self.assertEqual([p["name"] for p in config["pools"]], ["web"])
        self.assertEqual([m["name"] for m in config["health_monitors"]], ["ok"])
        self.assertNotIn("version", config["pools"][0])

        # An unrelated object does not change what the SE runs.
        self.api("POST", "/api/v1/pools", dict(POOL, name="unused"))
        self.assertEqual(self.config("se1", revision, wait=0.5)[0], 304)

        # Acknowledgement and failure become events.
        reporter.acked["se1"] = revision
        wait_until(lambda: self.events(type="config_applied", object="ses/se1"), timeout=5,
                   message="config_applied event")
        ses = self.api("GET", "/api/v1/ses")[1]["items"]
        self.assertEqual(ses[0]["acked_version"], revision)
        self.assertEqual(ses[0]["config_version"], revision)
        self.assertEqual(ses[0]["virtual_services"], ["web"])
        self.assertEqual(ses[0]["state"], "connected")
        self.assertLess(ses[0]["last_seen_age_s"], 1.0)
        reporter.stop()
        status, _, _ = self.se_api("POST", "/api/v1/se/se1/report",
                                   {"acked_revision": revision,
                                    "apply_error": "bind: address in use"})
        self.assertEqual(status, 204)
        failed = self.events(type="config_failed")
        self.assertEqual(len(failed), 1)
        self.assertIn("address in use", failed[0]["message"])
        status, se, _ = self.api("GET", "/api/v1/ses/se1")
        self.assertEqual(se["last_report"]["apply_error"], "bind: address in use")
        status, st, _ = self.api("GET", "/api/v1/virtual_services/web/status")
        self.assertEqual(status, 200)
        self.assertEqual(st["placement"], ["se1"])
        self.assertEqual(st["ses"][0]["name"], "se1")
        self.assertFalse(st["ses"][0]["in_sync"])

    def test_sigterm_ends_waiting_long_polls_and_exits_0(self):
        self.register("se1")
        revision = self.config("se1", 0)[1]["revision"]
        result = {}
        t = threading.Thread(target=lambda: result.update(
            answer=self.config("se1", revision, wait=30, timeout=40)))
        t.start()
        time.sleep(0.3)
        start = time.monotonic()
        self.assertEqual(self.c.stop(), 0)
        self.assertLess(time.monotonic() - start, 5.0)
        t.join(10)
        self.assertEqual(result["answer"][0], 304)

    def test_unknown_se_and_bad_queries(self):
        self.assertEqual(self.config("ghost", 0)[0], 404)
        status, _, _ = self.se_api("POST", "/api/v1/se/ghost/report", {"acked_revision": 1})
        self.assertEqual(status, 404)
        self.assertEqual(self.se_api("POST", "/api/v1/se/register", {"name": "bad name"})[0], 422)
        self.register("se1")
        self.assertEqual(self.se_api("GET", "/api/v1/se/se1/config?known=x")[0], 400)
        self.assertEqual(self.se_api("GET", "/api/v1/se/se1/config?known=0&wait=-1")[0], 400)
        self.assertEqual(self.se_api("GET", "/api/v1/se/se1/config?known=0&wait=nan")[0], 400)
        status, body, _ = self.api("GET", "/api/v1/events?limit=0")
        self.assertEqual(status, 400)

    def test_lost_se_and_failover(self):
        self.register("se1", address="10.0.0.1")
        self.register("se2", address="10.0.0.2")
        reporter = Reporter(self.c, ["se1", "se2"])
        self.addCleanup(reporter.stop)
        self.api("POST", "/api/v1/apply", DOC)
        placed = self.api("GET", "/api/v1/placements")[1]["items"][0]["ses"]
        self.assertEqual(len(placed), 1)
        victim = placed[0]
        survivor = "se2" if victim == "se1" else "se1"
        status, body, _ = self.config(victim, 0)
        self.assertEqual([v["name"] for v in body["config"]["virtual_services"]], ["web"])
        status, body, _ = self.config(survivor, 0)
        self.assertEqual(body["config"]["virtual_services"], [])
        survivor_revision = body["revision"]

        # The survivor is waiting for a change when the victim falls silent.
        result = {}
        t = threading.Thread(target=lambda: result.update(
            answer=self.config(survivor, survivor_revision, wait=20, timeout=30)))
        t.start()
        silent_at = time.monotonic()
        reporter.names.discard(victim)
        wait_until(lambda: self.events(type="se_lost", object=f"ses/{victim}"), timeout=5,
                   message="se_lost event")
        t.join(10)
        self.assertFalse(t.is_alive())
        status, body, _ = result["answer"]
        self.assertEqual(status, 200)
        self.assertEqual([v["name"] for v in body["config"]["virtual_services"]], ["web"])
        self.assertLess(time.monotonic() - silent_at, 5.0)
        self.assertEqual(self.api("GET", "/api/v1/placements")[1]["items"][0]["ses"], [survivor])
        moved = self.events(type="vs_moved", object="virtual_services/web")
        self.assertEqual(moved[-1]["details"], {"from": [victim], "to": [survivor]})
        ses = {s["name"]: s for s in self.api("GET", "/api/v1/ses")[1]["items"]}
        self.assertEqual(ses[victim]["state"], "lost")
        self.assertEqual(ses[victim]["virtual_services"], [])
        self.assertEqual(ses[survivor]["state"], "connected")
        # The lost SE is told to run nothing.
        status, body, _ = self.config(victim, 0)
        self.assertEqual(body["config"]["virtual_services"], [])

        # It comes back: it is connected again, and web stays where it moved.
        reporter.names.add(victim)
        wait_until(lambda: self.events(type="se_returned", object=f"ses/{victim}"), timeout=5,
                   message="se_returned event")
        self.assertEqual(self.api("GET", "/api/v1/placements")[1]["items"][0]["ses"], [survivor])


class StalledControllerTest(ControllerCase):
    extra = ServiceEngineTest.extra
    register = ServiceEngineTest.register

    def test_a_stalled_controller_declares_no_engine_lost(self):
        # The controller stops for three times --se-lost-after (SIGSTOP: a starved host, a stuck
        # disk): the engines' reports wait unread meanwhile, which is no loss of theirs.
        self.register("se1", address="10.0.0.1")
        self.register("se2", address="10.0.0.2")
        reporter = Reporter(self.c, ["se1", "se2"])
        self.addCleanup(reporter.stop)
        self.api("POST", "/api/v1/apply", DOC)
        placed = self.api("GET", "/api/v1/placements")[1]["items"][0]["ses"]
        os.kill(self.c.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3)
        finally:
            os.kill(self.c.proc.pid, signal.SIGCONT)
        time.sleep(1.5)  # checks run again, reports come in
        self.assertEqual(self.events(type="se_lost"), [], self.c.output()[-3000:])
        self.assertEqual(self.api("GET", "/api/v1/placements")[1]["items"][0]["ses"], placed)
        ses = {s["name"]: s["state"] for s in self.api("GET", "/api/v1/ses")[1]["items"]}
        self.assertEqual(ses, {"se1": "connected", "se2": "connected"})
        # A real silence is still noticed afterwards.
        reporter.names.discard("se2")
        wait_until(lambda: self.events(type="se_lost", object="ses/se2"), timeout=5,
                   message="se_lost event")


class LongPollLimitTest(ControllerCase):
    """--http-threads 16: at most 8 config long polls wait at once; the next is answered at once,
    and the API keeps threads to answer with."""
    extra = ("--http-threads", "16")
    register = ServiceEngineTest.register
    config = ServiceEngineTest.config

    def test_polls_beyond_the_limit_are_answered_at_once(self):
        names = [f"se{i}" for i in range(9)]
        known = {}
        for name in names:
            self.register(name)
            status, body, _ = self.config(name, 0)
            self.assertEqual(status, 200)
            known[name] = body["revision"]
        results = {}

        def poll(name):
            t0 = time.monotonic()
            status = self.config(name, known[name], wait=4, timeout=15)[0]
            results[name] = (status, time.monotonic() - t0)
        waiting = [threading.Thread(target=poll, args=(n,)) for n in names[:8]]
        for t in waiting:
            t.start()
        time.sleep(1)
        self.assertFalse(results, "a poll within the limit returned before its wait")
        t0 = time.monotonic()
        status, _, _ = self.config(names[8], known[names[8]], wait=4, timeout=15)
        self.assertEqual(status, 304)
        self.assertLess(time.monotonic() - t0, 1.0, "the ninth poll waited")
        t0 = time.monotonic()
        self.assertEqual(self.api("GET", "/api/v1/ses")[0], 200)
        self.assertLess(time.monotonic() - t0, 1.0, "the API waited behind the polls")
        for t in waiting:
            t.join(10)
        self.assertEqual(sorted(results), sorted(names[:8]))
        for name, (status, took) in results.items():
            self.assertEqual(status, 304, name)
            self.assertGreater(took, 3.5, name)
        # The polls are over: a new one waits again.
        t0 = time.monotonic()
        self.assertEqual(self.config(names[8], known[names[8]], wait=1.5, timeout=15)[0], 304)
        self.assertGreater(time.monotonic() - t0, 1.3)


class SeRemovalTest(ControllerCase):
    extra = ServiceEngineTest.extra + ("--health-interval", "200ms")
    register = ServiceEngineTest.register

    def test_removing_a_lost_se(self):
        self.register("se1", address="10.0.0.1")
        self.register("se2", address="10.0.0.2")
        reporter = Reporter(self.c, ["se1", "se2"])
        self.addCleanup(reporter.stop)
        wait_until(lambda: all(s["state"] == "connected"
                               for s in self.api("GET", "/api/v1/ses")[1]["items"]),
                   timeout=5, message="both SEs connected")
        # Still reporting: it would register again at once, so it is refused.
        status, body, _ = self.api("DELETE", "/api/v1/ses/se1")
        self.assertEqual(status, 409, body)
        self.assertIn("is connected: stop it first", body["error"])
        self.assertEqual(self.api("DELETE", "/api/v1/ses/ghost")[0], 404)
        self.assertEqual(self.api("DELETE", "/api/v1/ses")[0], 405)
        status, _, _ = self.api("DELETE", "/api/v1/ses/se1", token=READONLY_TOKEN)
        self.assertEqual(status, 403)

        wait_until(lambda: self.api("GET", "/api/v1/health/se/se1")[0] == 200, timeout=5,
                   message="a health score for se1")

        reporter.names.discard("se1")
        wait_until(lambda: self.events(type="se_lost", object="ses/se1"), timeout=5,
                   message="se_lost event")
        status, body, _ = self.api("DELETE", "/api/v1/ses/se1", headers={"If-Match": '"3"'})
        self.assertEqual(status, 400, body)
        status, body, _ = self.api("DELETE", "/api/v1/ses/se1")
        self.assertEqual(status, 204, body)
        self.assertEqual(self.api("GET", "/api/v1/ses/se1")[0], 404)
        self.assertEqual([s["name"] for s in self.api("GET", "/api/v1/ses")[1]["items"]], ["se2"])
        removed = self.events(type="se_removed", object="ses/se1")
        self.assertEqual(len(removed), 1)
        # Its health score goes with it.
        status, body, _ = self.api("GET", "/api/v1/health/se/se1")
        self.assertEqual(status, 404, body)
        # Once removed it is unknown: reports and config polls say so, and it registers anew.
        status, _, _ = self.se_api("POST", "/api/v1/se/se1/report", {"acked_revision": 0})
        self.assertEqual(status, 404)
        self.register("se1", address="10.0.0.1")
        self.assertTrue(self.events(type="se_joined", object="ses/se1"))


if __name__ == "__main__":
    unittest.main()
