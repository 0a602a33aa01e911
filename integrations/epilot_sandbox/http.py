"""HTTP plumbing of the sandbox: requests, errors shaped as each epilot service shapes them, JSON in and out."""
from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from integrations.epilot_sandbox.query import BadQuery, iso_ms


class HTTPError(Exception):
    def __init__(self, status: int, message: str, *, style: str = "entity", headers: Iterable[tuple[str, str]] = (),
                 details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.style = style
        self.headers = list(headers)
        self.details = details or []




@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "false").lower() == "true"

    def json(self) -> Any:
        if not self.raw_body:
            raise HTTPError(400, "request body is required")
        try:
            return json.loads(self.raw_body)
        except ValueError:
            raise HTTPError(400, "request body is not valid JSON") from None


Response = tuple[int, Any]
Handler = Callable[..., Response]


def short_id(length: int = 10) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class RawJSONList(list):
    """Entity bodies already serialised in the store; spliced into the answer without parsing them."""


def dumps(value: Any) -> str:
    if isinstance(value, RawJSONList):
        return "[" + ",".join(value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_body(exc: HTTPError) -> dict[str, Any]:
    if exc.style in ("workflow", "gateway"):
        return {"message": exc.message}
    if exc.style == "validation":
        return {"status": "error", "errors": exc.details}
    return {"status": exc.status, "error": exc.message}


def json_object(value: Any, *, style: str = "entity") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HTTPError(400, "request body must be a JSON object", style=style)
    return value


def stamp(value: Any) -> str:
    try:
        return iso_ms(value)
    except BadQuery:
        raise HTTPError(400, "_updated_at is not a valid date-time") from None
