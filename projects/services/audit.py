"""The audit trail of writes to epilot: recorded before the call, completed after it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.epilot import EpilotConflictError, EpilotError
from integrations.epilot.types import MalformedPayload, parse_timestamp
from projects.models import Conversion, EpilotWrite
from projects.services.errors import NotAllowed


def version_seen(entity: Any, expected_updated_at: str | None) -> str:
    """The `_updated_at` a write is guarded with: the one staff saw, else the mirror's; raises NotAllowed for a
    deleted entity or a version that is no timestamp."""
    if entity.is_deleted:
        raise NotAllowed(_("The %(type)s is deleted in epilot.") % {"type": entity._meta.verbose_name})
    expected = expected_updated_at or entity.payload.get("_updated_at")
    try:
        parse_timestamp(expected, name="_updated_at")
    except MalformedPayload:
        raise NotAllowed(_("The version you saw (_updated_at) is not a timestamp; please reload.")) from None
    return expected


def stored_user(user: Any) -> Any:
    """The user to record on a row: a saved user, or None for anonymous callers, API clients and scripts."""
    return user if getattr(user, "pk", None) else None


@dataclass
class WriteOutcome:
    """Filled in by the caller inside `audited_write` with what epilot returned."""

    epilot_ids: list[str] = field(default_factory=list)
    record: EpilotWrite | None = None


@contextmanager
def audited_write(*, action: str, target_schema: str, target_epilot_id: str = "", summary: dict[str, Any],
                  user: Any = None, actor: str, conversion: Conversion | None = None) -> Iterator[WriteOutcome]:
    """Record one epilot write around the block that performs it.

    The pending row is saved before the call (outside any transaction of ours), so even a killed
    process leaves a trace. EpilotErrors are recorded and re-raised.
    """
    record = EpilotWrite.objects.create(
        action=action, user=stored_user(user), actor=actor, target_schema=target_schema,
        target_epilot_id=target_epilot_id, request_summary=summary, conversion=conversion, started_at=timezone.now(),
    )
    outcome = WriteOutcome(record=record)
    try:
        yield outcome
    except EpilotConflictError as exc:
        _complete(record, EpilotWrite.Result.CONFLICT, exc.message, outcome.epilot_ids)
        raise
    except EpilotError as exc:
        _complete(record, EpilotWrite.Result.FAILED, exc.message, outcome.epilot_ids)
        raise
    except BaseException as exc:  # whatever stopped the write, the row must not stay pending
        _complete(record, EpilotWrite.Result.FAILED, f"{type(exc).__name__}: {exc}"[:1000], outcome.epilot_ids)
        raise
    _complete(record, EpilotWrite.Result.SUCCEEDED, "", outcome.epilot_ids)


def _complete(record: EpilotWrite, result: str, error: str, epilot_ids: list[str]) -> None:
    EpilotWrite.objects.filter(pk=record.pk).update(result=result, error=error, epilot_ids=epilot_ids, finished_at=timezone.now())


def record_refused_write(*, action: str, target_schema: str, target_epilot_id: str, summary: dict[str, Any], reason: str,
                         user: Any = None, actor: str, conversion: Conversion | None = None) -> EpilotWrite:
    """Record a write that was not sent because epilot's state had moved on (result: conflict)."""
    now = timezone.now()
    return EpilotWrite.objects.create(
        action=action, user=stored_user(user), actor=actor, target_schema=target_schema,
        target_epilot_id=target_epilot_id, request_summary=summary, conversion=conversion, started_at=now, finished_at=now,
        result=EpilotWrite.Result.CONFLICT, error=reason)
