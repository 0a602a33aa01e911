"""Display helpers shared by the admin and the services' previews."""
from __future__ import annotations

from decimal import Decimal


def format_amount(cents: int | None, currency: str = "EUR") -> str:
    """German money format from cents: 4500000 → '45.000,00 EUR'."""
    if cents is None:
        return "–"
    text = f"{Decimal(cents) / 100:,.2f}"
    return text.replace(",", "X").replace(".", ",").replace("X", ".") + f" {currency}"
