"""Display helpers shared by the admin and the services' previews."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.utils import formats, translation

PORTAL_PATHS = {"opportunity": "opportunities", "order": "orders"}


def portal_url(schema: str, epilot_id: str) -> str:
    """The entity in the epilot portal, as the guide links it."""
    base = settings.EPILOT_PORTAL_URL.rstrip("/")
    if schema in PORTAL_PATHS:
        return f"{base}/app/{PORTAL_PATHS[schema]}/{epilot_id}"
    return f"{base}/app/entities/{schema}/{epilot_id}"


CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF"}


def format_amount(cents: int | None, currency: str = "EUR") -> str:
    """Money from cents in the active language: 9000000 → '90.000,00 €' in German, '€90,000.00' in English."""
    if cents is None:
        return "–"
    number = formats.number_format(Decimal(cents) / 100, decimal_pos=2, force_grouping=True)
    symbol = CURRENCY_SYMBOLS.get(currency or "EUR", currency)
    if (translation.get_language() or "de").startswith("en"):
        return f"{symbol}{number}" if len(symbol) == 1 else f"{symbol} {number}"
    return f"{number}\u00a0{symbol}"


def format_euros(amount: Decimal | None) -> str:
    """An amount in euros (an opportunity's budget) as money in the active language."""
    return format_amount(None if amount is None else int(amount * 100), "EUR")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A value for a CSV or XLSX cell: text that a spreadsheet would run as a formula gets a leading `'` (OWASP's
    advice against formula injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
