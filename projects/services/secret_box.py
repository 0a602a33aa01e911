"""Secrets the back-office must keep (webhook signing secrets), encrypted at rest with a key derived from SECRET_KEY.

After a change of SECRET_KEY, secrets sealed with a key in SECRET_KEY_FALLBACKS still open, and
`reseal` moves them to the new key (the outbox sweep and provisioning do), so the fallback can go.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(ValueError):
    """A stored secret cannot be decrypted (SECRET_KEY changed); provision again with a rotation."""


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"ausbau-backoffice/webhook-secret/" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _box() -> MultiFernet:
    """Seals with SECRET_KEY; opens with it or any of SECRET_KEY_FALLBACKS."""
    return MultiFernet([_fernet(settings.SECRET_KEY), *(_fernet(key) for key in settings.SECRET_KEY_FALLBACKS)])


def seal(secret: str) -> str:
    """The encrypted form of `secret` for the database ('' stays '')."""
    return _box().encrypt(secret.encode()).decode() if secret else ""


def unseal(sealed: str) -> str:
    """The secret behind `seal`'s output; raises SecretUnreadable."""
    if not sealed:
        return ""
    try:
        return _box().decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("the stored webhook secret cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS "
                               "(was SECRET_KEY changed without keeping the old one as a fallback?); provision the webhook "
                               "again to replace it") from None


def sealed_with_current_key(sealed: str) -> bool:
    """Whether `sealed` opens with SECRET_KEY itself (not only with a fallback); '' counts as current."""
    if not sealed:
        return True
    try:
        _fernet(settings.SECRET_KEY).decrypt(sealed.encode())
    except InvalidToken:
        return False
    return True


def reseal(sealed: str) -> str:
    """`sealed` sealed again with SECRET_KEY; raises SecretUnreadable when no key opens it."""
    if not sealed:
        return ""
    try:
        return _box().rotate(sealed.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("the stored webhook secret cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS") \
            from None


def hint(secret: str) -> str:
    """What may be shown of a secret: its prefix and last four characters."""
    return f"whsec_…{secret[-4:]}" if secret else ""
