"""Address keys: how an opportunity's address and an area's address in scope are compared.

Postal code exactly; street case-folded and trimmed, "str." and "straße" read as "strasse", runs of
spaces and hyphens as one; house number case-folded without spaces ("12 a" = "12A").
"""
from __future__ import annotations

import re
import string
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
# and "DÜSSEL" read alike; other accents dropped; "str."/"str" as "strasse"; "15 a" as "15a". It runs for every
# mirrored contact, opportunity and order, so the common case (plain ASCII) skips the Unicode work.
# As bytes: str.translate looks every character up in a dict, bytes.translate in a table of 256.
ASCII_SEPARATORS = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
NON_WORD = re.compile(r"[^\w\n]+|_+")  # newlines part the given texts: "K-1 a" and "a@b" never glue to "1a"
LETTER_SUFFIX = re.compile(r"(?<=\d) (?=[a-z]\b)")
HAS_LETTER_SUFFIX = re.compile(r"\d [a-z]\b")  # the same places, found twice as fast without the look-behind
STREET_ENDING = re.compile(r"str\b")


def searchable(*parts: str) -> str:
    """The words of `parts` folded for searching, each once and framed by spaces (' tiefenbacher weg 15a '), or ''."""
    text = "\n".join(part for part in parts if part).casefold()
    if "str." in text:
        text = ABBREVIATED_STREET.sub("strasse", text)
    if not text.isascii():
        text = text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ı", "i")
    if text.isascii():
        text = text.encode().translate(ASCII_SEPARATORS).decode()
    else:
        text = unicodedata.normalize("NFKD", text)
        text = NON_WORD.sub(" ", "".join(char for char in text if not unicodedata.combining(char)))
    if HAS_LETTER_SUFFIX.search(text):
        text = LETTER_SUFFIX.sub("", text)
    if "str" in text:
        text = STREET_ENDING.sub("strasse", text)
    # Each word once: a query asks which words a row has, never their order or count, and a title repeating the
    # names beside it would give PostgreSQL's trigram index the same words twice to take apart.
    words = dict.fromkeys(text.split())
    return f" {' '.join(words)} " if words else ""
