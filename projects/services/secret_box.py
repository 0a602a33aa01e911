"""Secrets the back-office must keep (webhook signing secrets), encrypted at rest with a key derived from SECRET_KEY."""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(ValueError):
    """A stored secret cannot be decrypted (SECRET_KEY changed); provision again with a rotation."""


def _box() -> Fernet:
    digest = hashlib.sha256(b"ausbau-backoffice/webhook-secret/" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


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
        raise SecretUnreadable("the stored webhook secret cannot be decrypted; was SECRET_KEY changed?") from None


def hint(secret: str) -> str:
    """What may be shown of a secret: its prefix and last four characters."""
    return f"whsec_…{secret[-4:]}" if secret else ""
