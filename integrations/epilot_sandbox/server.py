"""Serve the sandbox on a loopback port so other processes can use it through EPILOT_API_URL."""
from __future__ import annotations

import json
import logging
import socket
import socketserver
import time
import urllib.error
import urllib.request
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

from integrations.epilot_sandbox.app import SandboxApp

logger = logging.getLogger("integrations.epilot_sandbox")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _KeptAliveResponse(ServerHandler):
    http_version = "1.1"

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        if "Content-Length" not in self.headers:  # the end of the body is where the connection ends
            self.request_handler.close_connection = True


class _QuietHandler(WSGIRequestHandler):
    """Answers the requests of one connection until the client closes it (HTTP/1.1 keep-alive, as epilot's
    gateway does); wsgiref alone closes every connection after one request. Every answer of the
    sandbox has a Content-Length, so the next request can follow on the same connection."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle connection is closed after a minute
    # wsgiref writes the status line, the headers and the body in separate sends: with Nagle's algorithm
    # each later send would wait for the client's delayed acknowledgement (up to 40 ms) on a kept connection.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # an error was sent
            self.close_connection = True
            return
        response = _KeptAliveResponse(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False)
        response.request_handler = self  # wsgiref logs through it
        response.run(self.server.get_app())

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def make_sandbox_server(app: SandboxApp, *, host: str = "127.0.0.1", port: int = 8765) -> WSGIServer:
    """A threaded WSGI server for `app`; call serve_forever() on it. Port 0 picks a free port."""
    return make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(origin: str, *, timeout: float = 30.0) -> None:
    """Wait for a sandbox server at `origin` to answer its health endpoint; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{origin}/__sandbox__/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"no sandbox answered at {origin} within {timeout:.0f} s")


def sandbox_stats(origin: str) -> dict[str, int]:
    """The request and fault counters of a sandbox server at `origin` (its control endpoint)."""
    with urllib.request.urlopen(f"{origin}/__sandbox__/stats", timeout=10) as answer:
        return json.loads(answer.read())
