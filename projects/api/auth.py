"""Authentication, scopes and throttling of API clients."""
from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from projects.models import ApiClient
from projects.services.api_clients import api_client_authenticate, parse_throttle_rate


class ApiClientUser:
    """The request.user of an API call: the client, not a person."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.pk = None
        self.username = f"api:{client.name}"

    def __str__(self) -> str:
        return self.username


class ApiClientAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` of an API client managed in the admin."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClientUser, ApiClient] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, token = header.partition(" ")
        if keyword.lower() != self.keyword.lower() or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        client = api_client_authenticate(token.strip())
        if client is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return ApiClientUser(client), client

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class ApiClientAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiClientAuthentication
    name = "ApiClientToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Token of an API client (created in the admin, shown once)."}


class HasScope(permissions.BasePermission):
    """The client holds the scope the view names for its action (`required_scopes`, else `default_scope`, else read)."""

    message = "This token lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.auth
        if not isinstance(client, ApiClient):
            return False
        scope = getattr(view, "required_scopes", {}).get(getattr(view, "action", None), getattr(view, "default_scope", "read"))
        if not client.has_scope(scope):
            self.message = f"This token lacks the '{scope}' scope."
            return False
        return True


class ApiClientRateThrottle(throttling.BaseThrottle):
    """Per-client fixed-window limit from the client's `throttle_rate` (429 with Retry-After beyond it).

    One counter per client and window (an atomic `incr` in the cache), rather than DRF's
    SimpleRateThrottle, which stores and rewrites every request's timestamp on each request.
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        client = request.auth
        if not isinstance(client, ApiClient):
            return True
        limit, duration = parse_throttle_rate(client.throttle_rate)
        now = time.time()
        window = int(now // duration)
        key = f"throttle:{client.pk}:{client.token_prefix}:{window}"
        cache.add(key, 0, timeout=duration + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=duration + 1)
            count = 1
        self._wait = (window + 1) * duration - now
        return count <= limit

    def wait(self) -> float:
        return max(1.0, self._wait)
