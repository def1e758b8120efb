"""Harness for the control plane: a real `ballast controller` process with its token files and
SQLite data directory in a temporary directory, on an ephemeral port; JSON API calls."""

import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from harness import BALLAST_BIN, free_port, stop_process

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READONLY_TOKEN = "readonly-token-0123456789abcdef"
SE_TOKEN = "se-token-0123456789abcdef"


class Controller:
    """`ballast controller` on 127.0.0.1:<port>. data_dir survives stop()/start() (a restart).
    extra: more command-line arguments (e.g. ["--se-lost-after", "2s"]). tls: (cert, key) PEM
    files: serve HTTPS; api() then trusts that certificate."""

    def __init__(self, extra=(), data_dir=None, port=None, tls=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="ballast-ctlr-")
        self.dir = self.tmp.name
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        self.tokens = {}
        for kind, token in (("admin", ADMIN_TOKEN), ("readonly", READONLY_TOKEN), ("se", SE_TOKEN)):
            path = os.path.join(self.dir, f"{kind}.token")
            with open(path, "w") as f:
                f.write(token + "\n")
            self.tokens[kind] = path
        self.port = port or free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.ssl_context = None
        if tls:
            self.extra += ["--tls-cert", tls[0], "--tls-key", tls[1]]
            self.ssl_context = ssl.create_default_context(cafile=tls[0])
        self.proc = None
        self.log_path = os.path.join(self.dir, "controller.log")
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BALLAST_BIN, "controller", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.data_dir,
             "--admin-token-file", self.tokens["admin"],
             "--readonly-token-file", self.tokens["readonly"],
             "--se-token-file", self.tokens["se"], *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"controller does not listen on {self.port}:\n{self.output()}")

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None:
            return None
        rc = stop_process(self.proc, sig, timeout)
        self.log.close()
        return rc

    def close(self):
        self.stop()
        self.tmp.cleanup()

    def api(self, method, path, body=None, token=ADMIN_TOKEN, headers=None, content_type=None,
            timeout=10):
        """(status, parsed JSON body or text or None, response headers). body: dict/list (sent
        as JSON) or str/bytes (sent as is)."""
        data = None
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            else:
                data = body.encode() if isinstance(body, str) else body
                hdrs.setdefault("Content-Type", content_type or "application/yaml")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as r:
                status, raw, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, rh = e.code, e.read(), e.headers
        text = raw.decode(errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return status, parsed, rh
