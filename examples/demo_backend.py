#!/usr/bin/env python3
"""A small HTTP/1.1 backend for the demo and for trying Ballast by hand (standard library only).

    python3 examples/demo_backend.py --name a --port 9001

Threaded, keep-alive capable. GET /health answers 200 "ok"; any other GET (or HEAD) answers
"hello from backend NAME (port N)". Other methods read and discard the request body, then answer
the same. Stops on SIGTERM or Ctrl-C.
"""
import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive unless the client says "Connection: close"
    disable_nagle_algorithm = True

    def version_string(self):
        return "ballast-demo-backend"

    def _answer(self, send_body=True):
        if self.path == "/health" or self.path.startswith("/health?"):
            body = b"ok\n"
        else:
            body = f"hello from backend {self.server.name} (port {self.server.server_port})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        # Head and body in one write: a backend killed mid-answer (tests SIGKILL it under load)
        # then sends a whole response or none, never a head without its body.
        self._headers_buffer.append(b"\r\n")
        if send_body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer(send_body=False)

    def _discard_body_and_answer(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "chunked request bodies are not supported by the demo backend")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = _discard_body_and_answer

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write(f"[{self.server.name}] {self.address_string()} {fmt % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return      # a client that went away (reset, broken pipe) is no error of ours
        super().handle_error(request, client_address)


def _stop(_signum, _frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="name shown in every answer")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args()

    server = Server((args.host, args.port), Handler)
    server.name, server.verbose = args.name, args.verbose
    # SIGTERM ends serve_forever() like Ctrl-C does, so the socket is closed and the exit is 0.
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
