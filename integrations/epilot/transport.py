"""The transport under every epilot service: one shared httpx.Client, typed errors, bounded retries, a write budget."""
from __future__ import annotations

import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import httpx
import orjson

import integrations.epilot.errors as errors
from integrations.epilot.observer import CallObserver
from integrations.epilot.throttle import BudgetWindow, RetryPolicy, WriteBudget
from integrations.epilot.types import Entity, MalformedPayload

logger = logging.getLogger("integrations.epilot")


@dataclass(frozen=True)
class ServiceURLs:
    """Base URL of each epilot service (real hosts by default; one origin for a sandbox or proxy)."""

    entity: str = "https://entity.sls.epilot.io"
    workflows_execution: str = "https://workflows-execution.sls.epilot.io"
    workflows_definition: str = "https://workflows-definition.sls.epilot.io"
    automation: str = "https://automation.sls.epilot.io"
    webhooks: str = "https://webhooks.sls.epilot.io"

    @classmethod
    def single_origin(cls, origin: str) -> ServiceURLs:
        return cls(entity=origin, workflows_execution=origin, workflows_definition=origin, automation=origin,
                   webhooks=origin)

    def items(self) -> list[tuple[str, str]]:
        return [
            ("entity", self.entity),
            ("workflows_execution", self.workflows_execution),
            ("workflows_definition", self.workflows_definition),
            ("automation", self.automation),
            ("webhooks", self.webhooks),
        ]


class _Token:
    """Holds the token so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__



class Transport:
    """Sending one operation of any epilot service: retries, budget, JSON, typed errors.

    Raises only `integrations.epilot.errors.EpilotError` subclasses. Safe to share between threads.
    """

    def __init__(
        self,
        *,
        token: str,
        urls: ServiceURLs | None = None,
        org_id: str | None = None,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        writes_per_minute: int = 450,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        observer: CallObserver | None = None,
        write_window: BudgetWindow | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not token:
            raise errors.EpilotConfigurationError("No epilot API token: set EPILOT_API_TOKEN.")
        self.urls = urls or ServiceURLs()
        self.retry = retry or RetryPolicy()
        self._token = _Token(token)
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._write_budget = WriteBudget(writes_per_minute, clock=clock, sleep=sleep, window=write_window)
        self._observer = observer or CallObserver()
        self._requests_sent = 0
        self._count_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "ausbau-backoffice/1.0"}
        if org_id:
            headers["x-epilot-org-id"] = org_id
        # Reading the CA bundle into a TLS context is most of a client's set-up (some 20 ms of CPU): a copy for a
        # forked process shares this one's.
        if transport is None and tls is None:
            tls = httpx.create_ssl_context()
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
                                  transport=transport, follow_redirects=False, verify=tls if tls is not None else True)
        # What `network_copy` rebuilds this client from; nothing where the transport was given (a test's, the sandbox's).
        self._network_settings: dict[str, Any] | None = None if transport is not None else {
            "token": token, "urls": self.urls, "org_id": org_id, "timeout_seconds": timeout_seconds, "retry": self.retry,
            "writes_per_minute": writes_per_minute, "observer": observer, "tls": tls}

    @property
    def over_network(self) -> bool:
        """Whether this client talks to epilot over the network (no transport was given), so `network_copy` has one."""
        return self._network_settings is not None

    @property
    def observer(self) -> CallObserver:
        return self._observer

    def network_copy(self, *, observer: CallObserver) -> Self | None:
        """A new client with this one's settings, `observer` and connections of its own, for a forked process (sockets
        must not be shared); None where this client does not talk to epilot over the network. Writes are budgeted
        per copy."""
        if self._network_settings is None:
            return None
        return type(self)(**{**self._network_settings, "observer": observer})

    def _request(
        self,
        operation: str,
        method: str,
        base_url: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool,
    ) -> httpx.Response:
        """Send with the retry policy; returns a 2xx response or raises a typed EpilotError.

        429 is retried for every method (the request was not processed); 5xx, timeouts and broken
        connections only where repeating the request cannot do a thing twice (the first time a
        server closed the connection, at once); a refused connection always, since nothing was sent.
        """
        is_write = method != "GET" and operation not in _READ_POSTS
        url = base_url.rstrip("/") + path
        content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode() if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        started = self._clock()
        service = self._service_of(base_url)
        attempt = 0
        while True:
            attempt += 1
            if is_write:
                waited = self._write_budget.acquire()
                if waited:
                    self._observer.waited_for_budget(waited)
            sent_at = self._clock()
            with self._count_lock:  # the client is shared by threads (read-ahead, execution reads)
                self._requests_sent += 1
            error: errors.EpilotError
            retryable = False
            delay: float | None = None
            try:
                response = _detached(self._http.request(method, url, params=_clean(params), content=content,
                                                        headers=headers))
            except httpx.TimeoutException as exc:
                error = errors.EpilotTimeoutError(
                    f"{operation}: epilot did not answer in time ({type(exc).__name__})", operation=operation
                )
                retryable = idempotent or isinstance(exc, httpx.ConnectTimeout)
                outcome = "timeout"
                self._observer.answered(service, operation, outcome, self._clock() - sent_at)
            except httpx.TransportError as exc:
                error = errors.EpilotConnectionError(
                    f"{operation}: connection to epilot failed ({type(exc).__name__})", operation=operation
                )
                retryable = idempotent or isinstance(exc, httpx.ConnectError)
                outcome = "connection"
                self._observer.answered(service, operation, outcome, self._clock() - sent_at)
                if retryable and attempt == 1 and isinstance(exc, httpx.RemoteProtocolError):
                    # Most often a kept-alive connection the server closed while it was idle in the pool:
                    # a new connection at once fixes that, as browsers and urllib3 do; a back-off would not.
                    delay = 0.0
            else:
                elapsed_ms = (self._clock() - sent_at) * 1000
                outcome = str(response.status_code)
                self._observer.answered(service, operation, outcome, elapsed_ms / 1000)
                log = logger.info if is_write else logger.debug
                log("epilot %s %s %s -> %s in %.0f ms (attempt %d)", operation, method, path, response.status_code, elapsed_ms,
                    attempt)
                if response.is_success:
                    return response
                error = _error_from_response(operation, response)
                if response.status_code == 429:
                    retryable = True
                    delay = _retry_after_seconds(response)
                else:
                    retryable = idempotent and response.status_code >= 500
            if not retryable or attempt >= self.retry.max_attempts:
                raise error
            if delay is None:
                delay = self.retry.backoff(attempt, self._rng)
            delay = min(delay, self.retry.max_retry_after_seconds)
            if self._clock() - started + delay > self.retry.max_elapsed_seconds:
                raise error
            logger.warning("epilot %s %s: %s; retry %d in %.1f s", operation, path, error.message, attempt, delay)
            self._observer.retried(service, operation, outcome)
            if delay > 0:
                self._sleep(delay)

    @property
    def requests_sent(self) -> int:
        """Attempts this client has sent (retries included), for the callers that account for their requests."""
        return self._requests_sent

    def _service_of(self, base_url: str) -> str:
        """The service (entity, workflows_execution, ...) a base URL belongs to, for metrics."""
        for name, url in self.urls.items():
            if url == base_url:
                return name
        return "other"

    def _json(self, operation: str, response: httpx.Response, *, allow_empty: bool = False) -> Any:
        if not response.content:
            if allow_empty:
                return None
            raise self._invalid(operation, f"empty body with status {response.status_code}")
        return self._loads(operation, response.content)

    def _loads(self, operation: str, content: bytes) -> Any:
        """JSON of a body: orjson (twice as fast on a page of 1,000 entities), json for what orjson refuses
        but Python reads (integers beyond 64 bits, NaN, lone surrogates). Raises EpilotInvalidResponseError."""
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(content)
        except ValueError:
            raise self._invalid(operation, "the body is not JSON") from None

    def _entity(self, operation: str, data: Any) -> Entity:
        return self._parse(operation, Entity.from_api, data)

    def _parse(self, operation: str, parse: Callable[[Any], Any], data: Any) -> Any:
        try:
            return parse(data)
        except MalformedPayload as exc:
            raise self._invalid(operation, str(exc)) from None

    @staticmethod
    def _invalid(operation: str, reason: str) -> errors.EpilotInvalidResponseError:
        logger.error("epilot %s: invalid response: %s", operation, reason)
        return errors.EpilotInvalidResponseError(f"{operation}: invalid response from epilot: {reason}", operation=operation)



# POSTs that only read; they count against the search pool, not the write budget.
_READ_POSTS = frozenset({"searchEntities", "listEntities", "searchFlowExecutions", "getWebhookEventsV2"})


def segment(value: str) -> str:
    """One URL path segment: ids come from data and must not add segments, queries or fragments."""
    return quote(str(value), safe="")


def as_bool(value: bool) -> str:
    return "true" if value else "false"


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {key: value for key, value in params.items() if value is not None}


def _detached(response: httpx.Response) -> httpx.Response:
    """The response, read, with its body as a plain stream: freed as soon as the last reference to it goes.

    httpx 0.28 wraps the body's stream in one that refers back to the response (encode/httpx#3733),
    a cycle only the garbage collector's full runs free; a sync's page bodies (megabytes each) then
    stayed in memory for dozens of pages.
    """
    response.stream = httpx.ByteStream(response.content)
    return response


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


_STATUS_ERRORS: dict[int, type[errors.EpilotClientError]] = {
    400: errors.EpilotValidationError,
    401: errors.EpilotAuthenticationError,
    403: errors.EpilotPermissionError,
    404: errors.EpilotNotFoundError,
    405: errors.EpilotConflictError,
    409: errors.EpilotConflictError,
    422: errors.EpilotValidationError,
}


def _error_from_response(operation: str, response: httpx.Response) -> errors.EpilotError:
    status = response.status_code
    detail = _error_detail(response)
    if status == 401:
        return errors.EpilotAuthenticationError(
            f"{operation}: epilot rejected the API token (401{': ' + detail if detail else ''}); check EPILOT_API_TOKEN",
            operation=operation, status=status)
    if status == 403:
        return errors.EpilotPermissionError(
            f"{operation}: the API token lacks a permission (403{': ' + detail if detail else ''}); "
            "check the token's roles and that it is not read-only", operation=operation, status=status)
    message = f"{operation}: epilot answered {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return errors.EpilotRateLimitedError(message, operation=operation, retry_after=_retry_after_seconds(response))
    if status >= 500:
        return errors.EpilotServerError(message, operation=operation, status=status)
    return _STATUS_ERRORS.get(status, errors.EpilotClientError)(message, operation=operation, status=status)


def _error_detail(response: httpx.Response) -> str:
    """The message of an `{status, error}`, `{message}` or `{errors: [...]}` body, shortened."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        return ""
    if not isinstance(body, Mapping):
        return ""
    for key in ("error", "message"):
        if isinstance(body.get(key), str):
            return body[key][:300]
    if isinstance(body.get("errors"), list):
        return json.dumps(body["errors"], ensure_ascii=False)[:300]
    return ""
