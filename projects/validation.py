"""Parsing of untrusted identifiers and numbers from URLs, forms and cursors.

`str.isdigit()` accepts "²" and other Unicode digits that `int()` refuses, and a database
column has a range: everything here is ASCII digits within a bigint.
"""
from __future__ import annotations

import re

MAX_BIGINT = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(raw: object) -> int | None:
    """A primary key from text: 1 to 2**63-1 in ASCII digits, else None."""
    text = str(raw).strip()
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_BIGINT else None


def parse_id_list(raw: str) -> list[int] | None:
    """Comma-separated primary keys; None when any part is not one (empty parts are skipped)."""
    ids = []
    for part in raw.split(","):
        if not part.strip():
            continue
        value = parse_id(part)
        if value is None:
            return None
        ids.append(value)
    return ids
