"""The composition root of the epilot connection: real epilot, a standalone sandbox or the embedded one, from settings.

The gateway (`integrations/epilot`) knows neither Django nor the sandbox; this module joins them.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

from django.conf import settings

from config.metrics import EpilotCallMetrics
from integrations.epilot import BudgetWindow, EpilotClient, FileWindow, RedisWindow, ServiceURLs

logger = logging.getLogger("integrations.epilot")

Mode = Literal["epilot", "sandbox-url", "embedded-sandbox"]

_lock = threading.Lock()
_client: EpilotClient | None = None


@dataclass(frozen=True)
class ConnectionInfo:
    """What the back-office talks to, for the admin banner, the logs and epilot_check."""

    mode: Mode
    urls: ServiceURLs
    sandbox_db: str | None

    @property
    def is_sandbox(self) -> bool:
        return self.mode != "epilot"

    @property
    def label(self) -> str:
        if self.mode == "embedded-sandbox":
            return "Embedded epilot sandbox (no EPILOT_API_TOKEN set): nothing reaches epilot"
        if self.mode == "sandbox-url":
            return f"epilot sandbox at {self.urls.entity} (EPILOT_API_URL, no token)"
        return f"epilot ({self.urls.entity})"


def connection_info() -> ConnectionInfo:
    """Which epilot the settings point at: a token means epilot, else EPILOT_API_URL, else the embedded sandbox."""
    urls = ServiceURLs(entity=settings.EPILOT_ENTITY_API_URL, workflows_execution=settings.EPILOT_WORKFLOWS_EXECUTION_API_URL,
                       workflows_definition=settings.EPILOT_WORKFLOWS_DEFINITION_API_URL,
                       automation=settings.EPILOT_AUTOMATION_API_URL, webhooks=settings.EPILOT_WEBHOOKS_API_URL)
    if settings.EPILOT_API_TOKEN:
        return ConnectionInfo(mode="epilot", urls=urls, sandbox_db=None)
    if settings.EPILOT_API_URL:
        return ConnectionInfo(mode="sandbox-url", urls=urls, sandbox_db=None)
    origin = "http://epilot-sandbox.invalid"
    return ConnectionInfo(
        mode="embedded-sandbox", urls=ServiceURLs.single_origin(origin), sandbox_db=str(settings.EPILOT_SANDBOX_DB)
    )


def build_epilot_client() -> EpilotClient:
    """A new client for the current settings; the embedded sandbox is served in-process from its SQLite file."""
    info = connection_info()
    common = {
        "timeout_seconds": settings.EPILOT_TIMEOUT_SECONDS,
        "writes_per_minute": settings.EPILOT_WRITES_PER_MINUTE,
        "org_id": settings.EPILOT_ORG_ID or None,
        "observer": EpilotCallMetrics(),
        "write_window": write_budget_window(),
    }
    if info.mode == "embedded-sandbox":
        # Only this mode needs the sandbox; a process talking to epilot does not load it.
        from integrations.epilot_sandbox import SandboxApp, SandboxStore, is_seeded, seed_demo

        store = SandboxStore(info.sandbox_db)
        if not is_seeded(store):
            seed_demo(store)
        return EpilotClient.for_wsgi_app(SandboxApp(store), origin=info.urls.entity, **common)
    token = settings.EPILOT_API_TOKEN or "sandbox"
    return EpilotClient(token=token, urls=info.urls, **common)


def write_budget_window() -> BudgetWindow | None:
    """Where the write budget is counted: Redis shared by every host, a file shared by this host's processes, or
    (`process://`, the tests) each client on its own (None)."""
    url = settings.EPILOT_WRITE_BUDGET_URL
    organisation = settings.EPILOT_ORG_ID or "default"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisWindow(url, key=f"ausbau:epilot-write-budget:{organisation}")
    if url.startswith("file://"):
        return FileWindow(url.removeprefix("file://"))
    return None


def get_epilot_client() -> EpilotClient:
    """The process-wide client (one connection pool), built on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = build_epilot_client()
            logger.info("epilot: %s", connection_info().label)
        return _client


def reset_epilot_client() -> None:
    """Forget the shared client, so the next call builds one from the current settings (tests, settings reload)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
