"""The epilot gateway: one client for the services the back-office uses, typed results, typed errors.

Each service has its own module (entity_api, workflows_api, automation_api, webhooks_api) over one transport
(transport.py: the shared httpx.Client, retries, write budget). Methods are named after the
operationIds of the official specs (shared/epilot-openapi).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from integrations.epilot.automation_api import AutomationAPI
from integrations.epilot.entity_api import DEFAULT_SORT, SEARCH_PAGE_SIZE, EntityAPI
from integrations.epilot.transport import ServiceURLs
from integrations.epilot.webhooks_api import WebhookConfig, WebhookDelivery, WebhooksAPI
from integrations.epilot.workflows_api import WorkflowsAPI

__all__ = ["DEFAULT_SORT", "SEARCH_PAGE_SIZE", "EpilotClient", "ServiceURLs", "WebhookConfig", "WebhookDelivery"]


class EpilotClient(EntityAPI, WorkflowsAPI, AutomationAPI, WebhooksAPI):
    """Synchronous client for the epilot APIs the back-office uses.

    Raises only `integrations.epilot.errors.EpilotError` subclasses. Safe to share between
    threads; one instance per process is the intended use (see `integrations.connection`).
    """

    @classmethod
    def for_wsgi_app(
        cls, app: Callable[..., Any], *, origin: str = "http://epilot-sandbox.invalid", **kwargs: Any
    ) -> EpilotClient:
        """A client that talks to a WSGI app in-process (the embedded sandbox) instead of the network."""
        kwargs.setdefault("token", "sandbox")
        return cls(urls=ServiceURLs.single_origin(origin), transport=httpx.WSGITransport(app=app), **kwargs)

    def __repr__(self) -> str:
        return f"EpilotClient(entity={self.urls.entity!r}, token=<redacted>)"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EpilotClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

