"""Translate epilot search input (a Lucene `q` or an `entity:list` filter) into SQLite.

Only the subset a back-office needs is understood: field terms, quoted phrases, wildcards,
ranges with inclusive/exclusive bounds, `_exists_`, AND/OR/NOT and parentheses. Anything else
is refused with a BadQuery naming the problem, as epilot would answer 400.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Columns kept outside the JSON body, so filtering and sorting on them uses the index.
COLUMNS = {"_id": "id", "_schema": "schema", "_title": "title", "_created_at": "created_at",
           "_updated_at": "updated_at", "_deleted_at": "deleted_at"}
DATE_FIELDS = {"_created_at", "_updated_at", "_deleted_at"}
FIELD_RE = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_.$-]*$")


class BadQuery(ValueError):
    """The query or filter cannot be understood."""


def now_ms() -> str:
    """The current moment as epilot writes timestamps (UTC, milliseconds, Z)."""
    return iso_ms(dt.datetime.now(dt.UTC).isoformat())


def iso_ms(value: Any) -> str:
    """Normalise a timestamp (ISO string or epoch milliseconds) to `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadQuery(f"not a date: {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    else:
        raise BadQuery(f"not a date: {value!r}")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(iso: str) -> int:
    moment = dt.datetime.fromisoformat(iso)
    return int(moment.timestamp() * 1000)


def _field(name: str) -> str:
    if name.endswith(".keyword"):
        name = name[: -len(".keyword")]
    if not FIELD_RE.match(name):
        raise BadQuery(f"unsupported field name: {name!r}")
    return name


def _json_path(name: str) -> str:
    parts = []
    for part in name.split("."):
        parts.append(f"[{part}]" if part.isdigit() else f'."{part}"')
    return "$" + "".join(parts)


def equals(name: str, value: Any, params: list[Any]) -> str:
    name = _field(name)
    if name in COLUMNS:
        if name in DATE_FIELDS:
            params.append(iso_ms(value))
            return f"{COLUMNS[name]} = ?"
        params.append(str(value))
        return f"{COLUMNS[name]} = ?"
    params.append(_json_path(name))
    if isinstance(value, str) and ("*" in value or "?" in value):
        params.append(value.replace("*", "%").replace("?", "_").lower())
        return "EXISTS (SELECT 1 FROM json_each(body, ?) WHERE lower(json_each.value) LIKE ?)"
    if isinstance(value, bool):
        params.append(1 if value else 0)
        return "EXISTS (SELECT 1 FROM json_each(body, ?) WHERE json_each.value = ?)"
    if isinstance(value, (int, float)):
        params.append(value)
        return "EXISTS (SELECT 1 FROM json_each(body, ?) WHERE json_each.value = ?)"
    params.append(str(value).lower())
    return "EXISTS (SELECT 1 FROM json_each(body, ?) WHERE lower(json_each.value) = ?)"


def exists(name: str, params: list[Any]) -> str:
    name = _field(name)
    if name in COLUMNS:
        return f"{COLUMNS[name]} IS NOT NULL"
    params.append(_json_path(name))
    return "json_extract(body, ?) IS NOT NULL"


def compare(name: str, op: str, value: Any, params: list[Any]) -> str:
    name = _field(name)
    if name in DATE_FIELDS:
        params.append(iso_ms(value))
        return f"{COLUMNS[name]} {op} ?"
    if name in COLUMNS:
        params.append(str(value))
        return f"{COLUMNS[name]} {op} ?"
    params.append(_json_path(name))
    params.append(_number_or_text(value))
    return f"json_extract(body, ?) {op} ?"


def _number_or_text(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


# ---------------------------------------------------------------------------- Lucene

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>AND\b|OR\b|NOT\b|&&|\|\|) |
        (?P<minus>-(?=\S)) |
        (?P<clause>(?P<field>[A-Za-z0-9_$][A-Za-z0-9_.$-]*):
            (?:(?P<range>[\[{]\s*(?P<low>"[^"]*"|\S+)\s+TO\s+(?P<high>"[^"]*"|[^\s\]}]+)\s*[\]}])
              |(?P<phrase>"(?:[^"\\]|\\.)*")
              |(?P<term>[^\s()]+)))
        | (?P<bare>"(?:[^"\\]|\\.)*"|[^\s()]+)
    )""",
    re.VERBOSE,
)


def _tokens(q: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    q = q.strip()
    while pos < len(q):
        match = _TOKEN_RE.match(q, pos)
        if not match or match.end() == pos:
            raise BadQuery(f"cannot parse query near {q[pos:pos + 30]!r}")
        pos = match.end()
        if match.group("lparen"):
            tokens.append(("(", None))
        elif match.group("rparen"):
            tokens.append((")", None))
        elif match.group("op"):
            tokens.append(({"&&": "AND", "||": "OR"}.get(match.group("op"), match.group("op")), None))
        elif match.group("minus"):
            tokens.append(("NOT", None))
        elif match.group("clause"):
            tokens.append(("clause", match))
        else:
            tokens.append(("bare", match.group("bare")))
        while pos < len(q) and q[pos].isspace():
            pos += 1
    return tokens


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"')
    return text.replace("\\:", ":")


class _LuceneParser:
    def __init__(self, q: str) -> None:
        self.tokens = _tokens(q)
        self.pos = 0
        self.params: list[Any] = []

    def parse(self) -> str:
        if not self.tokens:
            raise BadQuery("empty query")
        sql = self._or()
        if self.pos != len(self.tokens):
            raise BadQuery("unbalanced parentheses or trailing operator")
        return sql

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _or(self) -> str:
        parts = [self._and()]
        # Juxtaposed clauses combine with OR, the query_string default operator.
        while self._peek() in ("OR", "clause", "bare", "(", "NOT"):
            if self._peek() == "OR":
                self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._not()]
        while self._peek() == "AND":
            self.pos += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _not(self) -> str:
        if self._peek() == "NOT":
            self.pos += 1
            return f"NOT ({self._not()})"
        return self._atom()

    def _atom(self) -> str:
        kind = self._peek()
        if kind is None:
            raise BadQuery("query ends with an operator")
        token = self.tokens[self.pos]
        self.pos += 1
        if kind == "(":
            sql = self._or()
            if self._peek() != ")":
                raise BadQuery("missing closing parenthesis")
            self.pos += 1
            return f"({sql})"
        if kind == "bare":
            text = _unquote(token[1])
            if text == "*":
                return "1"
            self.params.append("%" + text.replace("*", "%").lower() + "%")
            return "lower(coalesce(title, '')) LIKE ?"
        if kind == "clause":
            return self._clause(token[1])
        raise BadQuery(f"unexpected {kind!r}")

    def _clause(self, match: re.Match[str]) -> str:
        field = match.group("field")
        if field == "_exists_":
            return exists(_unquote(match.group("term") or match.group("phrase") or ""), self.params)
        if match.group("range"):
            text = match.group("range")
            low, high = _unquote(match.group("low")), _unquote(match.group("high"))
            parts = []
            if low != "*":
                parts.append(compare(field, ">=" if text[0] == "[" else ">", low, self.params))
            if high != "*":
                parts.append(compare(field, "<=" if text[-1] == "]" else "<", high, self.params))
            return "(" + " AND ".join(parts) + ")" if parts else exists(field, self.params)
        value = _unquote(match.group("phrase") or match.group("term"))
        if value == "*":
            return exists(field, self.params)
        return equals(field, value, self.params)


def lucene_to_sql(q: str) -> tuple[str, list[Any]]:
    """SQL condition and parameters for a Lucene query string; raises BadQuery."""
    parser = _LuceneParser(q)
    return parser.parse(), parser.params


# ---------------------------------------------------------------------------- entity:list filter

def filter_to_sql(clauses: Sequence[Mapping[str, Any]], params: list[Any]) -> str:
    """SQL condition for a `SearchFilter` array (AND of its clauses); raises BadQuery."""
    if not isinstance(clauses, list):
        raise BadQuery("filter must be an array")
    parts = [_filter_clause(clause, params) for clause in clauses]
    return "(" + " AND ".join(parts) + ")" if parts else "1"


def _filter_clause(clause: Any, params: list[Any]) -> str:
    if not isinstance(clause, Mapping) or len(clause) != 1:
        raise BadQuery("each filter clause must be an object with exactly one key")
    (kind, body), = clause.items()
    if kind in ("$and", "$or"):
        if not isinstance(body, list) or not body:
            raise BadQuery(f"{kind} needs a non-empty array")
        joiner = " AND " if kind == "$and" else " OR "
        return "(" + joiner.join(_filter_clause(item, params) for item in body) + ")"
    if kind == "$not":
        inner = body if isinstance(body, list) else [body]
        return f"NOT {filter_to_sql(inner, params)}"
    if kind == "term":
        (name, value), = _single(body, "term").items()
        return equals(name, value, params)
    if kind == "terms":
        (name, values), = _single(body, "terms").items()
        if not isinstance(values, list) or not values:
            raise BadQuery("terms needs a non-empty array")
        return "(" + " OR ".join(equals(name, value, params) for value in values) + ")"
    if kind == "ids":
        values = body.get("values") if isinstance(body, Mapping) else None
        if not isinstance(values, list):
            raise BadQuery("ids needs values")
        params.extend(str(value) for value in values)
        return f"id IN ({','.join('?' * len(values))})" if values else "0"
    if kind == "range":
        (name, bounds), = _single(body, "range").items()
        if not isinstance(bounds, Mapping):
            raise BadQuery("range needs bounds")
        ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        parts = [compare(name, ops[key], value, params) for key, value in bounds.items() if key in ops]
        return "(" + " AND ".join(parts) + ")" if parts else "1"
    if kind == "exists":
        field = body.get("field") if isinstance(body, Mapping) else None
        if not isinstance(field, str):
            raise BadQuery("exists needs a field")
        return exists(field, params)
    raise BadQuery(f"unsupported filter clause: {kind!r}")


def _single(body: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping) or len(body) != 1:
        raise BadQuery(f"{kind} needs exactly one field")
    return body


def filter_mentions_schema(clauses: Any) -> bool:
    """Whether a filter restricts `_schema` somewhere (epilot refuses unscoped listings)."""
    if isinstance(clauses, list):
        return any(filter_mentions_schema(item) for item in clauses)
    if isinstance(clauses, Mapping):
        for kind, body in clauses.items():
            if kind in ("term", "terms") and isinstance(body, Mapping) and "_schema" in body:
                return True
            if kind in ("$and", "$or") and filter_mentions_schema(body):
                return True
    return False


# ---------------------------------------------------------------------------- sorting

def parse_sort(sort: Any) -> list[tuple[str, str]]:
    """[(column, 'ASC'|'DESC')] for `sort`, always ending in `_id` so pages never overlap."""
    if sort is None:
        items: list[str] = []
    elif isinstance(sort, str):
        items = [sort]
    elif isinstance(sort, list) and all(isinstance(item, str) for item in sort):
        items = sort
    else:
        raise BadQuery("sort must be a string or an array of strings")
    keys: list[tuple[str, str]] = []
    for item in items:
        name, _, direction = item.partition(":")
        direction = (direction or "asc").lower()
        if direction not in ("asc", "desc"):
            raise BadQuery(f"sort direction must be asc or desc: {item!r}")
        if name not in COLUMNS:
            raise BadQuery(f"the sandbox sorts only on {', '.join(sorted(COLUMNS))}: {item!r}")
        keys.append((name, direction.upper()))
    if not any(name == "_id" for name, _ in keys):
        keys.append(("_id", keys[-1][1] if keys else "ASC"))
    return keys


def search_after_sql(keys: list[tuple[str, str]], values: list[Any], params: list[Any]) -> str:
    """Condition for rows strictly after `values` in the order `keys`."""
    if len(values) != len(keys):
        raise BadQuery(f"search_after needs {len(keys)} values (the previous sort_end)")
    normalised = []
    for (name, _), value in zip(keys, values, strict=False):
        if name in DATE_FIELDS and value is not None:
            normalised.append(iso_ms(value))
        else:
            normalised.append(None if value is None else str(value))
    ors = []
    for i, (name, direction) in enumerate(keys):
        ands = []
        for j in range(i):
            ands.append(f"{COLUMNS[keys[j][0]]} IS ?")
            params.append(normalised[j])
        op = ">" if direction == "ASC" else "<"
        ands.append(f"{COLUMNS[name]} {op} ?")
        params.append(normalised[i])
        ors.append("(" + " AND ".join(ands) + ")")
    return "(" + " OR ".join(ors) + ")"


def sort_values(keys: list[tuple[str, str]], row: Mapping[str, Any]) -> list[Any]:
    """The `sort_end` of a row: dates as epoch milliseconds, as Elasticsearch reports them."""
    values: list[Any] = []
    for name, _ in keys:
        value = row[COLUMNS[name]]
        values.append(epoch_ms(value) if name in DATE_FIELDS and value else value)
    return values
