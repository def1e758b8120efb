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


_PORTS_FILE = os.path.join(tempfile.gettempdir(), "ballast-test-ports")
_PORT_HOLD_SECONDS = 900


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A free port for a test to listen on later. Tests run in parallel, and a port that was free
    a moment ago may be taken before the test binds it: so the port is drawn below the kernel's
    ephemeral range (a bind to port 0 or an outgoing connection never takes it meanwhile), and
    never handed to two tests on this machine within 15 minutes (a list of recent ports under a
    file lock, shared by the test processes). Otherwise two engines could end up sharing a port
    through SO_REUSEPORT, each getting part of the other's connections."""
    import fcntl
    import random
    high = _ephemeral_low()
    low = 10000 if high > 11000 else 1024
    with open(_PORTS_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        now = time.time()
        recent = {}
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                try:
                    if now - float(parts[1]) < _PORT_HOLD_SECONDS:
                        recent[int(parts[0])] = parts[1]
                except ValueError:
                    pass
        for _ in range(1000):
            port = random.randrange(low, high)
            if port in recent:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            break
        else:
            raise RuntimeError(f"no free port in {low}-{high}")
        recent[port] = f"{now:.3f}"
        f.seek(0)
        f.truncate()
        f.write("".join(f"{p} {t}\n" for p, t in recent.items()))
    return port


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


def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Sends sig to a process this test started (by its pid) and waits for it; SIGKILL after
    `timeout` seconds. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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
        rc = stop_process(self.proc, sig, timeout)
        self.log.close()
        return rc

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


# ---- helpers for test_reload / test_takeover / test_access_log / test_observability (appended) ----

def write_file_atomic(path, text):
    """Replaces a file in one step (write a sibling, rename), so that a reader never sees a
    half-written configuration."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class SeProcess:
    """A `ballast se --config PATH [extra args]` process with stdout and stderr in separate files
    of `workdir` (for the access log on stdout, and for binary upgrades where several processes
    share one configuration). stop() returns the exit code; it never signals anything but its
    own pid."""

    _count = 0

    def __init__(self, config_path, workdir, extra_args=(), env=None):
        SeProcess._count += 1
        n = SeProcess._count
        self.config_path = config_path
        self.stdout_path = os.path.join(workdir, f"se-{n}.stdout")
        self.stderr_path = os.path.join(workdir, f"se-{n}.stderr")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([BALLAST_BIN, "se", "--config", config_path, *extra_args],
                                     stdout=self._out, stderr=self._err,
                                     env=dict(os.environ, **(env or {})))

    @property
    def pid(self):
        return self.proc.pid

    def stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def output(self):
        return f"--- stderr of pid {self.pid}:\n{self.stderr()}--- stdout:\n{self.stdout()[-3000:]}"

    def wait_admin(self, admin_port, timeout=10.0):
        """Waits until this process answers /status on admin_port with its own pid (several
        processes may share the admin address during an upgrade)."""
        def mine():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ballast exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return status(admin_port)["pid"] == self.pid
            except (OSError, ValueError, AssertionError):
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if mine():
                return
            time.sleep(0.02)
        raise TimeoutError(f"pid {self.pid} does not answer on admin {admin_port}:\n{self.output()}")

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        return self.proc.returncode

    def close(self):
        self.stop()


class CannedHttpBackend:
    """A fast HTTP/1.1 origin for load: one thread per connection, keep-alive, answers every
    request head (bodies are not expected) with 200 and body `body`; counts requests."""

    def __init__(self, body=b"ok"):
        self.body = body
        self.response = (b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
        self.requests = 0
        self.lock = threading.Lock()
        self.raw = RawBackend(self._serve)
        self.port, self.address = self.raw.port, self.raw.address

    def _serve(self, conn):
        buf = b""
        while True:
            b = conn.recv(65536)
            if not b:
                return
            buf += b
            n = buf.count(b"\r\n\r\n")
            if n:
                buf = buf[buf.rindex(b"\r\n\r\n") + 4:]
                with self.lock:
                    self.requests += n
                conn.sendall(self.response * n)

    def close(self):
        self.raw.close()


class LoadGenerator:
    """Python HTTP load on 127.0.0.1:port, in threads, until stop():
    - `keepalive` clients, each sending GETs back to back on one connection (a new connection
      when ballast answers with Connection: close, which is not a failure);
    - `fresh` clients, each making one request per new connection (Connection: close);
    - `connectors` threads that only connect and close, as fast as they can.
    A request fails when it gets no complete response or a status other than 200, or when
    `check_body(body)` is false. Connections refused (ECONNREFUSED) are counted apart.
    stop() returns a summary dict."""

    def __init__(self, port, keepalive=4, fresh=2, connectors=1, target="/", check_body=None,
                 pause=0.0):
        self.port = port
        self.target = target
        self.check_body = check_body
        self.pause = pause
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.refused = 0
        self.connects = 0
        self.connect_errors = 0
        self.failures = []  # (seconds since start, description), the first 20
        self.bodies = {}
        self._stop = threading.Event()
        self.t0 = time.monotonic()
        self.threads = []
        for _ in range(keepalive):
            self.threads.append(threading.Thread(target=self._keepalive, daemon=True))
        for _ in range(fresh):
            self.threads.append(threading.Thread(target=self._fresh, daemon=True))
        for _ in range(connectors):
            self.threads.append(threading.Thread(target=self._connector, daemon=True))
        for t in self.threads:
            t.start()

    def _fail(self, what):
        with self.lock:
            self.failed += 1
            if len(self.failures) < 20:
                self.failures.append((round(time.monotonic() - self.t0, 3), what))

    def _good(self, body):
        if self.check_body is not None and not self.check_body(body):
            self._fail(f"unexpected body {body[:100]!r}")
            return
        with self.lock:
            self.ok += 1
            key = body[:40]
            self.bodies[key] = self.bodies.get(key, 0) + 1

    def _connect(self):
        try:
            return HttpConn(self.port, timeout=10)
        except ConnectionRefusedError:
            with self.lock:
                self.refused += 1
            return None
        except OSError as e:
            with self.lock:
                self.connect_errors += 1
                if len(self.failures) < 20:
                    self.failures.append((round(time.monotonic() - self.t0, 3), f"connect: {e!r}"))
            return None

    def _keepalive(self):
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = self._connect()
                if conn is None:
                    time.sleep(0.01)
                    continue
            try:
                conn.request("GET", self.target)
                r = conn.read_response()
            except (OSError, ConnectionClosed, ValueError) as e:
                self._fail(f"keep-alive: {e!r}"[:300])
                conn.close()
                conn = None
                continue
            if r.status != 200:
                self._fail(f"keep-alive: status {r.status} {r.body[:100]!r}")
            else:
                self._good(r.body)
            if "close" in r.header_list("connection"):
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def _fresh(self):
        while not self._stop.is_set():
            conn = self._connect()
            if conn is None:
                time.sleep(0.01)
                continue
            try:
                conn.request("GET", self.target, [("Connection", "close")])
                r = conn.read_response()
                if r.status != 200:
                    self._fail(f"fresh: status {r.status} {r.body[:100]!r}")
                else:
                    self._good(r.body)
            except (OSError, ConnectionClosed, ValueError) as e:
                self._fail(f"fresh: {e!r}"[:300])
            finally:
                conn.close()
            if self.pause:
                time.sleep(self.pause)

    def _connector(self):
        while not self._stop.is_set():
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", self.port))
                with self.lock:
                    self.connects += 1
            except ConnectionRefusedError:
                with self.lock:
                    self.refused += 1
                time.sleep(0.001)
            except OSError as e:
                with self.lock:
                    self.connect_errors += 1
                    if len(self.failures) < 20:
                        self.failures.append((round(time.monotonic() - self.t0, 3),
                                              f"connector: {e!r}"))
            finally:
                s.close()

    def snapshot(self):
        with self.lock:
            return {"ok": self.ok, "failed": self.failed, "refused": self.refused,
                    "connect_errors": self.connect_errors, "connects": self.connects,
                    "failures": list(self.failures), "bodies": dict(self.bodies),
                    "seconds": round(time.monotonic() - self.t0, 2)}

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(15)
        return self.snapshot()


def read_json_lines(path):
    """The lines of a file, each parsed as JSON: (objects, [lines that are not valid JSON
    objects]). A last line without its newline counts as invalid."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], []
    objs, bad = [], []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        if i == len(lines) - 1:
            bad.append(line)  # not terminated
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad.append(line)
            continue
        if isinstance(obj, dict):
            objs.append(obj)
        else:
            bad.append(line)
    return objs, bad


def admin_post(port, path, body=None, timeout=10):
    """POST on the admin listener (no body unless given); returns (status, headers, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = recv_all(s, timeout)
    (st, headers, resp_body), = parse_responses(data)
    return st, headers, resp_body


# ---- helpers for test_balancing / test_health / test_outlier / test_retries / test_server_settings
# ---- (appended; BEGIN lb-helpers)

import re as _re
import sys as _sys
from datetime import datetime as _datetime

DEMO_BACKEND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                            "demo_backend.py")

# A fast single-threaded HTTP/1.1 backend (selectors, keep-alive, pipelining): GET /health* answers
# "ok", everything else answers its name. Request bodies (Content-Length) are read and discarded.
_FAST_BACKEND = r'''
import selectors, signal, socket, sys
name, port = sys.argv[1].encode(), int(sys.argv[2])
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
def resp(body):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
R_NAME, R_HEALTH = resp(name), resp(b"ok")
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port)); ls.listen(1024); ls.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ, None)
state = {}
def close(c):
    sel.unregister(c); state.pop(c, None); c.close()
while True:
    for key, ev in sel.select():
        c = key.fileobj
        if c is ls:
            try:
                n, _ = ls.accept()
            except OSError:
                continue
            n.setblocking(False); n.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state[n] = [b"", b""]; sel.register(n, selectors.EVENT_READ, None); continue
        st = state.get(c)
        if st is None:
            continue
        if ev & selectors.EVENT_READ:
            try:
                data = c.recv(262144)
            except OSError:
                data = b""
            if not data:
                close(c); continue
            st[0] += data
            buf, out = st[0], []
            while True:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    break
                head = buf[:i]
                m = head.lower().find(b"\r\ncontent-length:")
                n = 0
                if m >= 0:
                    e = head.find(b"\r\n", m + 2)
                    n = int(head[m + 17:e if e >= 0 else len(head)].strip())
                if len(buf) < i + 4 + n:
                    break
                out.append(R_HEALTH if head.startswith(b"GET /health") else R_NAME)
                buf = buf[i + 4 + n:]
            st[0] = buf
            st[1] += b"".join(out)
        if st[1]:
            try:
                k = c.send(st[1])
                st[1] = st[1][k:]
            except BlockingIOError:
                pass
            except OSError:
                close(c); continue
            sel.modify(c, selectors.EVENT_READ | (selectors.EVENT_WRITE if st[1] else 0), None)
'''


class BackendProcess:
    """A backend in its own process, so that a test can kill, stop (SIGSTOP) and restart it by
    pid: examples/demo_backend.py (answers GET /health with 200, anything else with
    "hello from backend NAME (port P)"), or with fast=True a single-threaded pipelining backend
    that answers NAME (and "ok" on /health). Restarts on the same port."""

    def __init__(self, name, port=None, fast=False):
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.fast = fast
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.fast:
            args = [_sys.executable, "-c", _FAST_BACKEND, self.name, str(self.port)]
        else:
            args = [_sys.executable, DEMO_BACKEND, "--name", self.name, "--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend {self.name} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"backend {self.name} does not listen on {self.port}")
                time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Ends the process (SIGKILL by default) and waits for it."""
        if self.running():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        self.kill()


def backend_name(body):
    """The name of the server that answered: demo_backend's "hello from backend NAME (port P)",
    a fast BackendProcess's NAME, or HttpBackend/HttpOrigin's "NAME METHOD PATH"."""
    if isinstance(body, bytes):
        body = body.decode("latin-1")
    if body.startswith("hello from backend "):
        return body[len("hello from backend "):].split(" ", 1)[0]
    return body.split(" ", 1)[0]


def ballast_events(b, event=None, **match):
    """The JSON event lines that ballast logged (its stderr), optionally of one type and with
    some field values."""
    out = []
    for line in b.output().splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"event"' in line):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if event is not None and e.get("event") != event:
            continue
        if all(e.get(k) == v for k, v in match.items()):
            out.append(e)
    return out


def wait_events(b, event, count=1, timeout=10.0, **match):
    """Waits until ballast has logged `count` events of that type (matching the fields); returns
    them all."""
    deadline = time.monotonic() + timeout
    while True:
        found = ballast_events(b, event, **match)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} x {event} {match} within {timeout}s; events: "
                                 f"{ballast_events(b)}")
        time.sleep(0.02)


def event_epoch(e):
    """An event's "time" (UTC, e.g. 2026-11-30T10:00:00.123Z) as a Unix time."""
    t = e["time"]
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    return _datetime.fromisoformat(t).timestamp()


def server_metric(family, address, pool="p", extra=""):
    return f'{family}{{pool="{pool}",server="{address}"{extra}}}'


def server_status(admin, address, pool="p"):
    """The /status entry of one server."""
    for p in status(admin)["pools"]:
        if p["name"] == pool:
            for s in p["servers"]:
                if s["address"] == address:
                    return s
    raise KeyError(f"no server {address} in pool {pool}")


def reload_config(b, admin, text, timeout=10.0):
    """Rewrites ballast's configuration file and sends SIGHUP; waits until /status shows the
    new generation applied. Returns the /status after the reload."""
    before = status(admin)["config"].get("generation", 0)
    tmp = b.config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, b.config_path)
    os.kill(b.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while True:
        st = status(admin)
        if st["config"].get("generation", 0) > before:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"reload not applied: {st.get('reload')}\n{b.output()[-2000:]}")
        time.sleep(0.02)


class TrackingBackend:
    """An in-process HTTP backend (HttpBackend) that knows how many requests it holds at once.
    hold(method, path) -> seconds to hold a request before answering (default 0); a request to
    a path starting with /gate waits until release() (at most gate_timeout s). Answers
    "NAME METHOD PATH". .count, .in_flight, .max_in_flight, .paths."""

    def __init__(self, name, hold=None, gate_timeout=15.0, status=200):
        self.name = name
        self.hold = hold
        self.status = status
        self.gate = threading.Event()
        self.gate_timeout = gate_timeout
        self.lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.paths = []
        self.held = 0          # requests waiting at the gate now
        outer = self

        def handler(req, body):
            with outer.lock:
                outer.count += 1
                outer.in_flight += 1
                outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                outer.paths.append(req.path)
            try:
                if req.path.startswith("/gate"):
                    with outer.lock:
                        outer.held += 1
                    outer.gate.wait(outer.gate_timeout)
                    with outer.lock:
                        outer.held -= 1
                delay = outer.hold(req.command, req.path) if outer.hold else 0
                if delay:
                    time.sleep(delay)
                return outer.status, {}, f"{outer.name} {req.command} {req.path}".encode()
            finally:
                with outer.lock:
                    outer.in_flight -= 1

        self.http = HttpBackend(name, handler)
        self.port, self.address = self.http.port, self.http.address

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.http.close()


class ClientLoad:
    """GET load in `threads` client threads (keep-alive; a new connection after a close or an
    error) until stop(). Records every outcome as (monotonic time, status or None, server name or
    error text). `pause` seconds between requests of a thread; `headers` sent with each."""

    def __init__(self, port, threads=4, target="/", headers=None, pause=0.0, timeout=10.0):
        self.port, self.target, self.headers = port, target, headers
        self.pause, self.timeout = pause, timeout
        self.lock = threading.Lock()
        self.results = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _record(self, status_code, what):
        with self.lock:
            self.results.append((time.monotonic(), status_code, what))

    def _run(self):
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = HttpConn(self.port, self.timeout)
                conn.request("GET", self.target, self.headers)
                r = conn.read_response()
                self._record(r.status, backend_name(r.body) if r.status == 200
                             else r.body[:100].decode("latin-1"))
                if "close" in r.header_list("connection"):
                    conn.close()
                    conn = None
            except (OSError, ConnectionClosed, ValueError) as e:
                self._record(None, repr(e)[:200])
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def failures(self):
        return [r for r in self.snapshot() if r[1] != 200]

    def served_by(self, name, since=0.0):
        return sum(1 for t, s, who in self.snapshot() if s == 200 and who == name and t >= since)

    def total(self):
        with self.lock:
            return len(self.results)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(20)
        return self.snapshot()


_CL_RE = _re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", _re.I)


def _pipelined_worker(port, requests, out, batch, timeout):
    _pipelined_worker_to("127.0.0.1", port, requests, out, batch, timeout)


def pipelined_requests(port, requests, conns=4, batch=100, timeout=30.0):
    """Sends raw requests (bytes, each a whole request answered with a Content-Length body)
    pipelined in batches over `conns` keep-alive connections in parallel; returns
    [(status, body)] in the order of `requests`."""
    parts = [requests[k::conns] for k in range(conns)]
    outs = [[] for _ in parts]
    errors = []

    def run(k):
        try:
            _pipelined_worker(port, parts[k], outs[k], batch, timeout)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 4)
    if errors:
        raise errors[0]
    result = [None] * len(requests)
    for k, out in enumerate(outs):
        for j, r in enumerate(out):
            result[k + j * conns] = r
    return result


def lb_config(listen_port, servers, admin_port=None, lb_algorithm=None, hash_key=None,
              protocol="http", workers=2, vs_extra="", pool_extra="", se_extra="",
              health_monitors=(), pool_monitors=None, outlier=None, retries=None, timeouts=None):
    """A one-virtual-service configuration whose servers carry settings. servers: addresses, or
    dicts {"address": ..., "weight": 2, "enabled": False, "drain": True, "max_connections": 2}.
    hash_key / outlier / timeouts: flow-map text, e.g. "{type: header, name: X-User}".
    health_monitors: flow maps for the top-level list; pool_monitors: names for the pool."""
    def flow(item):
        if isinstance(item, str):
            return f"{{address: {item}}}"
        parts = []
        for k, v in item.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            parts.append(f"{k}: {v}")
        return "{" + ", ".join(parts) + "}"
    lines = ["se:", f"  workers: {workers}"]
    if admin_port:
        lines.append(f"  admin: 127.0.0.1:{admin_port}")
    if se_extra:
        lines.append(se_extra.rstrip("\n"))
    lines += ["virtual_services:", "  - name: vs", f"    listen: 127.0.0.1:{listen_port}",
              f"    protocol: {protocol}", "    pool: p"]
    if retries is not None:
        lines.append(f"    retries: {retries}")
    if timeouts:
        lines.append(f"    timeouts: {timeouts}")
    if vs_extra:
        lines.append(vs_extra.rstrip("\n"))
    lines += ["pools:", "  - name: p"]
    if lb_algorithm:
        lines.append(f"    lb_algorithm: {lb_algorithm}")
    if hash_key:
        lines.append(f"    hash_key: {hash_key}")
    if pool_monitors:
        lines.append(f"    health_monitors: [{', '.join(pool_monitors)}]")
    if outlier:
        lines.append(f"    outlier_detection: {outlier}")
    lines.append("    servers:")
    lines += [f"      - {flow(s)}" for s in servers]
    if pool_extra:
        lines.append(pool_extra.rstrip("\n"))
    if health_monitors:
        lines.append("health_monitors:")
        lines += [f"  - {m}" for m in health_monitors]
    return "\n".join(lines) + "\n"


def start_lb(case, servers, **kw):
    """Starts ballast on lb_config(...) without connecting to the virtual service (a probe
    connection would take a turn); registers it with the test case. Returns (ballast, port,
    admin port)."""
    port, admin = free_port(), free_port()
    b = case.track(Ballast(lb_config(port, servers, admin, **kw), wait_ports=(admin,)))
    wait_listening(b, port)
    return b, port, admin

# ---- END lb-helpers


# ---- helpers for test_persistence / test_persistence_cluster / test_store_failures (appended;
# ---- BEGIN persistence-helpers)
#
# A real redis-server started by the test on a free port (stopped, paused, killed and restarted by
# its pid), a minimal RESP client to look at what ballast wrote, configurations with a store and
# persistence, engines on other loopback addresses (127.0.0.2, ...), and clients that bind a
# source address (client_ip persistence) or pipeline keyed requests to any host.

import shutil as _shutil
import urllib.parse as _urlparse

REDIS_SERVER = _shutil.which("redis-server")


class RespError(Exception):
    """An error reply from Redis (-ERR ...)."""


class RespClient:
    """A minimal RESP2 client on a blocking socket: command(*args) -> str | int | None | list;
    pipeline([(args...), ...]) -> [replies] in one round trip. Error replies raise RespError
    (command) or come back as RespError objects (pipeline)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            b = self.sock.recv(1 << 20)
            if not b:
                raise ConnectionClosed("redis closed the connection", self.buf)
            self.buf += b
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            b = self.sock.recv(1 << 20)
            if not b:
                raise ConnectionClosed("redis closed the connection", self.buf)
            self.buf += b
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._exact(n + 2)[:-2]
            return data.decode("utf-8", errors="replace")
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._reply() for _ in range(n)]
        raise ValueError(f"bad RESP reply {line!r}")

    def command(self, *args):
        self.sock.sendall(self._encode(args))
        r = self._reply()
        if isinstance(r, RespError):
            raise r
        return r

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._reply() for _ in commands]

    def get_many(self, keys, chunk=1000):
        """{key: value or None} with MGET in chunks."""
        out = {}
        keys = list(keys)
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            for k, v in zip(part, self.command("MGET", *part)):
                out[k] = v
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def redis_command(port, *args):
    """One command on a new connection."""
    with RespClient(port) as c:
        return c.command(*args)


class RedisServer:
    """`redis-server --port P --save "" --appendonly no --daemonize no --dir TMP` on a free port
    (or `port`), in the foreground, so that the test can kill (SIGKILL), pause (SIGSTOP), resume
    (SIGCONT) and restart it (same port, empty: nothing is ever saved) by its pid. Its log goes to
    TMP/redis.log. close() stops it and removes TMP."""

    def __init__(self, port=None, start=True):
        if not REDIS_SERVER:
            raise unittest.SkipTest("redis-server is not installed (scripts/deps installs it)")
        self.dir = tempfile.TemporaryDirectory(prefix="ballast-redis-")
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = None
        self.paused = False
        self.starts = 0
        if start:
            self.start()

    def start(self, timeout=10.0):
        assert not self.running(), "redis-server already running"
        self.starts += 1
        log = open(os.path.join(self.dir.name, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", self.dir.name,
             "--dbfilename", f"never-{self.starts}.rdb"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.paused = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if redis_command(self.port, "PING") == "PONG":
                    return self
            except (OSError, ConnectionClosed, RespError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"redis-server does not answer on {self.port}:\n{self.log()}")
            time.sleep(0.02)

    def log(self):
        try:
            with open(os.path.join(self.dir.name, "redis.log"), "rb") as f:
                return f.read().decode(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL and wait: connections are closed by the kernel; all data is gone."""
        if self.running():
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.paused = False

    def restart(self):
        """Kills it (if running) and starts an empty one on the same port."""
        self.kill()
        return self.start()

    def pause(self):
        """SIGSTOP: connections stay open, nothing is answered (a slow store)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def client(self):
        return RespClient(self.port)

    def command(self, *args):
        return redis_command(self.port, *args)

    def keys(self, pattern="*"):
        """Every key matching pattern (SCAN, so a big database does not block it)."""
        out, cursor = [], "0"
        with self.client() as c:
            while True:
                cursor, part = c.command("SCAN", cursor, "MATCH", pattern, "COUNT", 10000)
                out += part
                if cursor == "0":
                    return sorted(set(out))

    def close(self):
        if self.running():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def persist_key(vs, client_key, prefix="ballast"):
    """The Redis key of a persistence entry (DESIGN.md, "Data store layout")."""
    return f"{prefix}:v1:persist:{vs}:{client_key}"


def server_id(address, pool="p"):
    """A server's stable id: <pool>/<address as written>."""
    return f"{pool}/{address}"


def _flow_map(item):
    if isinstance(item, str):
        return f"{{address: {item}}}"
    parts = []
    for k, v in item.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        parts.append(f"{k}: {v}")
    return "{" + ", ".join(parts) + "}"


def store_config(services, servers, admin_port=None, store="redis", redis_port=None,
                 redis_timeout="200ms", prefix=None, cache_size=None, workers=2,
                 lb_algorithm=None, health_monitors=(), pool_monitors=None, outlier=None,
                 store_extra=None, retries=None):
    """A configuration with a store and virtual services with persistence, all on pool p.
    services: [(name, "host:port", protocol, persistence flow map or None)].
    servers: addresses or dicts (as lb_config). store: "redis" (redis_port, redis_timeout,
    prefix), "memory", or None (no store section)."""
    lines = ["se:", f"  workers: {workers}"]
    if admin_port:
        lines.append(f"  admin: 127.0.0.1:{admin_port}")
    if store:
        lines += ["store:", f"  type: {store}"]
        if cache_size is not None:
            lines.append(f"  cache_size: {cache_size}")
        if store == "redis":
            redis = [f"address: 127.0.0.1:{redis_port}", f"timeout: {redis_timeout}"]
            if prefix:
                redis.append(f"prefix: {prefix}")
            if store_extra:
                redis.append(store_extra)
            lines.append("  redis: {" + ", ".join(redis) + "}")
    lines.append("virtual_services:")
    for name, listen, protocol, persistence in services:
        lines += [f"  - name: {name}", f"    listen: {listen}", f"    protocol: {protocol}",
                  "    pool: p"]
        if retries is not None:
            lines.append(f"    retries: {retries}")
        if persistence:
            lines.append(f"    persistence: {persistence}")
    lines += ["pools:", "  - name: p"]
    if lb_algorithm:
        lines.append(f"    lb_algorithm: {lb_algorithm}")
    if pool_monitors:
        lines.append(f"    health_monitors: [{', '.join(pool_monitors)}]")
    if outlier:
        lines.append(f"    outlier_detection: {outlier}")
    lines.append("    servers:")
    lines += [f"      - {_flow_map(s)}" for s in servers]
    if health_monitors:
        lines.append("health_monitors:")
        lines += [f"  - {m}" for m in health_monitors]
    return "\n".join(lines) + "\n"


class Engine:
    """A started `ballast se` (a Ballast) with where it listens: .b, .host, .port (the first
    virtual service), .listens [(host, port)], .admin, .name."""

    def __init__(self, b, listens, admin, name):
        self.b, self.listens, self.admin, self.name = b, listens, admin, name
        self.host, self.port = listens[0]

    def state(self, key=None):
        """GET /state (with ?key=<vs>:<client key>) as JSON."""
        path = "/state"
        if key is not None:
            path += "?key=" + _urlparse.quote(key, safe=":")
        code, body = admin_get(self.admin, path)
        assert code == 200, (code, body)
        return json.loads(body)

    def metrics(self):
        return metrics(self.admin)

    def families(self):
        code, body = admin_get(self.admin, "/metrics")
        assert code == 200, code
        return parse_prometheus(body)

    def output(self):
        return self.b.output()

    def decisions(self, vs="vs"):
        for v in self.state()["virtual_services"]:
            if v["name"] == vs:
                return v["decisions"]
        raise KeyError(f"no virtual service {vs} in /state")


def start_engine(case, config_text, listens, admin, name="se", workers=2):
    """Starts `ballast se` on config_text (its admin on 127.0.0.1:admin) and waits, without
    connecting, until every (host, port) of `listens` has `workers` listening sockets. Registers
    it with the test case; returns an Engine."""
    b = case.track(Ballast(config_text, wait_ports=(admin,)))
    for host, port in listens:
        wait_listening(b, port, host=host, count=workers)
    return Engine(b, list(listens), admin, name)


def wait_store_connected(engine, timeout=15.0):
    """Waits until the engine's /state says the store is connected; returns that /state."""
    return wait_until(lambda: (lambda s: s if s["store"]["connected"] else None)(engine.state()),
                      timeout, interval=0.05, message=f"{engine.name}: store connected")


class SourceHttpConn(HttpConn):
    """An HttpConn whose socket is bound to a source address first (client_ip persistence:
    every 127.x.y.z is a local address)."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10.0):
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False


def http_get_from(host, port, target="/", headers=None, source=None, timeout=10.0):
    """One GET on a new connection to host:port, from `source`; returns the Response."""
    with SourceHttpConn(port, host, source, timeout) as c:
        c.request("GET", target, headers)
        return c.read_final_response()[0]


def tcp_name_from(host, port, source=None, timeout=10.0):
    """Connects to host:port (from `source`), reads until the peer closes; returns the text
    (a NamedTcpBackend's name)."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        return recv_all(s, timeout).decode("latin-1")
    finally:
        s.close()


class NamedTcpBackend:
    """A TCP server that writes its name to every connection and closes it."""

    def __init__(self, name):
        self.name = name
        self.raw = RawBackend(lambda conn: conn.sendall(name.encode()))
        self.port, self.address = self.raw.port, self.raw.address

    def close(self):
        self.raw.close()


def keyed_request(key, header="X-Client", target="/k"):
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n{header}: {key}\r\n\r\n".encode("latin-1")


def _pipelined_worker_to(host, port, requests, out, batch, timeout):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        for start in range(0, len(requests), batch):
            chunk = requests[start:start + batch]
            sock.sendall(b"".join(chunk))
            got = 0
            while got < len(chunk):
                i = buf.find(b"\r\n\r\n")
                if i >= 0:
                    head = buf[:i + 2]
                    m = _CL_RE.search(head)
                    n = int(m.group(1)) if m else 0
                    if len(buf) >= i + 4 + n:
                        out.append((int(head[9:12]), buf[i + 4:i + 4 + n]))
                        buf = buf[i + 4 + n:]
                        got += 1
                        continue
                b = sock.recv(1 << 20)
                if not b:
                    raise ConnectionClosed(f"closed after {len(out)} responses", buf)
                buf += b
    finally:
        sock.close()


def pipelined_to(host, port, requests, conns=4, batch=100, timeout=30.0):
    """pipelined_requests to any host: raw requests (each answered with a Content-Length body)
    pipelined in batches over `conns` keep-alive connections; request i goes on connection
    i % conns. Returns [(status, body)] in the order of `requests`; a connection that fails
    leaves None for its unanswered requests (and the error in .errors of the result list)."""
    parts = [requests[k::conns] for k in range(conns)]
    outs = [[] for _ in parts]
    errors = []

    def run(k):
        try:
            _pipelined_worker_to(host, port, parts[k], outs[k], batch, timeout)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors.append(repr(e)[:300])
    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 4)
    result = _ResultList([None] * len(requests))
    result.errors = errors
    for k, out in enumerate(outs):
        for j, r in enumerate(out):
            result[k + j * conns] = r
    return result


class _ResultList(list):
    errors = ()


def names_through_engines(engines, keys, header="X-Client", conns=4, batch=100, target="/k"):
    """Sends the first request of every key through every engine at once (one thread per
    engine, the same order everywhere, so that each key reaches all engines at about the same
    moment). Returns ({engine name: [server name or None per key]}, {engine name: [failure
    descriptions]}, seconds)."""
    reqs = [keyed_request(k, header, target) for k in keys]
    results, t0 = {}, time.monotonic()
    barrier = threading.Barrier(len(engines))

    def run(e):
        barrier.wait()
        results[e.name] = pipelined_to(e.host, e.port, reqs, conns=conns, batch=batch)
    threads = [threading.Thread(target=run, args=(e,), daemon=True) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    took = time.monotonic() - t0
    names, failures = {}, {}
    for e in engines:
        res = results.get(e.name) or [None] * len(keys)
        names[e.name] = [backend_name(r[1]) if r and r[0] == 200 else None for r in res]
        fails = [f"{keys[i]}: {r[0] if r else 'no response'} {r[1][:80] if r else ''}"
                 for i, r in enumerate(res) if not r or r[0] != 200]
        fails += list(getattr(res, "errors", []))
        failures[e.name] = fails
    return names, failures, took


def divergent_keys(names, keys):
    """Keys whose servers differ between engines (or that some engine did not get served)."""
    out = []
    cols = list(names.values())
    for i, k in enumerate(keys):
        seen = {c[i] for c in cols}
        if len(seen) != 1 or None in seen:
            out.append((k, {n: c[i] for n, c in names.items()}))
    return out


class KeyedLoad:
    """Keyed GET load through several engines until stop(): per engine `threads` threads, each
    on one keep-alive connection (a new one after a close or an error), cycling through `keys`
    (each thread starts at another offset) with header `header: KEY`. Records every outcome:
    (engine, key, status or None, server name or error text, latency seconds)."""

    def __init__(self, engines, keys, threads=2, header="X-Client", pause=0.0, timeout=10.0):
        self.keys, self.header, self.pause, self.timeout = list(keys), header, pause, timeout
        self.lock = threading.Lock()
        self.results = []
        self._stop = threading.Event()
        self.threads = []
        count = len(engines) * threads
        step = max(1, len(self.keys) // count)
        for e in engines:
            for _ in range(threads):
                self.threads.append(threading.Thread(
                    target=self._run, args=(e, len(self.threads) * step), daemon=True))
        for t in self.threads:
            t.start()

    def _run(self, engine, start):
        conn = None
        i = start
        while not self._stop.is_set():
            key = self.keys[i % len(self.keys)]
            i += 1
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = HttpConn(engine.port, self.timeout, host=engine.host)
                conn.request("GET", "/load", [(self.header, key)])
                r = conn.read_response()
                rec = (engine.name, key, r.status,
                       backend_name(r.body) if r.status == 200 else r.body[:100].decode("latin-1"),
                       time.monotonic() - t0)
                if "close" in r.header_list("connection"):
                    conn.close()
                    conn = None
            except (OSError, ConnectionClosed, ValueError) as e:
                rec = (engine.name, key, None, repr(e)[:200], time.monotonic() - t0)
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.results.append(rec)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(20)
        return self.snapshot()

    def close(self):
        self.stop()


def metric_family_values(engine_or_admin, family):
    """[(labels dict, value)] of one metric family (any label order)."""
    admin = engine_or_admin.admin if isinstance(engine_or_admin, Engine) else engine_or_admin
    code, body = admin_get(admin, "/metrics")
    assert code == 200, code
    families, _, _ = parse_prometheus(body)
    fam = families.get(family)
    return [] if fam is None else [(labels, value) for _, labels, value in fam["samples"]]


def metric_sample(engine_or_admin, family, **labels):
    """The value of the sample of `family` with exactly these labels (None if absent)."""
    for got, value in metric_family_values(engine_or_admin, family):
        if got == labels:
            return value
    return None


class PersistenceTestCase(QuietBallastTestCase):
    """Base for the persistence tests: a Redis, backends whose names map to server ids, and
    engines on 127.0.0.2, .3, .4 (one virtual service "vs" on pool "p")."""

    HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")

    def start_redis(self, **kw):
        return self.track(RedisServer(**kw))

    def start_backends(self, names="abc", fast=True):
        """BackendProcess per name; self.ids: name -> server id, self.names_by_id: the reverse."""
        backs = [self.track(BackendProcess(n, fast=fast)) for n in names]
        self.ids = {b.name: server_id(b.address) for b in backs}
        self.names_by_id = {v: k for k, v in self.ids.items()}
        return backs

    def engine_config(self, index, servers, persistence, redis=None, store="redis",
                      protocol="http", vs="vs", port=None, admin=None, **kw):
        """(config text, (host, port), admin) of engine `index` (0: 127.0.0.2, ...)."""
        host = self.HOSTS[index]
        port, admin = port or free_port(), admin or free_port()
        text = store_config([(vs, f"{host}:{port}", protocol, persistence)], servers, admin,
                            store=store, redis_port=redis.port if redis else None, **kw)
        return text, (host, port), admin

    def start_engines(self, count, servers, persistence, redis=None, **kw):
        """`count` engines with the same configuration but their own addresses; each Engine
        remembers how to rebuild its configuration: e.config(servers=..., ...)."""
        engines = []
        for i in range(count):
            text, listen, admin = self.engine_config(i, servers, persistence, redis, **kw)
            e = start_engine(self, text, [listen], admin, name=f"se{i + 1}",
                             workers=kw.get("workers", 2))
            base = dict(kw, servers=servers, persistence=persistence, redis=redis,
                        port=listen[1], admin=admin)

            def config(i=i, base=base, **changes):
                args = dict(base, **changes)
                return self.engine_config(i, args.pop("servers"), args.pop("persistence"),
                                          args.pop("redis"), **args)[0]
            e.config = config
            engines.append(e)
        return engines

# ---- END persistence-helpers
