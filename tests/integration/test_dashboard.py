"""The controller's dashboard (/ui/, docs/dashboard.md) in a real browser: headless Chromium
(Debian's /usr/bin/chromium) driven by Playwright (playwright-core from ui/node_modules), both
installed by scripts/deps.

This test starts a real controller, a managed service engine, three backends as processes and
steady load through the virtual service, then runs tests/browser/dashboard.mjs, which logs in
(a wrong token first), sees the virtual service with its score, opens its page, kills one backend
by pid and waits for that server's state, score and band to change without a reload, then finds
the events on the events page. Screenshots of each page are kept in
<build dir>/test-artifacts/dashboard/ (next to the ballast binary)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from ctlr import READONLY_TOKEN, Controller
from harness import (BALLAST_BIN, BackendProcess, ClientLoad, QuietBallastTestCase, free_port,
                     run_ballast, wait_until)
from test_managed_se import ManagedSe, answered_by

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCRIPT = os.path.join(REPO, "tests", "browser", "dashboard.mjs")
CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT = os.path.join(REPO, "ui", "node_modules", "playwright-core")
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(BALLAST_BIN)), "test-artifacts", "dashboard")
SCREENSHOTS = ["1-login-invalid-token", "2-overview", "3-virtual-service",
               "4-virtual-service-after-kill", "5-events", "6-events-server-down"]


def document(vip, servers):
    """Virtual service web on 127.0.0.1:vip over `servers` (BackendProcess), actively checked
    every 500 ms so that a killed backend is down within about a second."""
    lines = ["virtual_services:", "  - name: web", f"    listen: 127.0.0.1:{vip}",
             "    protocol: http", "    pool: web-pool",
             "pools:", "  - name: web-pool", "    health_monitors: [http-ok]", "    servers:"]
    lines += [f"      - {{ address: {s.address} }}" for s in servers]
    lines += ["health_monitors:", "  - name: http-ok", "    type: http", "    interval: 500ms",
              "    timeout: 400ms", "    rise: 2", "    fall: 2", '    request: "GET /health"']
    return "\n".join(lines) + "\n"


def controller_options():
    """Faster health scores when this controller has the option (default interval 5 s)."""
    _, out, err = run_ballast("controller", "--help")
    return ["--health-interval", "1s"] if "--health-interval" in out + err else []


class Dashboard(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        missing = [what for what, ok in (
            ("node (Node.js) on PATH", shutil.which("node")),
            (f"Chromium at {CHROMIUM}", os.access(CHROMIUM, os.X_OK)),
            (f"playwright-core in {PLAYWRIGHT}", os.path.isdir(PLAYWRIGHT)),
        ) if not ok]
        if missing:
            self.fail(f"missing: {', '.join(missing)}; run scripts/deps (installs chromium and "
                      "nodejs, and runs npm ci in ui/)")
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-dashboard-")
        self.addCleanup(self.tmp.cleanup)
        self.ctlr = self.track(Controller(extra=controller_options()))

    def api(self, path):
        code, body, _ = self.ctlr.api("GET", path, token=READONLY_TOKEN)
        return body if code == 200 else None

    def test_dashboard_in_a_browser(self):
        backends = [self.track(BackendProcess(n, fast=True)) for n in ("a", "b", "c")]
        victim = backends[1]
        self.track(ManagedSe(self.ctlr, "se-1", self.tmp.name))
        def registered():
            ses = (self.api("/api/v1/ses") or {}).get("items", [])
            return any(s["name"] == "se-1" and s["state"] == "connected" for s in ses)
        wait_until(registered, timeout=10, message="se-1 registered")
        vip = free_port()
        code, body, _ = self.ctlr.api("POST", "/api/v1/apply", document(vip, backends))
        self.assertEqual(code, 200, body)
        wait_until(lambda: answered_by(vip), timeout=10, interval=0.05, message="traffic through the VIP")
        load = ClientLoad(vip, threads=2, pause=0.01)
        self.addCleanup(load.stop)

        # Before the browser: the controller scores everything and has some traffic to chart.
        def scored():
            vs = self.api("/api/v1/health/vs/web")
            servers = {s["name"]: s for s in (self.api("/api/v1/health/server") or {}).get("items", [])}
            mine = [servers.get(f"web-pool/{b.address}") for b in backends]
            return vs and vs.get("band") and all(s and s.get("band") == "green" for s in mine)
        wait_until(scored, timeout=30, interval=0.5, message="health scores of web and its servers")

        def charted():
            a = self.api("/api/v1/analytics/vs/web?metric=requests_per_s&from=-300&step=10")
            return a and any(v for v in a["series"]["requests_per_s"] if v)
        wait_until(charted, timeout=30, interval=0.5, message="analytics of web")

        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        os.makedirs(ARTIFACTS)
        env = dict(os.environ, DASHBOARD_URL=self.ctlr.url, DASHBOARD_TOKEN=READONLY_TOKEN,
                   VS_NAME="web", VICTIM_PID=str(victim.pid), VICTIM_ADDRESS=victim.address,
                   SCREENSHOT_DIR=ARTIFACTS, CHROMIUM=CHROMIUM, CHANGE_TIMEOUT_S="30")
        started = time.monotonic()
        try:
            p = subprocess.run(["node", SCRIPT], env=env, cwd=REPO, capture_output=True,
                               timeout=240)
            out, rc = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
            rc = "timeout (240 s)"
        print(f"\n--- tests/browser/dashboard.mjs ({time.monotonic() - started:.1f} s, exit {rc})\n"
              f"{out.rstrip()}\n--- screenshots in {ARTIFACTS}", file=sys.stderr)
        if rc != 0:
            self.fail(f"the browser test failed (exit {rc}); controller log:\n"
                      f"{self.ctlr.output()[-3000:]}")

        # What the browser saw is what the API says.
        self.assertFalse(victim.running(), "the browser test did not kill the victim")
        status = self.api("/api/v1/virtual_services/web/status")
        states = next(s["health"] for s in status["servers"] if s["address"] == victim.address)
        self.assertNotIn("up", states.values(), states)
        score = self.api(f"/api/v1/health/server/web-pool/{victim.address}")
        self.assertNotEqual(score["band"], "green", score)
        for name in SCREENSHOTS:
            path = os.path.join(ARTIFACTS, f"{name}.png")
            self.assertTrue(os.path.isfile(path) and os.path.getsize(path) > 1000, path)
        load.stop()


if __name__ == "__main__":
    unittest.main()
