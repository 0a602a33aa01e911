"""Address keys: how an opportunity's address and an area's address in scope are compared.

Postal code exactly; street case-folded and trimmed, "str." and "straße" read as "strasse", runs of
spaces and hyphens as one; house number case-folded without spaces ("12 a" = "12A").
"""
from __future__ import annotations

import re

SEPARATORS = re.compile(r"[\s\-]+")
ABBREVIATED_STREET = re.compile(r"str\.(?=-|\s|$)")


def normalise_street(street: str) -> str:
    text = SEPARATORS.sub(" ", street.casefold().strip())  # casefold makes "ß" "ss": Straße → strasse
    text = ABBREVIATED_STREET.sub("strasse", text)
    return SEPARATORS.sub("-", text.strip(" -"))


def normalise_house_number(number: str) -> str:
    return re.sub(r"\s+", "", number.casefold())


def address_key(postal_code: str, street: str, house_number: str) -> str:
    """The comparable form of an address, or '' when a part is missing."""
    postal, road, number = postal_code.strip(), normalise_street(street), normalise_house_number(house_number)
    return f"{postal}|{road}|{number}" if postal and road and number else ""
