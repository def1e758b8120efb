"""Test harness: real `ballast se` processes, real sockets, backends started by the test.

Everything binds to 127.0.0.1 on ports the kernel hands out, and everything a test starts it
stops (by pid / by closing its sockets), so tests can run in parallel and leave nothing behind.
"""

import hashlib
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import unittest

BALLAST_BIN = os.environ.get("BALLAST_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "ballast")


def free_port():
    """A port that was free a moment ago (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---- the service engine ---------------------------------------------------------------------------

class Ballast:
    """A `ballast se` process running a YAML configuration (text, with {placeholders} filled
    from **ports). Use as a context manager; stop() returns the exit code."""

    def __init__(self, config_text, wait_ports=(), env=None):
        self.dir = tempfile.TemporaryDirectory(prefix="ballast-test-")
        self.config_path = os.path.join(self.dir.name, "ballast.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self.dir.name, "ballast.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BALLAST_BIN, "se", "--config", self.config_path],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        try:
            for port in wait_ports:
                self._wait(port)
        except Exception:
            self.stop(signal.SIGKILL)
            raise

    def _wait(self, port):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ballast exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"ballast does not listen on {port}:\n{self.output()}")

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.dir.cleanup()


def run_ballast(*args, timeout=10):
    """Runs `ballast ARGS` to completion; returns (exit code, stdout, stderr)."""
    p = subprocess.run([BALLAST_BIN, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def admin_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def status(port):
    code, body = admin_get(port, "/status")
    assert code == 200, code
    return json.loads(body)


def metrics(port):
    """Prometheus text -> {'name{labels}': value}."""
    code, body = admin_get(port, "/metrics")
    assert code == 200, code
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


# ---- clients ----------------------------------------------------------------------------------------

def recv_all(sock, timeout=5.0):
    """Reads until the peer closes (or the timeout); returns the bytes."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def raw_exchange(port, data, timeout=5.0, shut_write=False):
    """Sends raw bytes on a new connection and returns everything received until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        return recv_all(s, timeout)


def parse_responses(data):
    """Splits a byte stream into HTTP/1.1 responses: [(status, headers dict lowercased, body)].
    Understands Content-Length and chunked; a body without either runs to the end."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if 100 <= status < 200 or status in (204, 304):
            body, data = b"", rest
        elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
            body = b""
            while True:
                line, _, rest = rest.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")  # no trailers expected from ballast
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            data = rest
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out


# ---- backends ---------------------------------------------------------------------------------------

class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class HttpBackend:
    """An HTTP/1.1 server (keep-alive) on a free port. `handler(req)` gets a
    BaseHTTPRequestHandler and returns (status, headers dict, body bytes); by default it answers
    200 with "<name> <method> <path>". Records the requests it saw (method, path, headers, body)."""

    def __init__(self, name="backend", handler=None):
        self.name = name
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                body = b""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                elif self.headers.get("Content-Length"):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append((self.command, self.path, dict(self.headers), body))
                if handler:
                    status, headers, payload = handler(self, body)
                else:
                    status, headers, payload = 200, {}, f"{outer.name} {self.command} {self.path}".encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _serve

        self.server = _ThreadingServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawBackend:
    """A TCP server whose every connection is handed to `on_connection(sock)` on its own thread.
    For scripted misbehaviour: malformed responses, resets, silence, slowness, echo."""

    def __init__(self, on_connection):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.connections = 0
        self.on_connection = on_connection
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.on_connection(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_request_head(conn):
    """Reads one request head from a socket (for RawBackend handlers); b"" on EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = conn.recv(65536)
        if not b:
            return data
        data += b
    return data


def echo(conn):
    """RawBackend handler: echoes bytes until the client half-closes, then closes."""
    while True:
        b = conn.recv(65536)
        if not b:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(b)


def http_config(listen_port, servers, admin_port=None, protocol="http", vs_extra="", pool_extra="",
                se_extra="", workers=2):
    """A one-virtual-service configuration. vs_extra / pool_extra / se_extra: YAML lines (already
    indented for their block) appended to the virtual service, the pool and the se map."""
    lines = ["se:", f"  workers: {workers}"]
    if admin_port:
        lines.append(f"  admin: 127.0.0.1:{admin_port}")
    if se_extra:
        lines.append(se_extra.rstrip("\n"))
    lines += ["virtual_services:", "  - name: vs", f"    listen: 127.0.0.1:{listen_port}",
              f"    protocol: {protocol}", "    pool: p"]
    if vs_extra:
        lines.append(vs_extra.rstrip("\n"))
    lines += ["pools:", "  - name: p", "    servers:"]
    lines += [f"      - address: {s}" for s in servers]
    if pool_extra:
        lines.append(pool_extra.rstrip("\n"))
    return "\n".join(lines) + "\n"


class BallastTestCase(unittest.TestCase):
    """Base: tracks things to close at the end of each test."""

    def setUp(self):
        self._stoppers = []

    def tearDown(self):
        for c in reversed(self._stoppers):
            try:
                c()
            except Exception:
                pass

    def track(self, obj):
        """Registers something with close()/__exit__ to be stopped after the test."""
        if isinstance(obj, Ballast):
            self._stoppers.append(lambda: obj.__exit__(None, None, None))
        else:
            self._stoppers.append(obj.close)
        return obj

    def start_ballast(self, servers, protocol="http", **kw):
        """Starts ballast with one virtual service in front of `servers` (addresses); returns
        (ballast, listen port, admin port)."""
        port, admin = free_port(), free_port()
        b = self.track(Ballast(http_config(port, servers, admin, protocol=protocol, **kw),
                               wait_ports=(port, admin)))
        return b, port, admin


# ---- helpers for the TCP, lifecycle, admin, CLI and config tests (appended) -----------------------

def wait_until(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Polls predicate() until it returns something truthy (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def admin_get_full(port, path, method="GET"):
    """Like admin_get, but returns (status, headers dict lowercased, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if headers.get("transfer-encoding", "").lower() == "chunked":
        (_, _, body), = parse_responses(data)
    return int(lines[0].split()[1]), headers, body


def metric_value(admin_port, key, default=None):
    """One sample of /metrics by its exact 'name{labels}' key."""
    return metrics(admin_port).get(key, default)


def peer_closed(sock, timeout=5.0):
    """Reads (and discards) from sock until the peer closes it. Returns 'eof' or 'reset', or
    None if it is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        if not b:
            return "eof"


def reset_close(sock):
    """Closes a socket with a TCP reset (SO_LINGER 0)."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_exactly(sock, n, timeout=10.0):
    """Reads exactly n bytes (fewer if the peer closes first)."""
    sock.settimeout(timeout)
    chunks, got = [], 0
    while got < n:
        b = sock.recv(min(65536, n - got))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


class BlackholeListener:
    """A listening socket that never accepts and whose accept queue is full, so that the kernel
    drops further SYNs: connecting to it neither succeeds nor is refused (a connect timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.fillers = []
        # Fill the accept queue until a connection attempt hangs.
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", self.port))
            except socket.timeout:
                probe.close()
                return
            self.fillers.append(probe)
        raise RuntimeError("could not fill the accept queue of the blackhole listener")

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def refused_address():
    """An address where nothing listens (connect is refused)."""
    return f"127.0.0.1:{free_port()}"


def connect_refused(port, host="127.0.0.1", timeout=1.0):
    """True if a connection to host:port is refused right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def listening_sockets(port, host="127.0.0.1"):
    """Inodes of the IPv4 TCP sockets in LISTEN state on host:port (from /proc/net/tcp)."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    inodes = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                inodes.append(int(fields[9]))
    return inodes


def process_socket_inodes(pid):
    """Inodes of the sockets a process has open."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


class ConnectionRecorder:
    """A RawBackend whose connections run `handler(conn, record)`; `record` is a dict kept in
    self.records (in accept order) where handlers note what they saw. Keeps a name."""

    def __init__(self, name, handler):
        self.name = name
        self.records = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        outer = self

        def on_connection(conn):
            rec = {"backend": name}
            with outer.cond:
                outer.records.append(rec)
                outer.cond.notify_all()
            try:
                handler(conn, rec)
            finally:
                with outer.cond:
                    rec["done"] = True
                    outer.cond.notify_all()

        self.raw = RawBackend(on_connection)
        self.port = self.raw.port
        self.address = self.raw.address

    def wait(self, predicate, timeout=10.0):
        """Waits until predicate(records) is true (under the lock)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            # Handlers may change a record without notifying: re-check every 20 ms.
            while not predicate(self.records):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"backend {self.name}: condition not reached: {self.records!r}")
                self.cond.wait(min(left, 0.02))

    def close(self):
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Prometheus text exposition format 0.0.4: a strict checker.
_PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_PROM_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"


def _prom_float(text):
    if text in ("+Inf", "Inf"):
        return float("inf")
    if text == "-Inf":
        return float("-inf")
    if text == "NaN":
        return float("nan")
    return float(text)


def parse_prometheus(text):
    """Parses and checks Prometheus text format 0.0.4. Returns (families, samples, problems):
    families {name: {"type", "help", "samples": [(name, labels dict, value)]}}, samples
    {'name{labels as written}': value}, problems a list of strings (empty when valid)."""
    import re
    problems = []
    families = {}
    samples = {}
    seen_series = set()
    sample_re = re.compile(r"^(" + _PROM_NAME + r")(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$")
    label_re = re.compile(r'\s*(' + _PROM_LABEL + r')="((?:[^"\\\n]|\\\\|\\"|\\n)*)"\s*(,|$)')
    finished = set()
    current = None
    if text and not text.endswith("\n"):
        problems.append("the exposition does not end with a newline")
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(_PROM_NAME, name):
                    problems.append(f"line {n}: bad metric name {name!r}")
                fam = families.setdefault(name, {"type": None, "help": None, "samples": [],
                                                 "line": n})
                if name in finished or (fam["samples"] and current != name):
                    problems.append(f"line {n}: {parts[1]} for {name} after its samples")
                if parts[1] == "TYPE":
                    if fam["type"] is not None:
                        problems.append(f"line {n}: second TYPE for {name}")
                    t = parts[3].strip() if len(parts) > 3 else ""
                    if t not in ("counter", "gauge", "histogram", "summary", "untyped"):
                        problems.append(f"line {n}: bad type {t!r} for {name}")
                    fam["type"] = t
                else:
                    if fam["help"] is not None:
                        problems.append(f"line {n}: second HELP for {name}")
                    fam["help"] = parts[3] if len(parts) > 3 else ""
                if current is not None and current != name:
                    finished.add(current)
                current = name
            continue
        m = sample_re.match(line)
        if not m:
            problems.append(f"line {n}: not a sample: {line!r}")
            continue
        name, labels_text, value_text = m.group(1), m.group(3), m.group(4)
        labels = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = label_re.match(labels_text, pos)
                if not lm:
                    problems.append(f"line {n}: bad labels {labels_text!r}")
                    break
                if lm.group(1) in labels:
                    problems.append(f"line {n}: label {lm.group(1)} twice")
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
                if lm.group(3) == "" and pos < len(labels_text):
                    problems.append(f"line {n}: bad labels {labels_text!r}")
                    break
        try:
            value = _prom_float(value_text)
        except ValueError:
            problems.append(f"line {n}: bad value {value_text!r}")
            continue
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)] if name.endswith(suffix) else None
            if base and base in families and families[base]["type"] in ("histogram", "summary"):
                family = base
                break
        fam = families.get(family)
        if fam is None or fam["type"] is None or fam["help"] is None:
            problems.append(f"line {n}: sample {name} without # HELP and # TYPE before it")
            fam = families.setdefault(family, {"type": None, "help": None, "samples": [],
                                               "line": n})
        if family in finished or (current is not None and current != family):
            problems.append(f"line {n}: samples of {family} are not grouped together")
        if current != family:
            if current is not None:
                finished.add(current)
            current = family
        series = (name, tuple(sorted(labels.items())))
        if series in seen_series:
            problems.append(f"line {n}: duplicate series {line!r}")
        seen_series.add(series)
        fam["samples"].append((name, labels, value))
        samples[f"{name}{{{labels_text}}}" if labels_text is not None else name] = value
    # Histograms: cumulative buckets up to +Inf, _sum, _count == +Inf bucket.
    for fname, fam in families.items():
        if fam["type"] is None:
            problems.append(f"{fname}: no # TYPE")
        if fam["help"] is None:
            problems.append(f"{fname}: no # HELP")
        if fam["type"] == "counter":
            for name, labels, value in fam["samples"]:
                if value < 0 or value != value:
                    problems.append(f"{name}{labels}: counter value {value}")
        if fam["type"] != "histogram":
            continue
        groups = {}
        for name, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if name == fname + "_bucket":
                if "le" not in labels:
                    problems.append(f"{fname}{dict(key)}: bucket without le")
                    continue
                g["buckets"].append((_prom_float(labels["le"]), value))
            elif name == fname + "_sum":
                g["sum"] = value
            elif name == fname + "_count":
                g["count"] = value
            else:
                problems.append(f"{fname}: unexpected sample {name}")
        for key, g in groups.items():
            where = f"{fname}{dict(key)}"
            les = [le for le, _ in g["buckets"]]
            if not les or les[-1] != float("inf"):
                problems.append(f"{where}: no le=\"+Inf\" bucket last")
            if les != sorted(les) or len(set(les)) != len(les):
                problems.append(f"{where}: buckets not in increasing le order: {les}")
            counts = [c for _, c in g["buckets"]]
            if any(b < a for a, b in zip(counts, counts[1:])):
                problems.append(f"{where}: buckets not cumulative: {counts}")
            if g["sum"] is None:
                problems.append(f"{where}: no _sum")
            if g["count"] is None:
                problems.append(f"{where}: no _count")
            elif counts and g["count"] != counts[-1]:
                problems.append(f"{where}: _count {g['count']} != +Inf bucket {counts[-1]}")
    return families, samples, problems


# ---- HTTP (L7) test helpers (added for tests/integration/test_http_*.py) ---------------------------
#
# An HTTP client that reads one response at a time off a persistent connection (so keep-alive,
# pipelining and "is the connection still in sync" can be checked), and an origin server written on
# raw sockets that records exactly what it received (raw bytes, framing, connections), so a test can
# assert what reached the server and what did not.

def wait_for(predicate, timeout=10.0, interval=0.02, message="condition not met"):
    """Polls predicate() until it returns a true value (returned) or the timeout (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


def metric(admin_port, key):
    """One value from /metrics ('name{labels}'), 0 when absent."""
    return metrics(admin_port).get(key, 0.0)


def wait_metric(admin_port, key, expected, timeout=10.0):
    """Waits until metric `key` equals `expected`; returns it (AssertionError with the last value)."""
    last = [None]

    def ok():
        last[0] = metric(admin_port, key)
        return last[0] == expected
    try:
        wait_for(ok, timeout)
    except AssertionError:
        raise AssertionError(f"metric {key} is {last[0]}, expected {expected}") from None
    return last[0]


def vs_error_key(kind, vs="vs"):
    return f'ballast_vs_errors_total{{vs="{vs}",kind="{kind}"}}'


def vs_class_key(cls, vs="vs"):
    return f'ballast_vs_responses_total{{vs="{vs}",class="{cls}"}}'


class ConnectionClosed(Exception):
    """The peer closed (or reset) before a complete message arrived; .data holds what came."""

    def __init__(self, message, data=b""):
        super().__init__(f"{message}; received {len(data)} bytes: {data[:300]!r}")
        self.data = data


def _split_head(head_bytes):
    """b'start\\r\\nName: v\\r\\n...' (no final blank line) -> (start line, [(name, value)])."""
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip(" \t")))
    return lines[0], fields


class _Message:
    def header(self, name, default=None):
        """The first value of field `name` (case-insensitive)."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_list(self, name):
        """All values of a list field, every field line split on commas, lower-cased tokens."""
        out = []
        for v in self.header_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)


class Response(_Message):
    """A parsed response: version, status, reason, headers [(name, value)] in order, body
    (de-chunked), chunk_lines (raw chunk-size lines when chunked), trailers (raw), raw_head."""

    def __init__(self, raw_head):
        self.raw_head = raw_head
        start, self.headers = _split_head(raw_head[:-4])
        parts = start.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        self.reason = parts[2] if len(parts) > 2 else ""
        self.body = b""
        self.chunked = False
        self.chunk_lines = []
        self.trailers = b""
        self.close_delimited = False

    def __repr__(self):
        return f"<Response {self.status} {self.headers} body={len(self.body)}B>"


class HttpConn:
    """A client connection to `port`. send() raw bytes; read_response() reads exactly one
    response (1xx included) using the message framing, leaving pipelined bytes buffered."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    # -- sending
    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=None, version="HTTP/1.1"):
        """Sends a well-formed request; headers: list of (name, value) (Host: t is added when no
        Host is given, for HTTP/1.1); body bytes get a Content-Length unless a framing field is set."""
        headers = list(headers or [])
        names = {k.lower() for k, _ in headers}
        if version == "HTTP/1.1" and "host" not in names:
            headers.insert(0, ("Host", "t"))
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            headers.append(("Content-Length", str(len(body))))
        head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.send(head.encode("latin-1") + b"\r\n" + (body or b""))

    # -- receiving
    def _fill(self):
        try:
            b = self.sock.recv(262144)
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def _read_until(self, marker):
        while marker not in self.buf:
            if self.eof or not self._fill():
                raise ConnectionClosed(f"closed before {marker!r}", self.buf)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            if self.eof or not self._fill():
                raise ConnectionClosed(f"closed with {n - len(self.buf)} body bytes missing", self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """Reads one response head; returns a Response without body."""
        return Response(self._read_until(b"\r\n\r\n"))

    def read_body(self, r, method="GET", sink=None):
        """Reads the body of `r` (a Response from read_head). With `sink` (a callable), body bytes
        are passed to it instead of being kept in r.body."""
        def take(data):
            if sink:
                sink(data)
            else:
                r.body += data
        if method == "HEAD" or 100 <= r.status < 200 or r.status in (204, 304):
            return r
        te = r.header_list("transfer-encoding")
        if te:
            if te[-1] != "chunked":
                raise ValueError(f"unexpected transfer-encoding {te}")
            r.chunked = True
            while True:
                line = self._read_until(b"\r\n")
                r.chunk_lines.append(line)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self._read_until(b"\r\n")
                        if t == b"\r\n":
                            break
                        r.trailers += t
                    break
                while size:
                    n = min(size, 1 << 20)
                    take(self._read_exact(n))
                    size -= n
                if self._read_exact(2) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
        elif r.has_header("content-length"):
            n = int(r.header("content-length"))
            while n:
                if not self.buf and not self._fill():
                    raise ConnectionClosed(f"closed with {n} body bytes missing", b"")
                piece, self.buf = self.buf[:n], self.buf[n:]
                take(piece)
                n -= len(piece)
        else:
            r.close_delimited = True
            while True:
                if self.buf:
                    take(self.buf)
                    self.buf = b""
                if self.eof or not self._fill():
                    break
        return r

    def read_response(self, method="GET", sink=None):
        return self.read_body(self.read_head(), method, sink)

    def read_final_response(self, method="GET"):
        """Skips 1xx responses; returns (final response, [1xx responses])."""
        interim = []
        while True:
            r = self.read_response(method)
            if r.status >= 200 or r.status == 101 or r.status < 0:
                return r, interim
            interim.append(r)

    def wait_closed(self, timeout=5.0):
        """Waits for the peer to close: returns (closed, bytes received meanwhile)."""
        got = self.buf
        self.buf = b""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, got
                self.sock.settimeout(remaining)
                try:
                    b = self.sock.recv(65536)
                except ConnectionResetError:
                    b = b""
                if not b:
                    self.eof = True
                    break
                got += b
            return True, got
        except socket.timeout:
            return False, got
        finally:
            self.sock.settimeout(self.timeout)

    def is_open(self, wait=0.2):
        """True when the peer has not closed within `wait` seconds (and sent nothing)."""
        closed, got = self.wait_closed(wait)
        self.buf = got + self.buf
        return not closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_get(port, target="/", headers=None, timeout=10.0):
    """One request on a new connection (closed after); returns the final Response."""
    with HttpConn(port, timeout) as c:
        c.request("GET", target, headers)
        return c.read_final_response()[0]


class Request(_Message):
    """A request as an origin server received it: method, target, version, headers [(name,
    value)] in order, raw_head, body (de-chunked), raw_body (as on the wire), conn (connection
    number, from 1), index (request number on that connection, from 1)."""

    def __init__(self, raw_head, conn, index):
        self.raw_head = raw_head
        start, self.headers = _split_head(raw_head[:-4])
        parts = start.split(" ")
        self.method, self.target, self.version = (parts + ["", "", ""])[:3]
        self.body = b""
        self.raw_body = b""
        self.conn = conn
        self.index = index

    def __repr__(self):
        return f"<Request {self.method} {self.target} conn={self.conn} {self.headers}>"


def ok_response(body=b"ok", status=200, headers=()):
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


class HttpOrigin:
    """An HTTP/1.1 origin server on raw sockets (keep-alive, CL and chunked request bodies,
    answers `Expect: 100-continue` with 100 unless expect_100=False). Records every byte received
    (raw()), every complete request (requests), connections accepted and closed by the peer.

    respond(req) returns the raw response bytes to send; None closes the connection without a
    response; a tuple (bytes, "close") sends and then closes. Default: 200 with body
    "<name> <method> <target>". A request with `Connection: close` closes after the response."""

    def __init__(self, name="origin", respond=None, expect_100=True):
        self.name = name
        self.respond = respond
        self.expect_100 = expect_100
        self.requests = []
        self.raw_chunks = []
        self.connections = 0
        self.peer_closed = 0
        self.cond = threading.Condition()
        self.conns = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def raw(self):
        with self.cond:
            return b"".join(self.raw_chunks)

    def wait_requests(self, n, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"origin saw {len(self.requests)} requests, expected {n}")
            return list(self.requests)

    def wait_peer_closed(self, n, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(lambda: self.peer_closed >= n, timeout):
                raise AssertionError(f"{self.peer_closed} connections closed by the proxy, expected {n}")

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.connections += 1
                n = self.connections
                self.conns.append(conn)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn, n):
        r = _Reader(conn, self)
        index = 0
        try:
            while True:
                head = r.until(b"\r\n\r\n", allow_eof=True)
                if head is None:
                    break
                while head.startswith(b"\r\n"):
                    head = head[2:]
                index += 1
                req = Request(head, n, index)
                if self.expect_100 and req.header("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                te = req.header_list("transfer-encoding")
                if te and te[-1] == "chunked":
                    while True:
                        line = r.until(b"\r\n")
                        req.raw_body += line
                        size = int(line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while True:
                                t = r.until(b"\r\n")
                                req.raw_body += t
                                if t == b"\r\n":
                                    break
                            break
                        data = r.exact(size + 2)
                        req.raw_body += data
                        req.body += data[:-2]
                elif req.header("content-length"):
                    req.body = req.raw_body = r.exact(int(req.header("content-length").split(",")[0]))
                with self.cond:
                    self.requests.append(req)
                    self.cond.notify_all()
                if self.respond:
                    out = self.respond(req)
                else:
                    out = ok_response(f"{self.name} {req.method} {req.target}".encode("latin-1"))
                    if req.method == "HEAD":
                        out = out[:out.index(b"\r\n\r\n") + 4]
                if out is None:
                    break
                close = False
                if isinstance(out, tuple):
                    out, close = out[0], True
                if "close" in req.header_list("connection"):
                    close = True
                conn.sendall(out)
                if close:
                    break
        except (OSError, ValueError, EOFError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.cond:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Reader:
    """Buffered reads off a server-side socket, recording raw bytes in origin.raw_chunks."""

    def __init__(self, conn, origin):
        self.conn, self.origin, self.buf = conn, origin, b""

    def _fill(self):
        b = self.conn.recv(262144)
        if not b:
            with self.origin.cond:
                self.origin.peer_closed += 1
                self.origin.cond.notify_all()
            raise EOFError
        with self.origin.cond:
            self.origin.raw_chunks.append(b)
        self.buf += b

    def until(self, marker, allow_eof=False):
        while marker not in self.buf:
            try:
                self._fill()
            except EOFError:
                if allow_eof and not self.buf:
                    return None
                raise
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def recv_request_head(conn, buf=b""):
    """For RawBackend handlers: reads one request head; returns (head, leftover bytes) or
    (None, buf) on EOF."""
    while b"\r\n\r\n" not in buf:
        b = conn.recv(65536)
        if not b:
            return None, buf
        buf += b
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


class BlackholeServer:
    """A listening socket whose accept queue is full, so further connection attempts hang (SYNs
    are dropped): for connect timeouts. .address is its host:port."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)

    def blocks(self, probe_timeout=0.5):
        """True when a new connection attempt does not complete within probe_timeout."""
        s = socket.socket()
        s.settimeout(probe_timeout)
        try:
            s.connect(("127.0.0.1", self.port))
            return False
        except (socket.timeout, OSError):
            return True
        finally:
            s.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()



def wait_listening(ballast, port, host="127.0.0.1", count=1, timeout=10.0):
    """Waits, without connecting, until the ballast process has `count` sockets listening on
    host:port (a connection would be proxied and counted)."""
    def ready():
        if ballast.proc.poll() is not None:
            raise RuntimeError(f"ballast exited with {ballast.proc.returncode}:\n{ballast.output()}")
        mine = process_socket_inodes(ballast.pid)
        return len([i for i in listening_sockets(port, host) if i in mine]) >= count
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"ballast does not listen on {host}:{port}:\n{ballast.output()}")


class QuietBallastTestCase(BallastTestCase):
    """BallastTestCase whose start helper does not connect to the virtual service to see that it
    is up (that probe connection would be proxied, counted and take a round-robin turn)."""

    def start_ballast_quiet(self, servers, protocol="tcp", **kw):
        port, admin = free_port(), free_port()
        b = self.track(Ballast(http_config(port, servers, admin, protocol=protocol, **kw),
                               wait_ports=(admin,)))
        wait_listening(b, port)
        return b, port, admin
