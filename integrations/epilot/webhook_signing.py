"""Verifying epilot's webhook signatures (Standard Webhooks): no Django, no I/O.

The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; `webhook-signature` holds
space-separated `version,base64` entries. `v1` (some epilot documents say `v1s`) is HMAC-SHA256
keyed with the base64 secret after `whsec_`; `v1a` is Ed25519, checked with the organisation's
public key (PEM, from getPublicKey). One valid entry suffices.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

HMAC_VERSIONS = ("v1", "v1s")
ED25519_VERSION = "v1a"


class WebhookSignatureError(ValueError):
    """The delivery is not signed by a known secret or is too old or too new; the message says which."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (its base64 part); raises WebhookSignatureError for a malformed one."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError("a configured webhook secret is not 'whsec_' followed by base64") from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,…` signature entry for a delivery (what epilot sends; used by the sandbox and tests)."""
    digest = hmac.new(secret_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_ed25519(private_key_pem: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1a,…` signature entry for a delivery, signed with a PEM Ed25519 private key (the sandbox's)."""
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise WebhookSignatureError("the signing key is not an Ed25519 key")
    return "v1a," + base64.b64encode(key.sign(f"{message_id}.{timestamp}.".encode() + body)).decode()


def public_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; raises WebhookSignatureError for anything else."""
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise WebhookSignatureError("the webhook public key is not PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise WebhookSignatureError("the webhook public key is not an Ed25519 key")
    return key


def verify(secrets: Iterable[str], *, message_id: str, timestamp: str, signature: str, body: bytes, now: float,
           tolerance_seconds: int = 300, public_keys: Iterable[Ed25519PublicKey] = ()) -> str:
    """Check a delivery against HMAC secrets and Ed25519 public keys; returns the version that matched.

    Raises WebhookSignatureError with the reason.
    """
    if not message_id or not timestamp or not signature:
        raise WebhookSignatureError("webhook-id, webhook-timestamp and webhook-signature headers are required")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not a whole number of seconds") from None
    if abs(now - sent_at) > tolerance_seconds:
        raise WebhookSignatureError(f"webhook-timestamp is more than {tolerance_seconds} s off this server's clock")
    keys = [secret_key(secret) for secret in secrets if secret]
    verifiers = list(public_keys)
    if not keys and not verifiers:
        raise WebhookSignatureError("no webhook secret is configured (EPILOT_WEBHOOK_SECRETS or provision_webhook)")
    signed = f"{message_id}.{sent_at}.".encode() + body
    expected = [base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in keys]
    for entry in signature.split():
        version, _, value = entry.partition(",")
        if version in HMAC_VERSIONS and any(hmac.compare_digest(value.encode(), candidate) for candidate in expected):
            return version
        if version == ED25519_VERSION and verifiers and _ed25519_valid(verifiers, value, signed):
            return version
    raise WebhookSignatureError("no signature matches a configured secret or the organisation's public key")


def _ed25519_valid(verifiers: list[Ed25519PublicKey], value: str, signed: bytes) -> bool:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    for verifier in verifiers:
        try:
            verifier.verify(raw, signed)
        except InvalidSignature:
            continue
        return True
    return False
