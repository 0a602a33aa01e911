"""Query filters; an unknown value or a bad date is a 400 that names the parameter."""
from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

from projects.models import AusbauProject, MirroredStep, Opportunity, Order, WorkflowExecution

BOOLEAN_CHOICES = [("true", "true"), ("false", "false")]


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 bound, compared in UTC: PostgreSQL refuses unusual offsets such as -17:19, UTC it always takes."""

    def filter(self, qs: QuerySet, value: dt.datetime | None) -> QuerySet:
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except (OverflowError, ValueError):
                parameter = next(name for name, known in self.parent.filters.items() if known is self)
                raise ValidationError({parameter: ["Date out of range."]}) from None
        return super().filter(qs, value)


@extend_schema_field({"type": "string", "enum": ["true", "false"]})
class TrueFalseFilter(django_filters.TypedChoiceFilter):
    """A boolean parameter that accepts only `true`/`false`; anything else is a 400 naming it."""


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
class IdFilter(django_filters.NumberFilter):
    """A positive integer id; anything else is a 400 naming the parameter."""


@extend_schema_field({"type": "string"})
class TextFilter(django_filters.CharFilter):
    """A text parameter (for filters that run a method, whose type the schema cannot infer)."""


def boolean_filter(**kwargs) -> TrueFalseFilter:
    return TrueFalseFilter(choices=BOOLEAN_CHOICES, coerce=lambda value: value == "true", **kwargs)


class ProjectFilter(django_filters.FilterSet):
    phase = django_filters.ChoiceFilter(choices=AusbauProject.Phase.choices)
    opportunity_status = django_filters.CharFilter(field_name="opportunity__status")
    tag = django_filters.CharFilter(method="filter_tag", help_text="Projects whose opportunity carries this tag")
    has_running_workflow = boolean_filter()
    updated_since = UtcDateTimeFilter(field_name="updated_at", lookup_expr="gte",
                                                     help_text="ISO 8601 with time zone, e.g. 2026-11-01T00:00:00+01:00")

    class Meta:
        model = AusbauProject
        fields = ["phase", "opportunity_status", "tag", "has_running_workflow", "updated_since"]

    def filter_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(tags__contains=f",{value},")


class OpportunityFilter(django_filters.FilterSet):
    status = django_filters.CharFilter()
    updated_since = UtcDateTimeFilter(field_name="epilot_updated_at", lookup_expr="gte")
    deleted = boolean_filter(field_name="epilot_deleted_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Opportunity
        fields = ["status", "updated_since", "deleted"]


class OrderFilter(django_filters.FilterSet):
    status = django_filters.CharFilter()
    opportunity = django_filters.CharFilter(field_name="opportunity_epilot_id", help_text="epilot id of the opportunity")
    updated_since = UtcDateTimeFilter(field_name="epilot_updated_at", lookup_expr="gte")
    deleted = boolean_filter(field_name="epilot_deleted_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Order
        fields = ["status", "opportunity", "updated_since", "deleted"]


class WorkflowExecutionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=[("STARTED", "STARTED"), ("DONE", "DONE"), ("CLOSED", "CLOSED")])
    entity_schema = django_filters.CharFilter()
    entity = django_filters.CharFilter(field_name="entity_epilot_id", help_text="epilot id of the entity")
    definition = django_filters.CharFilter(field_name="definition_epilot_id")
    updated_since = UtcDateTimeFilter(field_name="synced_at", lookup_expr="gte")

    class Meta:
        model = WorkflowExecution
        fields = ["status", "entity_schema", "entity", "definition", "updated_since"]


class TaskFilter(django_filters.FilterSet):
    assignee = TextFilter(method="filter_assignee", help_text="epilot user id; 'none' for unassigned steps")
    section = django_filters.CharFilter()
    status = django_filters.CharFilter(help_text="epilot's step status; without it only open steps are listed")
    overdue = boolean_filter(method="filter_overdue")
    due_before = UtcDateTimeFilter(field_name="due_date", lookup_expr="lt")
    project = IdFilter(method="filter_project", help_text="id of an Ausbau project")
    execution = django_filters.CharFilter(field_name="execution__epilot_id", help_text="epilot id of the execution")

    class Meta:
        model = MirroredStep
        fields = ["assignee", "section", "status", "overdue", "due_before", "project", "execution"]

    def filter_assignee(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(assignees="") if value == "none" else queryset.filter(assignees__contains=f",{value},")

    def filter_overdue(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        late = Q(due_date__lt=timezone.now())
        return queryset.filter(late) if value else queryset.exclude(late)

    def filter_project(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        if value != int(value) or not 1 <= value <= 2**63 - 1:
            raise ValidationError({"project": ["A project id is a positive whole number."]})
        value = int(value)
        return queryset.filter(Q(execution__opportunity__project__id=value) | Q(execution__order__opportunity__project__id=value))
