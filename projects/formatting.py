"""Display helpers shared by the admin and the services' previews."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings

PORTAL_PATHS = {"opportunity": "opportunities", "order": "orders"}


def portal_url(schema: str, epilot_id: str) -> str:
    """The entity in the epilot portal, as the guide links it."""
    base = settings.EPILOT_PORTAL_URL.rstrip("/")
    if schema in PORTAL_PATHS:
        return f"{base}/app/{PORTAL_PATHS[schema]}/{epilot_id}"
    return f"{base}/app/entities/{schema}/{epilot_id}"


def format_amount(cents: int | None, currency: str = "EUR") -> str:
    """German money format from cents: 4500000 → '45.000,00 EUR'."""
    if cents is None:
        return "–"
    text = f"{Decimal(cents) / 100:,.2f}"
    return text.replace(",", "X").replace(".", ",").replace("X", ".") + f" {currency}"
