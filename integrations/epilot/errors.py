"""Typed errors of the epilot gateway; callers never see an httpx exception."""
from __future__ import annotations


class EpilotError(Exception):
    """Base of every failure the gateway reports.

    `operation` is the epilot operationId (for example `searchEntities`), `status` the HTTP
    status where there was one. Messages never contain the API token.
    """

    def __init__(self, message: str, *, operation: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status = status


class EpilotConfigurationError(EpilotError):
    """The gateway is not configured well enough to send anything."""


class EpilotTransportError(EpilotError):
    """No HTTP response arrived."""


class EpilotTimeoutError(EpilotTransportError):
    """epilot did not answer within the configured timeout."""


class EpilotConnectionError(EpilotTransportError):
    """The connection to epilot failed or broke."""


class EpilotHTTPError(EpilotError):
    """epilot answered with an error status."""


class EpilotClientError(EpilotHTTPError):
    """A 4xx answer: the request itself was refused."""


class EpilotAuthenticationError(EpilotClientError):
    """401: the token is missing, expired or wrong (setting EPILOT_API_TOKEN)."""


class EpilotPermissionError(EpilotClientError):
    """403: the token is valid but lacks a permission (or is read-only)."""


class EpilotNotFoundError(EpilotClientError):
    """404, or an empty answer where the spec uses one for 'not found'."""


class EpilotConflictError(EpilotClientError):
    """409: a newer version exists (stale `_updated_at`) or several upsert matches; 405 on a deleted entity."""


class EpilotValidationError(EpilotClientError):
    """400 or 422: epilot refused the request body or parameters."""


class EpilotRateLimitedError(EpilotClientError):
    """429 after the retry budget ran out; `retry_after` is epilot's hint in seconds."""

    def __init__(self, message: str, *, operation: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, operation=operation, status=429)
        self.retry_after = retry_after


class EpilotServerError(EpilotHTTPError):
    """A 5xx answer."""


class EpilotInvalidResponseError(EpilotError):
    """A body that does not parse or does not have the shape the spec promises."""
