"""API clients: tokens are made here, shown once, and stored only as a SHA-256 hash."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time

from django.utils import timezone
from django.utils.translation import gettext as _

from projects.models import ApiClient
from projects.services.errors import NotAllowed

TOKEN_PREFIX = "abo_"
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
# Verified tokens are remembered this long per process; a revocation takes effect within it.
VERIFIED_TTL_SECONDS = 10.0
_verified: dict[str, tuple[float, ApiClient]] = {}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_client_issue_token(client: ApiClient) -> str:
    """Save `client` with a new token (an old one stops working at once); returns the token, which is not stored.

    A revoked client stays revoked: its new token does not work until it is re-activated on purpose.
    """
    prefix = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    old_hash = client.token_hash
    client.token_prefix, client.token_hash = prefix, _hash(token)
    client.save()
    _verified.pop(old_hash, None)
    return token


def api_client_rotate(client: ApiClient) -> str:
    """Replace an active client's token; returns the new one. Raises NotAllowed for a revoked client."""
    client.refresh_from_db()
    if not client.is_active:
        raise NotAllowed(_("The client is revoked; a new token would not re-activate it. Create a new client."))
    return api_client_issue_token(client)


def api_client_create(*, name: str, scopes: list[str], throttle_rate: str = "1200/min") -> tuple[ApiClient, str]:
    """Create a client; returns it with its token, shown this once.

    Raises NotAllowed for an unknown scope, a malformed rate or a name already taken.
    """
    unknown = sorted(set(scopes) - set(ApiClient.Scope.values))
    if unknown or not scopes:
        raise NotAllowed(
            _("Unknown or missing scopes %(unknown)s; use %(known)s.")
            % {"unknown": unknown, "known": ", ".join(ApiClient.Scope.values)}
        )
    try:
        parse_throttle_rate(throttle_rate)
    except ValueError:
        raise NotAllowed(_("Not a rate: %(rate)r; use e.g. 600/min, 10/s, 5000/hour.") % {"rate": throttle_rate}) from None
    if ApiClient.objects.filter(name=name).exists():
        raise NotAllowed(_("An API client named %(name)r exists already.") % {"name": name})
    client = ApiClient(name=name, scopes=list(dict.fromkeys(scopes)), throttle_rate=throttle_rate)
    return client, api_client_issue_token(client)


def parse_throttle_rate(rate: str) -> tuple[int, int]:
    """(requests, seconds) for a rate such as '600/min'; raises ValueError for anything else."""
    try:
        count, period = rate.split("/")
        requests, seconds = int(count), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[0]]
    except (ValueError, KeyError, IndexError, AttributeError):
        raise ValueError(f"not a rate: {rate!r}") from None
    if requests < 1 or not count.strip().isascii():
        raise ValueError(f"not a rate: {rate!r}")
    return requests, seconds


def api_client_revoke(client: ApiClient) -> None:
    """Revoke at once in this process; other processes stop accepting the token within VERIFIED_TTL_SECONDS."""
    ApiClient.objects.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    for token_hash, (_expires, known) in list(_verified.items()):
        if known.pk == client.pk:
            _verified.pop(token_hash, None)


def api_client_authenticate(token: str) -> ApiClient | None:
    """The active client owning `token`, or None; notes the use at most once a minute.

    A verified token is remembered for VERIFIED_TTL_SECONDS in this process, so polling clients
    cost no query per request; revoking therefore takes effect within that time.
    """
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return None
    token_hash = _hash(token)
    remembered = _verified.get(token_hash)
    if remembered and remembered[0] > time.monotonic():
        return remembered[1]
    prefix = token[len(TOKEN_PREFIX):].split("_", 1)[0]
    client = ApiClient.objects.filter(token_prefix=prefix).first()
    if client is None or not hmac.compare_digest(client.token_hash, token_hash) or not client.is_active:
        _verified.pop(token_hash, None)
        return None
    if len(_verified) > 1000:
        _verified.clear()
    _verified[token_hash] = (time.monotonic() + VERIFIED_TTL_SECONDS, client)
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at > LAST_USED_RESOLUTION:
        ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        client.last_used_at = now
    return client
