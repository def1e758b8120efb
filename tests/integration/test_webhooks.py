"""Webhooks through the API (docs/api.md "Webhooks") and dashboard sessions ("Dashboard"), against
a real controller: strict validation, the secret never shown, deliveries signed and visible, a
target that never answers does not slow the controller; a session cookie reads and never writes."""

import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import unittest

from ctlr import ADMIN_TOKEN, READONLY_TOKEN, SE_TOKEN, Controller
from harness import QuietBallastTestCase, free_port, wait_until
from test_health_scores import SECRET, WebhookReceiver


def hook(name, url, **extra):
    return {"name": name, "url": url, "secret": SECRET, **extra}


class WebhookApi(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        self.ctlr = self.track(Controller())

    def test_validation_names_each_problem(self):
        cases = [
            ({"name": "h", "secret": SECRET}, "url"),
            (hook("h", "ftp://127.0.0.1/x"), "url"),
            (hook("h", "http://127.0.0.1:9/x", secret="short"), "secret"),
            (hook("h", "http://127.0.0.1:9/x", events=["nope"]), "events"),
            (hook("h", "http://127.0.0.1:9/x", events=[""]), "events"),
            (hook("h", "http://127.0.0.1:9/x", colour="red"), "colour"),
            (hook("h", "http://127.0.0.1:9/x", timeout="soon"), "timeout"),
            (hook("h", "http://127.0.0.1:9/x", max_attempts=0), "max_attempts"),
            (hook("bad name!", "http://127.0.0.1:9/x"), "name"),
        ]
        for body, path in cases:
            code, answer, _ = self.ctlr.api("POST", "/api/v1/webhooks", body)
            self.assertEqual(code, 422, (body, answer))
            self.assertTrue(any(e["path"].split("[")[0] == path for e in answer["errors"]), answer)
        code, answer, _ = self.ctlr.api("POST", "/api/v1/webhooks", "{not json",
                                        content_type="application/json")
        self.assertEqual(code, 400, answer)
        code, answer, _ = self.ctlr.api("GET", "/api/v1/webhooks")
        self.assertEqual(answer["items"], [])

    def test_crud_keeps_the_secret_hidden_and_versions(self):
        code, created, headers = self.ctlr.api(
            "POST", "/api/v1/webhooks", hook("h", "http://127.0.0.1:9/x", events=["se_lost"]))
        self.assertEqual(code, 201, created)
        self.assertEqual(created["secret"], "***")
        code, again, _ = self.ctlr.api("POST", "/api/v1/webhooks", hook("h", "http://127.0.0.1:9/y"))
        self.assertEqual(code, 409, again)
        code, got, headers = self.ctlr.api("GET", "/api/v1/webhooks/h")
        self.assertEqual(code, 200, got)
        self.assertEqual(got["secret"], "***")
        self.assertIn("delivery", got)
        self.assertEqual(headers["ETag"], f'"{got["version"]}"')
        # What GET returned goes back with a change: "***" keeps the stored secret.
        got["url"] = "http://127.0.0.1:9/changed"
        code, put, _ = self.ctlr.api("PUT", "/api/v1/webhooks/h", got,
                                     headers={"If-Match": f'"{got["version"]}"'})
        self.assertEqual(code, 200, put)
        self.assertEqual(put["url"], "http://127.0.0.1:9/changed")
        code, stale, _ = self.ctlr.api("PUT", "/api/v1/webhooks/h", got,
                                       headers={"If-Match": f'"{got["version"]}"'})
        self.assertEqual(code, 409, stale)
        code, ro, _ = self.ctlr.api("DELETE", "/api/v1/webhooks/h", token=READONLY_TOKEN)
        self.assertEqual(code, 403, ro)
        code, _, _ = self.ctlr.api("DELETE", "/api/v1/webhooks/h")
        self.assertEqual(code, 204)
        code, gone, _ = self.ctlr.api("GET", "/api/v1/webhooks/h")
        self.assertEqual(code, 404, gone)
        # Webhooks are not part of apply: a document leaves them alone.
        self.ctlr.api("POST", "/api/v1/webhooks", hook("kept", "http://127.0.0.1:9/x"))
        code, applied, _ = self.ctlr.api("POST", "/api/v1/apply", "virtual_services: []\n")
        self.assertEqual(code, 200, applied)
        code, kept, _ = self.ctlr.api("GET", "/api/v1/webhooks/kept")
        self.assertEqual(code, 200, kept)

    def test_delivery_is_signed_and_its_state_visible(self):
        receiver = WebhookReceiver()
        self.addCleanup(receiver.close)
        code, body, _ = self.ctlr.api("POST", "/api/v1/webhooks",
                                      hook("r", receiver.url, objects=["pools/watched"]))
        self.assertEqual(code, 201, body)
        for name in ("ignored", "watched"):
            code, body, _ = self.ctlr.api("POST", "/api/v1/pools",
                                          {"name": name, "servers": [{"address": "127.0.0.1:9"}]})
            self.assertEqual(code, 201, body)
        wait_until(lambda: receiver.events("object_changed"), timeout=10, message="a delivery")
        time.sleep(0.3)
        posts = receiver.events()
        self.assertEqual([e["object"] for _, _, e in posts], ["pools/watched"])
        headers, raw, event = posts[0]
        headers = {k.lower(): v for k, v in headers.items()}
        self.assertEqual(headers["x-ballast-signature"],
                         "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest())
        self.assertEqual(headers["x-ballast-delivery"], str(event["id"]))
        self.assertEqual(headers["content-type"], "application/json")
        code, events, _ = self.ctlr.api("GET", f"/api/v1/events?since_id={event['id'] - 1}&limit=1")
        self.assertEqual(events["items"][0], event)
        code, state, _ = self.ctlr.api("GET", "/api/v1/webhooks/r")
        self.assertEqual(state["delivery"]["delivered"], 1, state)
        self.assertEqual(state["delivery"]["last_status"], 200, state)

    def test_a_target_that_never_answers_does_not_slow_the_controller(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts (the kernel does) and never answers
        self.addCleanup(silent.close)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        code, body, _ = self.ctlr.api("POST", "/api/v1/webhooks",
                                      hook("silent", url, timeout="10s", max_attempts=3))
        self.assertEqual(code, 201, body)
        slowest = 0.0
        for i in range(40):
            start = time.monotonic()
            code, body, _ = self.ctlr.api("POST", "/api/v1/pools", {
                "name": f"p{i}", "servers": [{"address": "127.0.0.1:9"}]})
            slowest = max(slowest, time.monotonic() - start)
            self.assertEqual(code, 201, body)
        self.assertLess(slowest, 1.0, "an API write waited for the webhook")
        code, state, _ = self.ctlr.api("GET", "/api/v1/webhooks/silent")
        self.assertGreaterEqual(state["delivery"]["pending"], 30, state)
        self.assertEqual(state["delivery"]["delivered"], 0, state)
        # And it stops promptly, the delivery still waiting.
        start = time.monotonic()
        self.assertEqual(self.ctlr.stop(), 0)
        self.assertLess(time.monotonic() - start, 5)


class Sessions(QuietBallastTestCase):
    def setUp(self):
        super().setUp()
        self.ctlr = self.track(Controller())

    def raw(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.ctlr.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read(), r
        finally:
            conn.close()

    def login(self, token):
        status, body, r = self.raw("POST", "/api/v1/session", json.dumps({"token": token}),
                                   {"Content-Type": "application/json"})
        return status, r.getheader("Set-Cookie")

    def test_login_reads_with_a_cookie_and_never_writes(self):
        for token in ("wrong-token", SE_TOKEN, ""):
            status, cookie = self.login(token)
            self.assertEqual((status, cookie), (401, None), token)
        status, body, r = self.raw("POST", "/api/v1/session", "nope")
        self.assertEqual(status, 400)
        status, cookie = self.login(ADMIN_TOKEN)
        self.assertEqual(status, 204)
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertIn("Path=/", cookie)
        self.assertNotIn(ADMIN_TOKEN, cookie)
        jar = {"Cookie": cookie.split(";")[0]}
        status, body, _ = self.raw("GET", "/api/v1/virtual_services", headers=jar)
        self.assertEqual(status, 200, body)
        status, body, _ = self.raw("GET", "/api/v1/session", headers=jar)
        self.assertEqual((status, json.loads(body)["role"]), (200, "admin"))
        # A cookie comes with any request the browser makes: it never authorises a write.
        status, body, _ = self.raw("POST", "/api/v1/pools", json.dumps(
            {"name": "p", "servers": [{"address": "127.0.0.1:9"}]}),
                                   {**jar, "Content-Type": "application/json"})
        self.assertEqual(status, 403, body)
        self.assertIn("token", json.loads(body)["error"])
        status, body, _ = self.raw("GET", "/api/v1/se/x/config", headers=jar)
        self.assertEqual(status, 403, body)
        # The pages: the dashboard needs the session, the login page and assets do not.
        status, body, r = self.raw("GET", "/ui/")
        self.assertEqual((status, r.getheader("Location")), (303, "/ui/login.html"))
        status, body, r = self.raw("GET", "/ui/", headers=jar)
        self.assertEqual(status, 200)
        self.assertIn(b"<html", body.lower())
        self.assertIn("default-src 'self'", r.getheader("Content-Security-Policy"))
        self.assertEqual(r.getheader("X-Frame-Options"), "DENY")
        for asset in ("/ui/login.html", "/ui/app.js", "/ui/style.css",
                      "/ui/vendor/uPlot.iife.min.js"):
            status, body, r = self.raw("GET", asset)
            self.assertEqual(status, 200, asset)
            self.assertGreater(len(body), 100, asset)
        status, _, r = self.raw("GET", "/ui")
        self.assertEqual((status, r.getheader("Location")), (301, "/ui/"))
        status, _, _ = self.raw("GET", "/ui/nope.js")
        self.assertEqual(status, 404)
        status, _, _ = self.raw("GET", "/ui/../api/v1/ses")
        self.assertIn(status, (400, 404))
        status, _, _ = self.raw("POST", "/ui/", "x")
        self.assertEqual(status, 405)
        # Logout ends the session.
        status, _, r = self.raw("DELETE", "/api/v1/session", headers=jar)
        self.assertEqual(status, 204)
        self.assertIn("Max-Age=0", r.getheader("Set-Cookie"))
        status, body, _ = self.raw("GET", "/api/v1/virtual_services", headers=jar)
        self.assertEqual(status, 401, body)
        status, body, r = self.raw("GET", "/ui/", headers=jar)
        self.assertEqual(status, 303)

    def test_a_readonly_session_reads(self):
        status, cookie = self.login(READONLY_TOKEN)
        self.assertEqual(status, 204)
        jar = {"Cookie": "other=1; " + cookie.split(";")[0] + "; more=2"}
        status, body, _ = self.raw("GET", "/api/v1/session", headers=jar)
        self.assertEqual(json.loads(body)["role"], "readonly")
        status, body, _ = self.raw("GET", "/api/v1/health", headers=jar)
        self.assertEqual(status, 200, body)
        status, body, _ = self.raw("GET", "/api/v1/virtual_services",
                                   headers={"Cookie": "ballast_session=" + "0" * 64})
        self.assertEqual(status, 401, body)


if __name__ == "__main__":
    unittest.main()
