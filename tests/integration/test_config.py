"""Configuration checking through the command line: `ballast se --check-config FILE` and
`ballast se --config FILE` with invalid files. Errors are `FILE:LINE: key.path: message`, all of
them, in file order (docs/configuration.md, "Error messages")."""
import os
import subprocess
import tempfile
import time
import unittest

from harness import BALLAST_BIN, connect_refused, free_port, run_ballast

QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                          "quickstart.yaml")

MANY_ERRORS = """se:
  workers: 2
  colour: red
virtual_services:
  - name: web
    listen: 127.0.0.1:{listen}
    protocol: https
    pool: nope
    timeouts:
      idle: 30
pools:
  - name: p
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1
"""
MANY_ERRORS_EXPECTED = [  # (line, key path, message prefix)
    (3, "se.colour", "unknown key (expected one of: "),
    (7, "virtual_services[0].protocol", "https is not supported yet"),
    (8, "virtual_services[0].pool", 'no pool named "nope"'),
    (10, "virtual_services[0].timeouts.idle", "expected a duration with a unit, e.g. 300ms, 2s, 5m"),
    (15, "pools[0].servers[1].address", "expected host:port"),
]

VALID_TCP = """se:
  workers: 1
virtual_services:
  - name: db
    listen: 127.0.0.1:5432
    protocol: tcp
    pool: p
{vs_extra}pools:
  - name: p
{pool_extra}    servers:
      - address: 127.0.0.1:9001
"""

# One error each: (name, file text, line, key path or None, exact message or prefix + "...").
SINGLE_ERRORS = [
    ("empty", "", None, None, "the configuration is empty"),
    ("duplicate key", "se:\n  workers: 2\n  workers: 3\n", 3, "se.workers",
     "duplicate key (first on line 2)"),
    ("workers out of range", "se:\n  workers: 0\n", 2, "se.workers",
     "expected an integer from 1 to 256"),
    ("negative workers", "se:\n  workers: -1\n", 2, "se.workers",
     "expected an integer from 1 to 256"),
    ("bad boolean", VALID_TCP.format(vs_extra="", pool_extra="").replace(
        "      - address: 127.0.0.1:9001", "      - address: 127.0.0.1:9001\n        enabled: yes"),
     12, "pools[0].servers[0].enabled", "expected true or false"),
    ("bad port", VALID_TCP.format(vs_extra="", pool_extra="").replace("127.0.0.1:5432",
                                                                     "127.0.0.1:70000"),
     5, "virtual_services[0].listen", "port must be 1-65535"),
    ("host name in listen", VALID_TCP.format(vs_extra="", pool_extra="").replace(
        "127.0.0.1:5432", "localhost:5432"),
     5, "virtual_services[0].listen", "expected an IP address, e.g. 0.0.0.0:8080"),
    ("sub-millisecond duration", VALID_TCP.format(vs_extra="    timeouts: {connect: 0.5ms}\n",
                                                  pool_extra=""),
     8, "virtual_services[0].timeouts.connect", "durations have millisecond resolution"),
    ("http key on tcp", VALID_TCP.format(vs_extra="    max_headers: 10\n", pool_extra=""),
     8, "virtual_services[0].max_headers", "only for protocol http"),
    ("redis settings with the memory store", "store:\n  redis: {}\n", 2, "store.redis",
     "only for type redis"),
    ("unknown algorithm", VALID_TCP.format(vs_extra="", pool_extra="    lb_algorithm: fastest\n"),
     10, "pools[0].lb_algorithm",
     "expected one of: round_robin, least_connections, least_response_time, consistent_hash, "
     "random_two_choices"),
    ("tcp service hashing on a header", VALID_TCP.format(
        vs_extra="", pool_extra="    lb_algorithm: consistent_hash\n    hash_key: {type: header, name: X-User}\n"),
     7, "virtual_services[0].pool", "..."),
    ("missing listen", "virtual_services:\n  - name: a\n    protocol: tcp\n    pool: p\n"
     "pools:\n  - name: p\n    servers:\n      - address: 127.0.0.1:9001\n",
     2, "virtual_services[0].listen", "required key is missing"),
    ("bad name", VALID_TCP.format(vs_extra="", pool_extra="").replace("name: db", "name: d b"),
     4, "virtual_services[0].name", "expected a name of 1-64 characters from A-Z a-z 0-9 _ . -"),
    ("listen used twice", VALID_TCP.format(
        vs_extra="  - name: db2\n    listen: 127.0.0.1:5432\n    protocol: tcp\n    pool: p\n",
        pool_extra=""),
     9, "virtual_services[1].listen", '127.0.0.1:5432 is already used by virtual service "db"'),
    ("same server twice", VALID_TCP.format(vs_extra="", pool_extra="") +
     "      - address: 127.0.0.1:9001\n",
     12, "pools[0].servers[1].address", "duplicate address 127.0.0.1:9001 (same as servers[0])"),
    ("YAML syntax", "se:\n  workers: [1, 2\n", None, None, "YAML syntax error: ..."),
    ("several documents", "se:\n  workers: 1\n---\nse:\n  workers: 2\n", None, None,
     "expected a single YAML document"),
]


class ConfigFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="ballast-config-")
        self.addCleanup(self.dir.cleanup)

    def write(self, text, name="ballast.yaml"):
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def error_lines(self, stderr):
        return [line for line in stderr.splitlines() if line.strip()]

    def assertErrors(self, path, stderr, expected):
        """expected: [(line, key path, message prefix)] in this order, and nothing else."""
        lines = self.error_lines(stderr)
        self.assertEqual(len(lines), len(expected), stderr)
        for got, (line, key, message) in zip(lines, expected):
            want = f"{path}:{line}: {key}: {message}"
            self.assertTrue(got.startswith(want), f"\n got: {got}\nwant: {want}")

    def test_quickstart_is_ok(self):
        rc, out, err = run_ballast("se", "--check-config", QUICKSTART)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^.*quickstart\.yaml: ok\b")

    def test_empty_map_is_valid(self):
        rc, out, err = run_ballast("se", "--check-config", self.write("{}\n"))
        self.assertEqual(rc, 0, err)
        self.assertIn("ok", out)

    def test_check_config_reports_every_error_in_file_order(self):
        path = self.write(MANY_ERRORS.format(listen=free_port()))
        rc, out, err = run_ballast("se", "--check-config", path)
        self.assertEqual(rc, 1, out + err)
        self.assertErrors(path, err, MANY_ERRORS_EXPECTED)
        self.assertNotIn(" ok", out)

    def test_config_with_invalid_file_exits_1_and_starts_nothing(self):
        listen, admin = free_port(), free_port()
        text = MANY_ERRORS.format(listen=listen).replace("  workers: 2\n",
                                                         f"  workers: 2\n  admin: 127.0.0.1:{admin}\n")
        path = self.write(text)
        expected = [(line + 1, key, msg) for line, key, msg in MANY_ERRORS_EXPECTED]
        t0 = time.monotonic()
        p = subprocess.Popen([BALLAST_BIN, "se", "--config", path], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail("ballast se --config with an invalid file kept running")
        self.assertEqual(p.returncode, 1, (out + err).decode())
        self.assertLess(time.monotonic() - t0, 5)
        self.assertErrors(path, err.decode(), expected)
        self.assertTrue(connect_refused(admin))
        self.assertTrue(connect_refused(listen))

    def test_check_config_and_config_print_the_same_errors(self):
        path = self.write(MANY_ERRORS.format(listen=free_port()))
        _, _, check_err = run_ballast("se", "--check-config", path)
        rc, _, run_err = run_ballast("se", "--config", path)
        self.assertEqual(rc, 1)
        self.assertEqual(self.error_lines(run_err), self.error_lines(check_err))

    def test_missing_file(self):
        path = os.path.join(self.dir.name, "does-not-exist.yaml")
        for option in ("--check-config", "--config"):
            rc, out, err = run_ballast("se", option, path)
            self.assertEqual(rc, 1, f"{option}: {out}{err}")
            self.assertIn(f"{path}: cannot read: No such file or directory", err, option)

    def test_single_errors(self):
        for name, text, line, key, message in SINGLE_ERRORS:
            with self.subTest(name):
                path = self.write(text, name.replace(" ", "-") + ".yaml")
                rc, out, err = run_ballast("se", "--check-config", path)
                self.assertEqual(rc, 1, f"{name}: rc={rc} out={out!r} err={err!r}")
                lines = self.error_lines(err)
                self.assertEqual(len(lines), 1, err)
                if line is None:
                    prefix = f"{path}"
                    self.assertRegex(lines[0], rf"^{prefix}(:\d+)?: ")
                    got = lines[0].split(": ", 1)[1]
                else:
                    want_prefix = f"{path}:{line}: {key}: "
                    self.assertTrue(lines[0].startswith(want_prefix),
                                    f"\n got: {lines[0]}\nwant: {want_prefix}{message}")
                    got = lines[0][len(want_prefix):]
                if message.endswith("..."):
                    self.assertTrue(got.startswith(message[:-3]), got)
                else:
                    self.assertEqual(got, message)


if __name__ == "__main__":
    unittest.main()
