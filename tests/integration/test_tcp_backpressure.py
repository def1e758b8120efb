"""L4 backpressure: 64 MB towards a slow reader in each direction. Ballast must stop reading
from the fast side while the slow side's buffer is full, so its memory stays bounded, and every
byte must arrive intact."""
import hashlib
import os
import socket
import threading
import time
import unittest

from harness import ConnectionRecorder, QuietBallastTestCase, rss_kib

TOTAL = 64 * 1024 * 1024
PAUSE = 2.0            # the slow side reads nothing at all for this long ...
CHUNK = 64 * 1024      # ... then reads CHUNK at a time with a short nap in between
NAP = 0.002
# The slow side's receive buffer is kept small so that the kernel's socket buffers hold little of
# the 64 MB: a proxy that buffers without bound would then show it in its own RSS.
SLOW_RCVBUF = 128 * 1024
RSS_LIMIT_KIB = 60 * 1024


def make_payload():
    # 1 MiB of random bytes repeated, each MiB tagged with its index: cheap to make, and a
    # reordering or a lost/duplicated block changes the digest.
    block = os.urandom(1024 * 1024 - 8)
    return b"".join(i.to_bytes(8, "big") + block for i in range(TOTAL // (1024 * 1024)))


def slow_read(sock, total):
    """Reads `total` bytes slowly; returns (sha256 hex, bytes read)."""
    h, n = hashlib.sha256(), 0
    time.sleep(PAUSE)
    sock.settimeout(30)
    while n < total:
        b = sock.recv(CHUNK)
        if not b:
            break
        h.update(b)
        n += len(b)
        time.sleep(NAP)
    return h.hexdigest(), n


class RssSampler:
    """Samples a process's RSS every 20 ms on a thread; .peak in KiB."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def close(self):
        self.stop.set()
        self.thread.join(5)


class Backpressure(QuietBallastTestCase):
    def _start(self, backend):
        b, port, admin = self.start_ballast_quiet([backend.address])
        # Warm up: one small connection through, so that per-worker lazy allocations are done.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"warm-up\n")
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            while s.recv(65536):
                pass
        backend.wait(lambda r: r and r[0].get("done"), timeout=10)
        return b, port

    def test_fast_client_slow_backend(self):
        payload = make_payload()
        expected = hashlib.sha256(payload).hexdigest()

        def handler(conn, rec):
            first = conn.recv(8, socket.MSG_PEEK)
            if first == b"warm-up\n":
                while conn.recv(65536):
                    pass
                conn.shutdown(socket.SHUT_WR)
                return
            rec["sha"], rec["n"] = slow_read(conn, TOTAL)
            conn.sendall(b"done")
            conn.shutdown(socket.SHUT_WR)

        backend = self.track(ConnectionRecorder("slow", handler))
        backend.raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)  # inherited
        b, port = self._start(backend)
        baseline = rss_kib(b.pid)
        sampler = RssSampler(b.pid)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.settimeout(60)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                reply = b""
                while True:
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    reply += chunk
        finally:
            sampler.close()
        backend.wait(lambda r: len(r) == 2 and r[1].get("done"), timeout=30)
        rec = backend.records[1]
        self.assertEqual(rec["n"], TOTAL)
        self.assertEqual(rec["sha"], expected)
        self.assertEqual(reply, b"done")
        growth = sampler.peak - baseline
        self.assertLess(growth, RSS_LIMIT_KIB,
                        f"ballast RSS grew by {growth} KiB (baseline {baseline} KiB)")

    def test_fast_backend_slow_client(self):
        payload = make_payload()
        expected = hashlib.sha256(payload).hexdigest()

        def handler(conn, rec):
            first = conn.recv(8)
            if first == b"warm-up\n":
                while conn.recv(65536):
                    pass
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(payload)
            rec["sent"] = True
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(30)
            while conn.recv(65536):
                pass

        backend = self.track(ConnectionRecorder("fast", handler))
        b, port = self._start(backend)
        baseline = rss_kib(b.pid)
        sampler = RssSampler(b.pid)
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
                s.settimeout(30)
                s.connect(("127.0.0.1", port))
                s.sendall(b"send it!")
                sha, n = slow_read(s, TOTAL)
                s.settimeout(10)
                extra = s.recv(100)  # then EOF
        finally:
            sampler.close()
        self.assertEqual(n, TOTAL)
        self.assertEqual(sha, expected)
        self.assertEqual(extra, b"")
        growth = sampler.peak - baseline
        self.assertLess(growth, RSS_LIMIT_KIB,
                        f"ballast RSS grew by {growth} KiB (baseline {baseline} KiB)")


if __name__ == "__main__":
    unittest.main()
