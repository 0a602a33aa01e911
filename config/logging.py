"""Log records that say which request or task they belong to, and a JSON format for log shippers (LOG_FORMAT=json).

A request's id (`X-Request-ID`) and a Celery task's id live in context variables; `ContextFilter`
puts them on every record, and a task queued during a request carries the request's id along.
"""
from __future__ import annotations

import contextvars
import logging
import re
import uuid

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
current_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def accepted_request_id(sent: str | None) -> str:
    """The caller's request id when it is a plain token of at most 64 characters, else a new one."""
    return sent if sent and REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


class ContextFilter:
    """Adds `request_id` and `task_id` (None outside a request or task) to every record; filters nothing out."""

    def filter(self, record) -> bool:
        record.request_id = current_request_id.get()
        record.task_id = current_task_id.get()
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, the ids, and every `extra` field."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S%z")
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)


class TextFormatter(logging.Formatter):
    """One line per record for people and `grep`: the ids in brackets before the message when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{name}={value}" for name, value in (("request", getattr(record, "request_id", None)),
                                                              ("task", getattr(record, "task_id", None))) if value)
        line = super().format(record)
        if not ids:
            return line
        message = record.getMessage()
        head, found, tail = line.partition(message)
        return f"{head}[{ids}] {message}{tail}" if found else f"{line} [{ids}]"
