"""Managed service engines (issue 5; docs/operations.md "Managed service engines"; docs/api.md
"For service engines"): a real `ballast controller`, `ballast se --controller ...` processes and
backends. Configuration applied through the API reaches the engines hitlessly; a lost engine's
virtual service is served by another; engines keep serving without the controller, also across
a restart of their own."""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from ctlr import SE_TOKEN, Controller
from harness import (BALLAST_BIN, BackendProcess, ClientLoad, QuietBallastTestCase,
                     TrackingBackend, admin_post, backend_name, connect_refused, free_port,
                     listening_sockets, process_socket_inodes, status, stop_process, wait_until)


class ManagedSe:
    """`ballast se --controller URL --name NAME` with its own admin port (a small --config file)
    and state directory in `workdir`. stop() and kill() signal only its own pid."""

    def __init__(self, controller, name, workdir, token_file=None):
        self.controller, self.name = controller, name
        self.admin = free_port()
        self.state_dir = os.path.join(workdir, f"state-{name}")
        self.config_path = os.path.join(workdir, f"{name}.yaml")
        with open(self.config_path, "w") as f:
            f.write(f"se:\n  workers: 2\n  admin: 127.0.0.1:{self.admin}\n  drain_timeout: 2s\n")
        self.token_file = token_file or controller.tokens["se"]
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.start()

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BALLAST_BIN, "se", "--controller", self.controller.url, "--token-file",
             self.token_file, "--name", self.name, "--state-dir", self.state_dir,
             "--config", self.config_path],
            stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(self._answers, timeout=10, message=f"{self.name} admin /status")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return status(self.admin)["pid"] == self.proc.pid
        except (OSError, ValueError, AssertionError):
            return False

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def status(self):
        return status(self.admin)

    def serves(self):
        return sorted(v["name"] for v in self.status()["virtual_services"])

    def listens(self, port):
        """Whether this process has a listening socket on 127.0.0.1:port."""
        mine = process_socket_inodes(self.pid)
        return any(i in mine for i in listening_sockets(port))

    def stop(self, sig=signal.SIGTERM, timeout=20):
        rc = stop_process(self.proc, sig, timeout)
        if not self.log.closed:
            self.log.close()
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def close(self):
        self.stop()


def document(vip, servers, min_se=1, drain=(), extra_vs=""):
    """The desired configuration: virtual service web on 127.0.0.1:vip over `servers`
    (BackendProcess), those in `drain` draining; min_se SEs per virtual service."""
    lines = ["se_groups:", "  - name: default", f"    min_se_per_vs: {min_se}",
             "virtual_services:", "  - name: web", f"    listen: 127.0.0.1:{vip}",
             "    protocol: http", "    pool: web-pool"]
    lines += [extra_vs] if extra_vs else []
    lines += ["pools:", "  - name: web-pool", "    servers:"]
    for s in servers:
        lines.append(f"      - {{ address: {s.address}{', drain: true' if s in drain else ''} }}")
    return "\n".join(lines) + "\n"


def answered_by(port, timeout=1.0):
    """The backend that answered a GET through the VIP on a new connection, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return backend_name(body) if r.status == 200 else None


class ManagedTestCase(QuietBallastTestCase):
    controller_args = ()

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-managed-")
        self.addCleanup(self.tmp.cleanup)
        self.ctlr = Controller(extra=self.controller_args)
        self.track(self.ctlr)

    def se(self, name, **kw):
        return self.track(ManagedSe(self.ctlr, name, self.tmp.name, **kw))

    def backends(self, names):
        return [self.track(BackendProcess(n, fast=True)) for n in names]

    def apply(self, text):
        code, body, _ = self.ctlr.api("POST", "/api/v1/apply", text)
        self.assertEqual(code, 200, body)
        return body["revision"]

    def ses(self):
        code, body, _ = self.ctlr.api("GET", "/api/v1/ses")
        self.assertEqual(code, 200, body)
        return {s["name"]: s for s in body["items"]}

    def placement(self, vs="web"):
        code, body, _ = self.ctlr.api("GET", "/api/v1/placements")
        self.assertEqual(code, 200, body)
        for item in body["items"]:
            if item["virtual_service"] == vs:
                return sorted(item["ses"])
        return []

    def events(self, kind):
        code, body, _ = self.ctlr.api("GET", f"/api/v1/events?type={kind}")
        self.assertEqual(code, 200, body)
        return body["items"]

    def wait_registered(self, *names):
        wait_until(lambda: all(self.ses().get(n, {}).get("state") == "connected" for n in names),
                   timeout=10, message=f"{names} registered")

    def wait_traffic(self, port, timeout=10.0):
        """Seconds until a request through the VIP is answered by a backend."""
        start = time.monotonic()
        wait_until(lambda: answered_by(port), timeout=timeout, interval=0.05,
                   message=f"traffic through 127.0.0.1:{port}")
        return time.monotonic() - start


class ApplyChangeDelete(ManagedTestCase):
    def test_applied_served_by_both_changed_under_load_deleted(self):
        a, b, c = self.backends("a b c".split())
        se1, se2 = self.se("se-1"), self.se("se-2")
        self.wait_registered("se-1", "se-2")
        vip = free_port()

        # Placed on both engines: both listen on the VIP (SO_REUSEPORT) and serve it.
        revision = self.apply(document(vip, [a, b], min_se=2))
        took = self.wait_traffic(vip)
        print(f"\n  apply -> traffic through the VIP: {took:.2f} s")
        self.assertLess(took, 5)
        wait_until(lambda: se1.listens(vip) and se2.listens(vip), timeout=5,
                   message="both engines listening on the VIP")
        self.assertEqual(self.placement(), ["se-1", "se-2"])
        for se in (se1, se2):
            self.assertEqual(se.serves(), ["web"])
        # Both acknowledge the revision they run, through their reports.
        wait_until(lambda: all(s["acked_version"] == s["config_version"] and s["acked_version"] > 0
                               for s in self.ses().values()),
                   timeout=5, message="acknowledged revisions")
        self.assertGreater(revision, 0)
        with open(os.path.join(se1.state_dir, "config.json")) as f:
            kept = json.load(f)
        self.assertEqual([v["name"] for v in kept["config"]["virtual_services"]], ["web"])

        # Add c, drain a, under load: not one request fails.
        load = ClientLoad(vip, threads=4)
        self.addCleanup(load.stop)
        wait_until(lambda: load.served_by("a") > 20 and load.served_by("b") > 20, timeout=10,
                   message="load on a and b")
        self.apply(document(vip, [a, b, c], min_se=2, drain=[a]))
        changed = time.monotonic()
        wait_until(lambda: load.served_by("c", since=changed) > 20, timeout=10,
                   message="c in use")
        # Once both engines run the new revision, a gets no more requests.
        wait_until(lambda: all(len(se.status()["pools"][0]["servers"]) == 3 for se in (se1, se2)),
                   timeout=5, message="both engines run 3 servers")
        settled = time.monotonic()
        wait_until(lambda: load.served_by("b", since=settled) > 20, timeout=10, message="b after")
        # The reports carry the counters since the previous report and each server's state as
        # the engine sees it.
        def reported_requests(name):
            code, se, _ = self.ctlr.api("GET", f"/api/v1/ses/{name}")
            report = se["last_report"]
            self.assertIsNone(report["apply_error"])
            self.assertGreater(report["interval_s"], 0)
            self.assertEqual(report["status"]["virtual_services"][0]["name"], "web")
            return report["counters"]["virtual_services"]["web"]["requests"]
        wait_until(lambda: reported_requests("se-1") > 0 or reported_requests("se-2") > 0,
                   timeout=5, message="requests in the reports")

        def health_of(server):
            code, body, _ = self.ctlr.api("GET", "/api/v1/virtual_services/web/status")
            return next(s["health"] for s in body["servers"] if s["address"] == server.address)
        wait_until(lambda: health_of(a) == {"se-1": "draining", "se-2": "draining"}, timeout=5,
                   message="a draining on both engines, as reported")
        results = load.stop()
        self.assertEqual([r for r in results if r[1] != 200], [], "failed requests during the change")
        self.assertEqual(load.served_by("a", since=settled + 0.5), 0)
        print(f"  pool change under load: {len(results)} requests, 0 failed")

        # Delete the virtual service: its listeners close on both engines.
        code, body, _ = self.ctlr.api("DELETE", "/api/v1/virtual_services/web")
        self.assertEqual(code, 204, body)
        wait_until(lambda: not se1.listens(vip) and not se2.listens(vip), timeout=5,
                   message="listeners closed")
        wait_until(lambda: connect_refused(vip), timeout=5, message="VIP refused")
        self.assertEqual(se1.serves(), [])
        self.assertEqual(se2.serves(), [])
        self.assertEqual(se1.stop(), 0)


class Failover(ManagedTestCase):
    def test_killed_engine_is_replaced_by_the_other(self):
        a, b = self.backends("a b".split())
        engines = {"se-1": self.se("se-1"), "se-2": self.se("se-2")}
        self.wait_registered("se-1", "se-2")
        vip = free_port()
        self.apply(document(vip, [a, b], min_se=1))
        self.wait_traffic(vip)
        placed = self.placement()
        self.assertEqual(len(placed), 1, placed)
        victim = engines[placed[0]]
        survivor = engines[next(n for n in engines if n != placed[0])]
        self.assertEqual(survivor.serves(), [])
        self.assertFalse(survivor.listens(vip))

        killed = time.monotonic()
        victim.kill()
        wait_until(lambda: answered_by(vip, timeout=0.5), timeout=15, interval=0.02,
                   message="traffic after the kill")
        took = time.monotonic() - killed
        print(f"\n  SIGKILL of {victim.name} -> traffic through {survivor.name}: {took:.2f} s "
              f"(controller defaults: --se-lost-after 3s)")
        self.assertLess(took, 5.0)
        self.assertTrue(survivor.listens(vip))
        self.assertEqual(self.placement(), [survivor.name])
        self.assertEqual(self.ses()[victim.name]["state"], "lost")
        self.assertTrue(any(e["object"].endswith(victim.name) for e in self.events("se_lost")))

        # Back: it gets only what is placed on it now (nothing).
        victim.start()
        self.wait_registered(victim.name)
        time.sleep(1.5)
        self.assertEqual(victim.serves(), [])
        self.assertEqual(self.placement(), [survivor.name])


class PollsNotHeld(ManagedTestCase):
    """A controller with --http-threads 16 holds at most 8 config long polls; an engine whose poll
    is answered at once asks again a second later: it still gets its configuration, and does not
    spin."""
    controller_args = ("--http-threads", "16")

    def hold_every_long_poll(self):
        stop = threading.Event()

        def holder(name):
            code, body, _ = self.ctlr.api("POST", "/api/v1/se/register", {"name": name},
                                          token=SE_TOKEN)
            self.assertEqual(code, 200, body)
            known = 0
            while not stop.is_set():
                try:
                    code, body, _ = self.ctlr.api(
                        "GET", f"/api/v1/se/{name}/config?known={known}&wait=20", token=SE_TOKEN,
                        timeout=30)
                except OSError:  # the controller stopped
                    return
                if code == 200:
                    known = body["revision"]
                elif code != 304:
                    return
        threads = [threading.Thread(target=holder, args=(f"holder-{i}",), daemon=True)
                   for i in range(8)]
        for t in threads:
            t.start()
        self.addCleanup(stop.set)
        # The holders never report: once they are lost, placement leaves them out.
        wait_until(lambda: all(self.ses().get(f"holder-{i}", {}).get("state") == "lost"
                               for i in range(8)), timeout=10, message="holders lost")

    def test_engine_polls_each_second_when_its_poll_is_not_held(self):
        self.hold_every_long_poll()
        a, b = self.backends("a b".split())
        engine = self.se("se-1")
        self.wait_registered("se-1")
        vip = free_port()
        self.apply(document(vip, [a, b], min_se=1))
        wait_until(lambda: engine.serves() == ["web"], timeout=5, interval=0.1,
                   message="se-1 serves web (its polls are answered at once)")
        # Not spinning on answers that come at once: a poll a second costs next to nothing.
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            with open(f"/proc/{engine.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks
        before = cpu()
        time.sleep(3)
        self.assertLess(cpu() - before, 0.15)  # spinning measured 0.45 s here


class WithoutController(ManagedTestCase):
    def test_engines_serve_without_the_controller_and_reconnect(self):
        a, b = self.backends("a b".split())
        se1, se2 = self.se("se-1"), self.se("se-2")
        self.wait_registered("se-1", "se-2")
        vip = free_port()
        self.apply(document(vip, [a, b], min_se=2))
        self.wait_traffic(vip)
        wait_until(lambda: se1.listens(vip) and se2.listens(vip), timeout=5, message="both serve")

        # Controller down: traffic goes on, well past the time it takes to declare SEs lost.
        load = ClientLoad(vip, threads=2, pause=0.01)
        self.addCleanup(load.stop)
        self.ctlr.stop()
        time.sleep(4)
        self.assertEqual(load.failures(), [])
        self.assertGreater(load.total(), 50)

        # An engine restarted while the controller is down serves its last configuration: stop
        # se-2 for good, restart se-1; only se-1 can answer.
        load.stop()
        se2.stop()
        se1.stop()
        self.assertTrue(connect_refused(vip))
        restarted = time.monotonic()
        se1.start()
        self.wait_traffic(vip, timeout=5)
        print(f"\n  SE restarted without the controller: traffic after "
              f"{time.monotonic() - restarted:.2f} s (kept configuration)")
        self.assertEqual(se1.serves(), ["web"])
        self.assertIn("unreachable", se1.output())
        se2.start()
        wait_until(lambda: se2.listens(vip), timeout=5, message="se-2 serves again")

        # Controller back (same SQLite data): both engines reconnect and report, nothing moved.
        self.ctlr.start()
        wait_until(lambda: all(s["state"] == "connected" and s["last_seen_age_s"] < 2
                               for s in self.ses().values()) and len(self.ses()) == 2,
                   timeout=10, message="both engines reporting again")
        self.assertEqual(self.placement(), ["se-1", "se-2"])
        self.assertEqual(answered_by(vip) in ("a", "b"), True)
        self.assertEqual(se1.serves(), ["web"])


class ApplyFailures(ManagedTestCase):
    def test_a_document_that_cannot_be_applied_keeps_the_previous_one(self):
        a, = self.backends(["a"])
        se1 = self.se("se-1")
        self.wait_registered("se-1")
        vip = free_port()
        self.apply(document(vip, [a]))
        self.wait_traffic(vip)
        wait_until(lambda: self.ses()["se-1"]["acked_version"] == self.ses()["se-1"]["config_version"],
                   timeout=5, message="first revision acknowledged")
        acked = self.ses()["se-1"]["acked_version"]

        # A port held by another program (without SO_REUSEPORT) cannot be shared.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        extra = ("  - name: blocked\n    listen: 127.0.0.1:%d\n    protocol: http\n"
                 "    pool: web-pool" % port)
        self.apply(document(vip, [a], extra_vs=extra))
        failed = wait_until(lambda: self.events("config_failed"), timeout=5,
                            message="config_failed event")
        self.assertIn(str(port), failed[-1]["message"])
        self.assertEqual(self.ses()["se-1"]["acked_version"], acked)
        self.assertEqual(se1.serves(), ["web"])
        self.assertIsNotNone(answered_by(vip))
        self.assertIn("refused", se1.output())

        # A reload (POST /reload, as SIGHUP) rebuilds from the engine's own file and the revision
        # it runs.
        code, _, body = admin_post(se1.admin, "/reload")
        self.assertEqual(code, 200, body)
        self.assertTrue(json.loads(body)["ok"])
        self.assertEqual(se1.serves(), ["web"])
        self.assertIsNotNone(answered_by(vip))

    def test_a_refused_token_is_one_clear_line_without_the_token(self):
        bad = os.path.join(self.tmp.name, "bad.token")
        with open(bad, "w") as f:
            f.write("not-the-se-token-0123456789\n")
        se = self.se("se-bad", token_file=bad)
        wait_until(lambda: "refused this engine's token" in se.output(), timeout=5,
                   message="the token error")
        time.sleep(1)
        out = se.output()
        self.assertNotIn("not-the-se-token", out)
        self.assertNotIn(SE_TOKEN, out)
        self.assertLessEqual(out.count("refused this engine's token"), 3, out)  # not per retry
        self.assertNotIn("se-bad", self.ses())
        self.assertEqual(se.stop(), 0)


class ReportCollector:
    """Polls GET /api/v1/ses/NAME every 50 ms in a thread and keeps every distinct last_report
    (reports are differences since the previous one: adding them up needs all of them)."""

    def __init__(self, ctlr, name):
        self.ctlr, self.name = ctlr, name
        self.reports, self._seen = [], set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                code, se, _ = self.ctlr.api("GET", f"/api/v1/ses/{self.name}", timeout=2)
            except OSError:
                continue
            report = se.get("last_report") if code == 200 and isinstance(se, dict) else None
            if not report or "counters" not in report:
                continue
            key = json.dumps([report["status"].get("uptime_seconds"), report["interval_s"]])
            with self.lock:
                if key not in self._seen:
                    self._seen.add(key)
                    self.reports.append(report)

    def all(self):
        with self.lock:
            return list(self.reports)

    def close(self):
        self._stop.set()
        self.thread.join(5)


def check_sparse(case, histogram, where):
    """A phase histogram in the report's sparse form; its buckets as {index: count}."""
    case.assertEqual(sorted(histogram), ["buckets", "count", "sum_us"], where)
    indexes = [i for i, _ in histogram["buckets"]]
    case.assertEqual(indexes, sorted(set(indexes)), f"{where}: indexes ascending, once each")
    case.assertTrue(all(0 <= i <= 80 and n > 0 for i, n in histogram["buckets"]), where)
    case.assertEqual(histogram["count"], sum(n for _, n in histogram["buckets"]), where)
    return dict((i, n) for i, n in histogram["buckets"])


class PhasesAndResources(ManagedTestCase):
    def test_reports_carry_phase_histograms_and_resources(self):
        delay = 0.15
        slow = self.track(TrackingBackend("slow", hold=lambda method, path: delay))
        se1 = self.se("se-1")
        self.wait_registered("se-1")
        reports = self.track(ReportCollector(self.ctlr, "se-1"))
        vip = free_port()
        self.apply(document(vip, [slow]))
        self.wait_traffic(vip)  # one request answered
        sent = 1
        # Some requests on one kept-alive connection, some on new ones.
        kept = http.client.HTTPConnection("127.0.0.1", vip, timeout=5)
        self.addCleanup(kept.close)
        for _ in range(5):
            kept.request("GET", "/kept")
            self.assertEqual(kept.getresponse().read(), b"slow GET /kept")
            sent += 1
        for _ in range(3):
            self.assertEqual(answered_by(vip), "slow")
            sent += 1

        # The reports, added up, hold every request once in each phase of a complete exchange.
        vs_key, server_key = "web", f"web-pool/{slow.address}"

        def added(section, key, phase):
            out = {"buckets": {}, "count": 0, "sum_us": 0}
            for r in reports.all():
                h = r["counters"][section].get(key, {}).get("phases", {}).get(phase)
                if h is None:
                    continue
                for i, n in check_sparse(self, h, f"{key} {phase}").items():
                    out["buckets"][i] = out["buckets"].get(i, 0) + n
                out["count"] += h["count"]
                out["sum_us"] += h["sum_us"]
            return out
        wait_until(lambda: all(added("virtual_services", vs_key, p)["count"] == sent
                               for p in ("header", "response", "transfer", "total")),
                   timeout=10, message=f"{sent} requests in every phase of the reports")
        # The connection stays open: the next report counts it.
        wait_until(lambda: reports.all()[-1]["resources"]["connections_active"] >= 1, timeout=5,
                   message="the kept connection in resources.connections_active")
        all_reports = reports.all()
        self.assertGreaterEqual(len(all_reports), 2, "several reports")
        last = all_reports[-1]
        bounds = last["counters"]["phase_bounds_us"]
        self.assertEqual(len(bounds), 80)
        self.assertEqual(bounds[:5], [100, 119, 141, 168, 200])
        self.assertEqual(bounds, [round(100 * 2 ** (i / 4)) for i in range(80)])

        def at_least(histogram, us):
            """No observation in a bucket that holds only durations below `us` (bucket i holds
            bounds[i-1] < d <= bounds[i]; 80 is the overflow)."""
            return all(i == 80 or bounds[i] >= us for i in histogram["buckets"])
        response = added("virtual_services", vs_key, "response")
        total = added("virtual_services", vs_key, "total")
        self.assertTrue(at_least(response, delay * 1e6), response)
        self.assertGreaterEqual(response["sum_us"], sent * delay * 1e6)
        self.assertGreaterEqual(total["sum_us"], response["sum_us"])
        self.assertGreaterEqual(min(total["buckets"]), min(response["buckets"]))
        self.assertGreaterEqual(max(total["buckets"]), max(response["buckets"]))
        # Opening a connection on loopback takes far less than the answer.
        connect = added("virtual_services", vs_key, "connect")
        self.assertGreaterEqual(connect["count"], 1)
        self.assertLess(max(connect["buckets"]), min(response["buckets"]))
        server_response = added("servers", server_key, "response")
        self.assertEqual(server_response["count"], sent)
        self.assertTrue(at_least(server_response, delay * 1e6), server_response)
        self.assertEqual(added("servers", server_key, "connect")["count"], connect["count"])
        self.assertEqual(last["counters"]["virtual_services"][vs_key]["max_connections"], 0)
        self.assertEqual(last["counters"]["servers"][server_key]["max_connections"], 0)
        print(f"\n  {sent} requests, {len(all_reports)} reports: response buckets "
              f"{sorted(response['buckets'].items())}, total {sorted(total['buckets'].items())}")

        res = last["resources"]
        self.assertEqual(sorted(res), ["connections_active", "cpu_cores", "cpu_percent",
                                       "max_open_files", "memory_rss_bytes", "memory_total_bytes",
                                       "open_files"])
        self.assertTrue(0 <= res["cpu_percent"] <= 100, res)
        self.assertEqual(res["cpu_cores"], os.cpu_count())
        self.assertGreater(res["memory_rss_bytes"], 1 << 20)
        self.assertGreater(res["memory_total_bytes"], res["memory_rss_bytes"])
        self.assertGreater(res["open_files"], 3)
        self.assertTrue(res["max_open_files"] == 0 or res["max_open_files"] > res["open_files"], res)
        # Sockets come and go (the controller's connections): about what /proc shows now.
        self.assertLess(abs(res["open_files"] - len(os.listdir(f"/proc/{se1.pid}/fd"))), 10, res)
        print(f"  resources: {res}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
