"""Frozen results of the gateway: typed system attributes, everything else kept as epilot sent it."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

Engine = Literal["v1", "v2"]

STEP_DONE_STATUSES = frozenset({"COMPLETED", "SKIPPED"})


class MalformedPayload(ValueError):
    """A payload lacks a required system attribute or has one of the wrong type."""


def parse_timestamp(value: Any, *, name: str) -> dt.datetime | None:
    """Parse an epilot ISO 8601 timestamp; raises MalformedPayload on anything else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{name} is {type(value).__name__}, not an ISO 8601 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MalformedPayload(f"{name} is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is dt.UTC:  # epilot's "...Z"
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))


class SystemAttributes(NamedTuple):
    """epilot's own attributes of an entity document, checked and typed (the fields of `Entity` before `data`)."""

    id: str
    schema: str
    title: str | None
    org: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    deleted_at: dt.datetime | None
    tags: tuple[str, ...]


def system_attributes(data: Any) -> SystemAttributes:
    """The system attributes of an API document; raises MalformedPayload naming the bad attribute."""
    if type(data) is not dict and not isinstance(data, Mapping):  # (the ABC check costs more than the common case)
        raise MalformedPayload(f"entity is {type(data).__name__}, not an object")
    entity_id = data.get("_id")
    if not isinstance(entity_id, str) or not entity_id:
        raise MalformedPayload("_id is missing or not a string")
    schema = data.get("_schema")
    if not isinstance(schema, str) or not schema:
        raise MalformedPayload("_schema is missing or not a string")
    title = data.get("_title")
    if title is not None and not isinstance(title, str):
        raise MalformedPayload(f"_title is {type(title).__name__}, not a string")
    tags = data.get("_tags") or ()
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise MalformedPayload("_tags is not a list of strings")
    org = data.get("_org")
    return SystemAttributes(entity_id, schema, title, str(org) if org is not None else None,
                            parse_timestamp(data.get("_created_at"), name="_created_at"),
                            parse_timestamp(data.get("_updated_at"), name="_updated_at"),
                            parse_timestamp(data.get("_deleted_at"), name="_deleted_at"), tuple(tags))


@dataclass(frozen=True, slots=True)
class Entity:
    """An epilot entity. `data` is the whole document exactly as epilot sent it."""

    id: str
    schema: str
    title: str | None
    org: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    deleted_at: dt.datetime | None
    tags: tuple[str, ...]
    data: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: Any) -> Entity:
        """Build from an API document; raises MalformedPayload naming the bad attribute."""
        return cls(*system_attributes(data), data=_frozen(data))

    @property
    def attributes(self) -> dict[str, Any]:
        """The business attributes (everything not prefixed with an underscore)."""
        return {key: value for key, value in self.data.items() if not key.startswith("_")}

    def relation_ids(self, attribute: str) -> list[str]:
        """Entity ids linked through a relation attribute, in either the stored or hydrated form."""
        return relation_ids(self.data.get(attribute))


def relation_ids(value: Any) -> list[str]:
    """Entity ids in a relation attribute value: `{"$relation": [...]}`, a hydrated list, or a list of those."""
    ids: list[str] = []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, Mapping):
            continue
        relation = item.get("$relation")
        if isinstance(relation, list):
            ids.extend(ref["entity_id"] for ref in relation if isinstance(ref, Mapping) and ref.get("entity_id"))
        elif isinstance(item.get("_id"), str):
            ids.append(item["_id"])
    return ids


@dataclass(frozen=True, slots=True)
class MalformedEntity:
    """A search result that could not be read as an entity, with the reason and the raw payload."""

    reason: str
    data: Any = field(repr=False)

    @property
    def id(self) -> str | None:
        return self.data.get("_id") if isinstance(self.data, Mapping) and isinstance(self.data.get("_id"), str) else None


@dataclass(frozen=True, slots=True)
class EntitySearchPage:
    """One page of `searchEntities` or `listEntities`."""

    hits: int
    results: tuple[Entity | MalformedEntity, ...]
    stable_query_id: str | None
    sort_end: tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class DocumentPage:
    """One page of `searchEntities` with its results as epilot sent them, unchecked: for a caller that reads each
    document once and checks it itself (`system_attributes`), as the mirror's sync does."""

    hits: int
    documents: list[Any]


class EntityStamp(NamedTuple):
    """An entity as a reconciliation sees it: its id, its `_updated_at` (None when unreadable), soft-deleted or not."""

    id: str
    updated_at: dt.datetime | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class RelationItem:
    """A relation as returned by `getRelations` (not hydrated)."""

    entity_id: str
    attribute: str
    schema: str | None = None
    tags: tuple[str, ...] = ()
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class EntitySchemaSummary:
    """An entity schema (`listSchemas`)."""

    slug: str
    name: str
    data: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """A step (V1) or task (V2) of a workflow definition or execution.

    `section` is the V1 section's or V2 phase's name, `section_id` its id; `assigned_to` holds
    the user ids (variable assignments of V2 are left out); dates epilot stores without a zone are UTC.
    """

    id: str
    name: str
    section: str | None
    status: str | None = None
    section_id: str | None = None
    assigned_to: tuple[str, ...] = ()
    due_date: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    execution_type: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A V1 workflow definition or a V2 flow template; `engine` says which."""

    id: str
    name: str
    engine: Engine
    enabled: bool
    steps: tuple[WorkflowStep, ...]
    data: Mapping[str, Any] = field(repr=False)

    @property
    def sections(self) -> list[str]:
        return list(dict.fromkeys(step.section for step in self.steps if step.section))

    @classmethod
    def from_v1(cls, data: Any) -> WorkflowDefinition:
        """Build from a V1 `WorkflowDefinition`; raises MalformedPayload."""
        _require_mapping(data, "workflow definition")
        return cls(id=_require_str(data, "id"), name=_require_str(data, "name"), engine="v1",
                   enabled=bool(data.get("enabled", True)), steps=tuple(_v1_steps(data.get("flow"))), data=_frozen(data))

    @classmethod
    def from_v2(cls, data: Any) -> WorkflowDefinition:
        """Build from a V2 `FlowTemplate`; raises MalformedPayload."""
        _require_mapping(data, "flow template")
        return cls(id=_require_str(data, "id"), name=_require_str(data, "name"), engine="v2",
                   enabled=bool(data.get("enabled", True)), steps=tuple(_v2_steps(data)), data=_frozen(data))


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """An entity a workflow execution runs on."""

    entity_id: str
    schema: str
    title: str = ""
    is_primary: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowExecution:
    """A V1 workflow execution or a V2 flow execution; `engine` says which."""

    id: str
    engine: Engine
    definition_id: str | None
    name: str | None
    status: str | None
    contexts: tuple[ExecutionContext, ...]
    steps: tuple[WorkflowStep, ...]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    completed_at: dt.datetime | None
    data: Mapping[str, Any] = field(repr=False)

    @property
    def completed_steps(self) -> int:
        return sum(1 for step in self.steps if step.status in STEP_DONE_STATUSES)

    @property
    def current_step(self) -> WorkflowStep | None:
        """The first step that is neither completed nor skipped."""
        return next((step for step in self.steps if step.status not in STEP_DONE_STATUSES), None)

    @classmethod
    def from_v1(cls, data: Any) -> WorkflowExecution:
        """Build from a V1 `WorkflowExecution`; raises MalformedPayload."""
        _require_mapping(data, "workflow execution")
        contexts = tuple(
            ExecutionContext(entity_id=str(ctx["id"]), schema=str(ctx.get("schema", "")), title=str(ctx.get("title") or ""))
            for ctx in _list(data.get("contexts"), "contexts")
            if isinstance(ctx, Mapping) and ctx.get("id")
        )
        return cls(id=_require_str(data, "id"), engine="v1", definition_id=data.get("definitionId"), name=data.get("name"),
                   status=data.get("status"), contexts=contexts, steps=tuple(_v1_steps(data.get("flow"))),
                   created_at=parse_timestamp(data.get("creationTime"), name="creationTime"),
                   updated_at=parse_timestamp(data.get("lastUpdateTime"), name="lastUpdateTime"),
                   completed_at=parse_timestamp(data.get("completedTime"), name="completedTime"), data=_frozen(data))

    @classmethod
    def from_v2(cls, data: Any) -> WorkflowExecution:
        """Build from a V2 `FlowExecution`; raises MalformedPayload."""
        _require_mapping(data, "flow execution")
        contexts = tuple(
            ExecutionContext(entity_id=str(ctx["entity_id"]), schema=str(ctx.get("entity_schema", "")),
                             is_primary=bool(ctx.get("is_primary")))
            for ctx in _list(data.get("contexts"), "contexts")
            if isinstance(ctx, Mapping) and ctx.get("entity_id")
        )
        analytics = data.get("analytics") if isinstance(data.get("analytics"), Mapping) else {}
        return cls(id=_require_str(data, "id"), engine="v2", definition_id=data.get("flow_template_id"), name=data.get("name"),
                   status=data.get("status"), contexts=contexts, steps=tuple(_v2_steps(data)),
                   created_at=parse_timestamp(data.get("created_at"), name="created_at"),
                   updated_at=parse_timestamp(data.get("updated_at"), name="updated_at"),
                   completed_at=parse_timestamp(analytics.get("completed_at"), name="analytics.completed_at"),
                   data=_frozen(data))


@dataclass(frozen=True, slots=True)
class AutomationFlow:
    """An automation flow (`AutomationFlow`)."""

    id: str
    name: str
    enabled: bool
    entity_schema: str | None
    data: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: Any) -> AutomationFlow:
        """Build from an API document; raises MalformedPayload."""
        _require_mapping(data, "automation flow")
        return cls(id=_require_str(data, "id"), name=_require_str(data, "flow_name"), enabled=bool(data.get("enabled", True)),
                   entity_schema=data.get("entity_schema"), data=_frozen(data))


def _require_mapping(data: Any, what: str) -> None:
    if not isinstance(data, Mapping):
        raise MalformedPayload(f"{what} is {type(data).__name__}, not an object")


def _require_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{key} is missing or not a string")
    return value


def _list(value: Any, name: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedPayload(f"{name} is {type(value).__name__}, not a list")
    return value


def _v1_steps(flow: Any) -> list[WorkflowStep]:
    steps: list[WorkflowStep] = []
    for item in _list(flow, "flow"):
        if not isinstance(item, Mapping):
            raise MalformedPayload("flow item is not an object")
        if item.get("type") == "SECTION" or "steps" in item:
            for step in _list(item.get("steps"), "steps"):
                if isinstance(step, Mapping):
                    steps.append(_step(step, section=item))
        else:
            steps.append(_step(item, section=None))
    return steps


def _step(step: Mapping[str, Any], *, section: Mapping[str, Any] | None) -> WorkflowStep:
    return WorkflowStep(
        id=str(step.get("id", "")), name=str(step.get("name", "")), section=section.get("name") if section else None,
        status=_text_or_none(step.get("status")), section_id=_text_or_none(section.get("id")) if section else None,
        assigned_to=_user_ids(step.get("assignedTo")), due_date=_lenient_timestamp(step.get("dueDate")),
        completed_at=_lenient_timestamp(step.get("completedTime")), execution_type=str(step.get("executionType") or ""),
        enabled=step.get("enabled") is not False)


def _v2_steps(data: Mapping[str, Any]) -> list[WorkflowStep]:
    phases = {
        phase.get("id"): phase.get("name")
        for phase in _list(data.get("phases"), "phases")
        if isinstance(phase, Mapping)
    }
    steps = []
    for task in _list(data.get("tasks"), "tasks"):
        if not isinstance(task, Mapping):
            continue
        analytics = task.get("analytics") if isinstance(task.get("analytics"), Mapping) else {}
        steps.append(WorkflowStep(
            id=str(task.get("id", "")), name=str(task.get("name", "")), section=phases.get(task.get("phase_id")),
            status=_text_or_none(task.get("status")), section_id=_text_or_none(task.get("phase_id")),
            assigned_to=_user_ids(task.get("assigned_to")), due_date=_lenient_timestamp(task.get("due_date")),
            completed_at=_lenient_timestamp(analytics.get("completed_at")),
            execution_type=str(task.get("task_type") or ""), enabled=task.get("enabled") is not False))
    return steps


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _user_ids(value: Any) -> tuple[str, ...]:
    """The user ids of an assignee list; V2's variable assignments (objects) name no user yet."""
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value if isinstance(item, (str, int)) and not isinstance(item, bool) and str(item))


def _lenient_timestamp(value: Any) -> dt.datetime | None:
    """A step's date, or None when epilot holds none or one that is not a timestamp (the raw value stays in the flow)."""
    try:
        return parse_timestamp(value, name="date")
    except MalformedPayload:
        return None
