"""API clients: tokens are made here, shown once, and stored only as a SHA-256 hash."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from django.utils import timezone

from projects.models import ApiClient

TOKEN_PREFIX = "abo_"
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_client_issue_token(client: ApiClient) -> str:
    """Save `client` with a new token (an old one stops working at once); returns the token, which is not stored."""
    prefix = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    client.token_prefix, client.token_hash, client.revoked_at = prefix, _hash(token), None
    client.save()
    return token


def api_client_create(*, name: str, scopes: list[str], throttle_rate: str = "1200/min") -> tuple[ApiClient, str]:
    """Create a client; returns it with its token, shown this once."""
    client = ApiClient(name=name, scopes=scopes, throttle_rate=throttle_rate)
    return client, api_client_issue_token(client)


def api_client_revoke(client: ApiClient) -> None:
    ApiClient.objects.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_client_authenticate(token: str) -> ApiClient | None:
    """The active client owning `token`, or None; notes the use at most once a minute."""
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return None
    prefix = token[len(TOKEN_PREFIX):].split("_", 1)[0]
    client = ApiClient.objects.filter(token_prefix=prefix).first()
    if client is None or not hmac.compare_digest(client.token_hash, _hash(token)) or not client.is_active:
        return None
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at > LAST_USED_RESOLUTION:
        ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        client.last_used_at = now
    return client
