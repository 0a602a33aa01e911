"""Address keys: how an opportunity's address and an area's address in scope are compared.

Postal code exactly; street case-folded and trimmed, "str." and "straße" read as "strasse", runs of
spaces and hyphens as one; house number case-folded without spaces ("12 a" = "12A").
"""
from __future__ import annotations

import re
import unicodedata

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


# The search box's folding (services/search.py): umlauts as their two-letter spellings, so "Düssel", "Duessel"
# and "DÜSSEL" read alike; other accents dropped; "str."/"str" as "strasse"; "15 a" as "15a".
UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ı": "i"})
NON_WORD = re.compile(r"[\W_]+")
LETTER_SUFFIX = re.compile(r"\b(\d+) ([a-z])\b")


def searchable(*parts: str) -> str:
    """The words of `parts` folded for searching, each framed by spaces (' tiefenbacher weg 15a '), or ''."""
    words = [word for part in parts if part for word in _folded_words(part)]
    return f" {' '.join(words)} " if words else ""


def _folded_words(part: str) -> list[str]:
    text = unicodedata.normalize("NFKD", part.casefold().translate(UMLAUTS))
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = ABBREVIATED_STREET.sub("strasse", text)
    text = LETTER_SUFFIX.sub(r"\1\2", NON_WORD.sub(" ", text).strip())
    return [word + "asse" if word.endswith("str") else word for word in text.split()]
