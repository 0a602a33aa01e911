"""Serve the sandbox on a loopback port so other processes can use it through EPILOT_API_URL."""
from __future__ import annotations

import json
import logging
import socket
import socketserver
import time
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from integrations.epilot_sandbox.app import SandboxApp

logger = logging.getLogger("integrations.epilot_sandbox")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
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
