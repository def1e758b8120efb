"""`ballast ctl` against a real `ballast controller`: every command, every output format, the
environment variables, and the error cases (one line on stderr, exit 1 for API and connection
errors, 2 for usage errors; the token never shown)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from ctlr import ADMIN_TOKEN, READONLY_TOKEN, SE_TOKEN, Controller
from harness import BALLAST_BIN, free_port, wait_until

DOCUMENT = """\
health_monitors:
  - name: ok
    type: http
    interval: 1s
    request: "GET /health"
pools:
  - name: web
    lb_algorithm: round_robin
    servers:
      - address: 127.0.0.1:{server1}
      - address: 127.0.0.1:{server2}
    health_monitors: [ok]
se_groups:
  - name: edge
    max_vs_per_se: 4
    min_se_per_vs: 1
    spares: 0
virtual_services:
  - name: web
    listen: 127.0.0.1:{listen}
    protocol: http
    pool: web
  - name: shop
    listen: 127.0.0.1:{listen2}
    protocol: http
    pool: web
    se_group: edge
"""

# Another server address: a change of pools/web only.
CHANGED = DOCUMENT.replace("address: 127.0.0.1:{server2}", "address: 127.0.0.1:{server3}")

INVALID = """\
pools:
  - name: web
    servers:
      - address: 127.0.0.1:9001
      - address: not-an-address
virtual_services: []
"""


def table(text):
    """Rows of an aligned table as lists of cells (header first)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


class CtlTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.controller = Controller()
        cls.tmp = tempfile.TemporaryDirectory(prefix="ballast-ctl-")
        ports = {"server1": free_port(), "server2": free_port(), "server3": free_port(),
                 "listen": free_port(), "listen2": free_port()}
        cls.document = cls.write("ballast.yaml", DOCUMENT.format(**ports))
        cls.changed = cls.write("changed.yaml", CHANGED.format(**ports))
        cls.invalid = cls.write("invalid.yaml", INVALID)
        cls.bad_token = cls.write("bad.token", "not-the-token-0123456789\n")

    @classmethod
    def tearDownClass(cls):
        cls.controller.close()
        cls.tmp.cleanup()

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.tmp.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def ctl(self, *args, token="admin", controller=True, env=None):
        """`ballast ctl ARGS` with --controller and --token-file (token: admin, readonly, se, a
        path, or None), without the BALLAST_* variables of the caller; (rc, stdout, stderr)."""
        flags = []
        if controller:
            flags += ["--controller", self.controller.url]
        if token is not None:
            flags += ["--token-file", self.controller.tokens.get(token, token)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")}
        p = subprocess.run([BALLAST_BIN, "ctl", *flags, *args], capture_output=True, timeout=30,
                           env=dict(clean, **(env or {})))
        out, err = p.stdout.decode(), p.stderr.decode()
        for secret in (ADMIN_TOKEN, READONLY_TOKEN, SE_TOKEN):
            self.assertNotIn(secret, out + err, "a token was printed")
        return p.returncode, out, err

    def ok(self, *args, **kw):
        rc, out, err = self.ctl(*args, **kw)
        self.assertEqual(rc, 0, f"ballast ctl {' '.join(args)}: {err}")
        self.assertEqual(err, "", err)
        return out

    def fails(self, *args, code=1, **kw):
        """Runs a command that must fail: exit `code`, nothing on stdout, every stderr line
        starting with 'ballast ctl: '. The stderr text."""
        rc, out, err = self.ctl(*args, **kw)
        self.assertEqual(rc, code, f"ballast ctl {' '.join(args)}: stdout={out!r} stderr={err!r}")
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertTrue(lines, "no message on stderr")
        for line in lines:
            self.assertTrue(line.startswith("ballast ctl: "), line)
        return err

    def apply_document(self):
        self.ok("apply", "-f", self.document)


class RoundTrip(CtlTestCase):
    """One controller for the class; the tests run in name order, test_1 on an empty one."""

    def test_1_apply_prints_the_changes(self):
        out = self.ok("apply", "-f", self.document)
        lines = out.splitlines()
        for change in ("create  health_monitors/ok", "create  pools/web",
                       "create  virtual_services/web", "create  virtual_services/shop",
                       "create  se_groups/edge"):
            self.assertIn(change, lines, out)
        self.assertRegex(lines[-1], r"^applied 5 changes: revision \d+$")
        # The same file again: nothing to do.
        out = self.ok("apply", "-f", self.document)
        self.assertRegex(out, r"^no changes \(revision \d+\)\n$")

    def test_2_get_each_kind_as_a_table(self):
        self.apply_document()
        expected = {
            "vs": (["NAME", "LISTEN", "PROTOCOL", "POOL", "SE_GROUP", "VERSION"], ["shop", "web"]),
            "pools": (["NAME", "LB_ALGORITHM", "SERVERS", "MONITORS", "VERSION"], ["web"]),
            "monitors": (["NAME", "TYPE", "INTERVAL", "TIMEOUT", "REQUEST", "VERSION"], ["ok"]),
            "se_groups": (["NAME", "MAX_VS_PER_SE", "MIN_SE_PER_VS", "HA_MODE", "SPARES",
                           "VERSION"], ["default", "edge"]),
        }
        for kind, (header, names) in expected.items():
            rows = table(self.ok("get", kind))
            self.assertEqual(rows[0], header, kind)
            self.assertEqual(sorted(r[0] for r in rows[1:]), names, kind)
        rows = table(self.ok("get", "vs"))
        web = next(r for r in rows if r[0] == "web")
        self.assertEqual(web[1:5], [f"127.0.0.1:{self.port_of('web')}", "http", "web", "default"])
        self.assertRegex(web[5], r"^\d+$")
        shop = next(r for r in rows if r[0] == "shop")
        self.assertEqual(shop[4], "edge")
        pool = table(self.ok("get", "pools", "web"))
        self.assertEqual(len(pool), 2)
        self.assertEqual(pool[1][1], "round_robin")
        self.assertEqual(pool[1][3], "ok")

        self.assertEqual(table(self.ok("get", "ses"))[0],
                         ["NAME", "ADDRESS", "SE_GROUP", "STATE", "LAST_SEEN", "CONFIG", "ACKED",
                          "VIRTUAL_SERVICES"])
        self.assertEqual(table(self.ok("get", "placements"))[0], ["VIRTUAL_SERVICE", "SES"])
        events = table(self.ok("get", "events"))
        self.assertEqual(events[0], ["ID", "TIME", "TYPE", "OBJECT", "MESSAGE"])
        self.assertGreater(len(events), 1, "applying created no event")

    def port_of(self, vs):
        _, body, _ = self.controller.api("GET", f"/api/v1/virtual_services/{vs}")
        return body["listen"].rsplit(":", 1)[1]

    def test_3_get_as_json_is_the_api_answer(self):
        self.apply_document()
        for kind, path in (("vs", "virtual_services"), ("pools", "pools"),
                           ("monitors", "health_monitors"), ("se_groups", "se_groups"),
                           ("ses", "ses"), ("placements", "placements")):
            out = self.ok("get", kind, "-o", "json")
            _, body, _ = self.controller.api("GET", f"/api/v1/{path}")
            self.assertEqual(json.loads(out), body, kind)
            self.assertTrue(out.startswith("{\n  "), "not pretty-printed")
        one = json.loads(self.ok("get", "vs", "web", "-o", "json"))
        self.assertEqual(one["name"], "web")
        self.assertEqual(one["pool"], "web")
        self.assertIsInstance(one["version"], int)
        events = json.loads(self.ok("get", "events", "-o", "json"))
        self.assertIn("items", events)

    def test_4_get_as_yaml(self):
        self.apply_document()
        out = self.ok("get", "vs", "-o", "yaml")
        self.assertTrue(out.startswith("items:\n"), out)
        self.assertRegex(out, r"(?m)^  - \w+: ")
        self.assertIn("    name: web\n", out)
        self.assertIn("protocol: http\n", out)
        out = self.ok("get", "pools", "web", "-o", "yaml")
        self.assertIn("name: web\n", out.splitlines(keepends=True)[0:20])
        self.assertRegex(out, r"(?m)^servers:\n\s*- address: \"?127\.0\.0\.1:\d+\"?$")
        self.assertRegex(out, r"(?m)^version: \d+$")
        for kind in ("monitors", "se_groups", "ses", "events", "placements"):
            out = self.ok("get", kind, "-o", "yaml")
            self.assertTrue(out.startswith("items:"), f"{kind}: {out}")

    def test_5_status(self):
        self.apply_document()
        out = self.ok("status", "vs", "web")
        self.assertTrue(out.startswith("virtual service web\n"), out)
        self.assertRegex(out, r"(?m)^placement: ")
        self.assertEqual(json.loads(self.ok("status", "vs", "web", "-o", "json")),
                         self.controller.api("GET", "/api/v1/virtual_services/web/status")[1])
        err = self.fails("status", "vs", "nope")
        self.assertIn("404", err)

    def test_6_dry_run_changes_nothing(self):
        self.apply_document()
        before = json.loads(self.ok("get", "pools", "web", "-o", "json"))
        out = self.ok("apply", "-f", self.changed, "--dry-run")
        self.assertEqual(out.splitlines(), ["update  pools/web", "dry run: 1 change, nothing applied"])
        self.assertEqual(json.loads(self.ok("get", "pools", "web", "-o", "json")), before)
        answer = json.loads(self.ok("apply", "-f", self.changed, "--dry-run", "-o", "json"))
        self.assertTrue(answer["dry_run"])
        # Applied for real, the version moves on.
        self.ok("apply", "-f", self.changed)
        after = json.loads(self.ok("get", "pools", "web", "-o", "json"))
        self.assertGreater(after["version"], before["version"])
        self.apply_document()

    def test_6b_apply_from_stdin_and_json(self):
        self.apply_document()
        with open(self.document) as f:
            p = subprocess.run([BALLAST_BIN, "ctl", "--controller", self.controller.url,
                                "--token-file", self.controller.tokens["admin"], "apply", "-f", "-"],
                               input=f.read().encode(), capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"^no changes \(revision \d+\)\n$")
        # What `get -o json` shows, applied back as a JSON document, changes nothing.
        document = {}
        for kind, key in (("vs", "virtual_services"), ("pools", "pools"),
                          ("monitors", "health_monitors"), ("se_groups", "se_groups")):
            items = json.loads(self.ok("get", kind, "-o", "json"))["items"]
            document[key] = [{k: v for k, v in item.items() if k != "version"} for item in items]
        path = self.write("exported.json", json.dumps(document))
        self.assertRegex(self.ok("apply", "-f", path), r"^no changes \(revision \d+\)\n$")

    def test_7_delete(self):
        self.apply_document()
        err = self.fails("delete", "pool", "web")  # used by virtual services
        self.assertRegex(err, r"^ballast ctl: 409 .*\n$")
        version = json.loads(self.ok("get", "vs", "shop", "-o", "json"))["version"]
        err = self.fails("delete", "vs", "shop", "--if-version", str(version - 1))
        self.assertEqual(err, f"ballast ctl: 409 version mismatch: current is {version}\n")
        self.assertEqual(self.ok("delete", "vs", "shop", "--if-version", str(version)),
                         "deleted virtual_services/shop\n")
        self.assertEqual(self.ok("delete", "se_group", "edge"), "deleted se_groups/edge\n")
        self.assertEqual(self.ok("delete", "vs", "web"), "deleted virtual_services/web\n")
        self.assertEqual(self.ok("delete", "pool", "web"), "deleted pools/web\n")
        self.assertEqual(self.ok("delete", "monitor", "ok"), "deleted health_monitors/ok\n")
        self.assertEqual([r[0] for r in table(self.ok("get", "vs"))], ["NAME"])
        err = self.fails("get", "vs", "web")
        self.assertRegex(err, r"^ballast ctl: 404 .*\n$")
        err = self.fails("delete", "vs", "web")
        self.assertRegex(err, r"^ballast ctl: 404 .*\n$")
        err = self.fails("delete", "se", "ghost")
        self.assertRegex(err, r"^ballast ctl: 404 .*\n$")
        err = self.fails("delete", "se", "ghost", "--if-version", "3", code=2)
        self.assertIn("--if-version is for configuration objects", err)
        err = self.fails("delete", "events", "x", code=2)
        self.assertIn("(kinds: vs, pool, monitor, se_group, se)", err)
        self.apply_document()

    def test_8_events_filters(self):
        self.apply_document()
        self.ok("apply", "-f", self.changed)
        everything = json.loads(self.ok("get", "events", "-o", "json"))["items"]
        self.assertTrue(everything)
        kind = everything[-1]["type"]
        only = json.loads(self.ok("get", "events", "--type", kind, "-o", "json"))["items"]
        self.assertTrue(only)
        self.assertTrue(all(e["type"] == kind for e in only), only)
        obj = everything[-1]["object"]
        about = json.loads(self.ok("get", "events", "--object", obj, "-o", "json"))["items"]
        self.assertTrue(about)
        self.assertTrue(all(e["object"] == obj for e in about), about)
        rows = table(self.ok("get", "events", "--type", kind))
        self.assertTrue(all(r[2] == kind for r in rows[1:]), rows)
        self.apply_document()


class WithServiceEngine(CtlTestCase):
    """A managed SE serves the virtual services: placement, SEs and servers' health are shown."""

    def setUp(self):
        self.apply_document()
        self.se_dir = tempfile.TemporaryDirectory(prefix="ballast-ctl-se-")
        self.se_log = open(os.path.join(self.se_dir.name, "se.log"), "wb")
        self.se = subprocess.Popen(
            [BALLAST_BIN, "se", "--controller", self.controller.url,
             "--token-file", self.controller.tokens["se"], "--name", "se-1",
             "--address", "127.0.0.1", "--state-dir", self.se_dir.name],
            stdout=self.se_log, stderr=subprocess.STDOUT)

    def tearDown(self):
        if self.se.poll() is None:
            self.se.terminate()
            try:
                self.se.wait(20)
            except subprocess.TimeoutExpired:
                self.se.kill()
                self.se.wait()
        self.se_log.close()
        self.se_dir.cleanup()

    def test_status_shows_placement_ses_and_servers(self):
        def placed():
            items = json.loads(self.ok("get", "placements", "-o", "json"))["items"]
            return any(p["virtual_service"] == "web" and p["ses"] == ["se-1"] for p in items)
        wait_until(placed, timeout=15, interval=0.2, message="web placed on se-1")
        self.assertEqual(table(self.ok("get", "placements", "web")),
                         [["VIRTUAL_SERVICE", "SES"], ["web", "se-1"]])
        ses = table(self.ok("get", "ses"))
        self.assertEqual(ses[1][0], "se-1")
        self.assertEqual(ses[1][3], "connected")
        self.assertEqual(json.loads(self.ok("get", "ses", "se-1", "-o", "json"))["name"], "se-1")

        # Nothing listens on the servers' ports: se-1's health checks take them down.
        def servers_down():
            out = self.ok("status", "vs", "web")
            return len(re.findall(r"(?m)^  127\.0\.0\.1:\d+\s+down", out)) == 2 and out
        out = wait_until(servers_down, timeout=20, interval=0.2, message="servers down on se-1")
        self.assertIn("placement: se-1\n", out)
        self.assertRegex(out, r"(?m)^service engines:\n  NAME\s+STATE\s+CONFIG\s+ACKED")
        self.assertRegex(out, r"(?m)^  se-1\s+connected\s+\d+\s+\d+")
        self.assertRegex(out, r"(?m)^servers:\n  SERVER\s+se-1\s+SCORE$")
        self.assertRegex(out, r"(?m)^health: (not scored yet|[\d.]+ \((green|yellow|orange|red)\))")

    def test_a_connected_se_cannot_be_deleted(self):
        def connected():
            items = json.loads(self.ok("get", "ses", "-o", "json"))["items"]
            return any(i["name"] == "se-1" and i["state"] == "connected" for i in items)
        wait_until(connected, timeout=15, interval=0.2, message="se-1 connected")
        err = self.fails("delete", "se", "se-1")
        self.assertRegex(err, r"^ballast ctl: 409 ses/se-1 is connected: stop it first")

    def test_get_health_lists_scores(self):
        def scored():
            items = json.loads(self.ok("get", "health", "-o", "json"))["items"]
            return {(h["kind"], h["name"]) for h in items} >= {("vs", "web"), ("se", "se-1")}
        wait_until(scored, timeout=15, interval=0.2, message="scores of web and se-1")
        rows = table(self.ok("get", "health", "vs"))
        self.assertEqual(rows[0], ["KIND", "NAME", "SCORE", "BAND", "PREVIOUS", "REASONS"])
        self.assertIn(["vs", "web"], [r[:2] for r in rows[1:]])
        self.assertEqual({r[0] for r in rows[1:]}, {"vs"})
        one = json.loads(self.ok("get", "health", "vs/web", "-o", "json"))
        self.assertEqual((one["kind"], one["name"]), ("vs", "web"))
        self.assertIn(one["band"], ("green", "yellow", "orange", "red"))
        servers = json.loads(self.ok("get", "health", "server", "-o", "json"))["items"]
        self.assertTrue(servers)
        name = servers[0]["name"]
        self.assertEqual(json.loads(self.ok("get", "health", "server/" + name, "-o", "json"))["name"],
                         name)


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class Https(unittest.TestCase):
    """The API over TLS: the controller's certificate is checked against --ca-file."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="ballast-ctl-tls-")
        cls.cert = os.path.join(cls.tmp.name, "cert.pem")
        key = os.path.join(cls.tmp.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", key, "-out", cls.cert, "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        cls.controller = Controller(extra=["--tls-cert", cls.cert, "--tls-key", key])
        cls.url = f"https://127.0.0.1:{cls.controller.port}"

    @classmethod
    def tearDownClass(cls):
        cls.controller.close()
        cls.tmp.cleanup()

    def ctl(self, *args):
        p = subprocess.run([BALLAST_BIN, "ctl", "--controller", self.url, "--token-file",
                            self.controller.tokens["admin"], *args],
                           capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_trusted_with_ca_file(self):
        rc, out, err = self.ctl("--ca-file", self.cert, "get", "se_groups")
        self.assertEqual(rc, 0, err)
        self.assertIn("default", out)

    def test_untrusted_certificate_is_refused(self):
        rc, out, err = self.ctl("get", "se_groups")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(err, f"ballast ctl: controller {self.url}: TLS certificate not trusted "
                              "(use --ca-file, or --insecure)\n")

    def test_insecure_skips_the_check(self):
        rc, out, err = self.ctl("--insecure", "get", "se_groups")
        self.assertEqual(rc, 0, err)
        self.assertIn("default", out)


class Environment(CtlTestCase):
    def test_controller_and_token_from_the_environment(self):
        env = {"BALLAST_CONTROLLER": self.controller.url,
               "BALLAST_TOKEN_FILE": self.controller.tokens["readonly"]}
        out = self.ok("get", "se_groups", controller=False, token=None, env=env)
        self.assertIn("default", out)

    def test_flags_win_over_the_environment(self):
        env = {"BALLAST_CONTROLLER": f"http://127.0.0.1:{free_port()}",
               "BALLAST_TOKEN_FILE": self.bad_token}
        out = self.ok("get", "se_groups", env=env)
        self.assertIn("default", out)

    def test_token_from_the_environment_is_used(self):
        env = {"BALLAST_TOKEN_FILE": self.bad_token}
        err = self.fails("get", "vs", token=None, env=env)
        self.assertEqual(err, "ballast ctl: 401 unauthorized\n")


class Errors(CtlTestCase):
    def test_unreachable_controller(self):
        port = free_port()
        err = self.fails("--controller", f"http://127.0.0.1:{port}", "get", "vs", controller=False)
        self.assertEqual(err, f"ballast ctl: controller http://127.0.0.1:{port} unreachable: "
                              "Connection refused\n")

    def test_bad_token(self):
        err = self.fails("get", "vs", token=self.bad_token)
        self.assertEqual(err, "ballast ctl: 401 unauthorized\n")

    def test_no_token(self):
        err = self.fails("get", "vs", token=None)
        self.assertTrue(err.startswith("ballast ctl: 401 unauthorized"), err)
        self.assertEqual(len(err.splitlines()), 1)

    def test_token_file_missing(self):
        err = self.fails("get", "vs", token=os.path.join(self.tmp.name, "absent.token"))
        self.assertIn("No such file or directory", err)

    def test_readonly_token_reads_but_cannot_write(self):
        self.ok("get", "vs", token="readonly")
        err = self.fails("apply", "-f", self.document, token="readonly")
        self.assertEqual(err, "ballast ctl: 403 forbidden: read-only token\n")
        err = self.fails("delete", "vs", "web", token="readonly")
        self.assertEqual(err, "ballast ctl: 403 forbidden: read-only token\n")

    def test_se_token_is_refused(self):
        err = self.fails("get", "vs", token="se")
        self.assertTrue(err.startswith("ballast ctl: 403 forbidden"), err)

    def test_validation_errors_name_the_path(self):
        err = self.fails("apply", "-f", self.invalid)
        lines = err.splitlines()
        self.assertTrue(all(line.startswith("ballast ctl: 422 ") for line in lines), err)
        # One line per problem, each named once, with its line in the file.
        self.assertEqual(err.count("pools[0].servers[1].address"), 1, err)
        self.assertIn("line 5: pools[0].servers[1].address: ", err)
        # Nothing was applied.
        err = self.fails("apply", "-f", self.invalid, "--dry-run")
        self.assertIn("pools[0].servers[1].address", err)

    def test_apply_file_missing(self):
        err = self.fails("apply", "-f", os.path.join(self.tmp.name, "absent.yaml"))
        self.assertIn("No such file or directory", err)

    def test_usage_errors_exit_2(self):
        cases = [
            (("get", "things"), "unknown kind 'things'"),
            (("get",), "kind is required"),
            (("frobnicate",), "unknown command 'frobnicate'"),
            ((), "subcommand is required"),
            (("get", "vs", "-o", "xml"), "xml"),
            (("apply",), "--filename is required"),
            (("delete", "placements", "web"), "unknown kind 'placements'"),
            (("delete", "vs"), "name is required"),
            (("status", "pool", "web"), "status takes vs NAME"),
            (("get", "vs", "--bogus"), "--bogus"),
            (("get", "vs", "--type", "se_lost"), "are for get events"),
        ]
        for args, mention in cases:
            with self.subTest(args=args):
                err = self.fails(*args, code=2)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn(mention, err)

    def test_no_controller_is_a_usage_error(self):
        err = self.fails("get", "vs", controller=False, code=2)
        self.assertEqual(err, "ballast ctl: no controller: use --controller URL or set "
                              "BALLAST_CONTROLLER\n")

    def test_bad_url_is_a_usage_error(self):
        err = self.fails("--controller", "ftp://127.0.0.1:1", "get", "vs", controller=False, code=2)
        self.assertIn("invalid controller URL", err)

    def test_help(self):
        rc, out, err = self.ctl("--help", controller=False, token=None)
        self.assertEqual(rc, 0, err)
        for command in ("get", "apply", "delete", "status"):
            self.assertRegex(out, rf"(?m)^\s+{command}\b")


if __name__ == "__main__":
    unittest.main()
