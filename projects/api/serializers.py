"""Output shapes of the REST API (read-only; writes take small input serializers)."""
from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from projects.formatting import portal_url
from projects.models import AusbauProject, MirroredStep, Opportunity, Order, WorkflowExecution


class StepSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="epilot's step (V1) or task (V2) id")
    section = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    status = serializers.CharField(allow_null=True)
    assigned_to = serializers.ListField(child=serializers.CharField())
    due_date = serializers.DateTimeField(allow_null=True)


class WorkflowExecutionSerializer(serializers.ModelSerializer):
    definition_epilot_id = serializers.CharField()
    progress_percent = serializers.IntegerField(min_value=0, max_value=100)
    # Declared, so that the schema does not depend on the database's integer ranges.
    completed_steps = serializers.IntegerField(min_value=0)
    total_steps = serializers.IntegerField(min_value=0)
    steps = serializers.SerializerMethodField()
    entity_portal_url = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowExecution
        fields = [
            "id",
            "epilot_id",
            "engine",
            "name",
            "definition_epilot_id",
            "entity_schema",
            "entity_epilot_id",
            "entity_portal_url",
            "status",
            "current_section",
            "current_step",
            "completed_steps",
            "total_steps",
            "progress_percent",
            "steps",
            "started_at",
            "completed_at",
            "synced_at",
        ]

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, obj: WorkflowExecution) -> list[dict[str, Any]]:
        return [{"id": step.epilot_id, "section": step.section or None, "name": step.name, "status": step.status or None,
                 "assigned_to": step.assigned_to, "due_date": step.due_date} for step in obj.steps.all()]

    def get_entity_portal_url(self, obj: WorkflowExecution) -> str:
        return portal_url(obj.entity_schema, obj.entity_epilot_id)


class WorkflowExecutionListSerializer(WorkflowExecutionSerializer):
    class Meta(WorkflowExecutionSerializer.Meta):
        fields = [name for name in WorkflowExecutionSerializer.Meta.fields if name != "steps"]


class OrderSerializer(serializers.ModelSerializer):
    opportunity_epilot_id = serializers.CharField()
    portal_url = serializers.SerializerMethodField()
    deleted = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = ["id", "epilot_id", "title", "status", "amount_total", "currency", "opportunity_epilot_id", "tags", "deleted",
                  "portal_url", "epilot_updated_at", "synced_at"]

    def get_portal_url(self, obj: Order) -> str:
        return portal_url("order", obj.epilot_id)

    def get_deleted(self, obj: Order) -> bool:
        return obj.epilot_deleted_at is not None


class OpportunitySerializer(serializers.ModelSerializer):
    customer = serializers.SerializerMethodField()
    address = serializers.CharField()
    portal_url = serializers.SerializerMethodField()
    deleted = serializers.SerializerMethodField()

    class Meta:
        model = Opportunity
        fields = ["id", "epilot_id", "title", "status", "customer", "street", "postal_code", "city", "address", "budget", "tags",
                  "deleted", "portal_url", "epilot_updated_at", "synced_at"]

    def get_customer(self, obj: Opportunity) -> str | None:
        return obj.customer.title if obj.customer else None

    def get_portal_url(self, obj: Opportunity) -> str:
        return portal_url("opportunity", obj.epilot_id)

    def get_deleted(self, obj: Opportunity) -> bool:
        return obj.epilot_deleted_at is not None


class ProjectStatusSerializer(serializers.ModelSerializer):
    """The compact document consumers poll."""

    progress_percent = serializers.IntegerField(min_value=0, max_value=100)

    class Meta:
        model = AusbauProject
        fields = ["id", "phase", "progress_percent", "current_section", "current_step", "updated_at"]


class ProjectListSerializer(serializers.ModelSerializer):
    epilot_id = serializers.CharField(source="opportunity.epilot_id")
    opportunity_status = serializers.CharField(source="opportunity.status")
    address = serializers.CharField(source="opportunity.address")
    tags = serializers.ListField(source="opportunity.tags", child=serializers.CharField())
    portal_url = serializers.SerializerMethodField()
    progress_percent = serializers.IntegerField(min_value=0, max_value=100)

    class Meta:
        model = AusbauProject
        fields = ["id", "epilot_id", "title", "phase", "progress_percent", "current_section", "current_step", "budget",
                  "has_running_workflow", "opportunity_status", "address", "tags", "portal_url", "updated_at"]

    def get_portal_url(self, obj: AusbauProject) -> str:
        return portal_url("opportunity", obj.opportunity.epilot_id)


LOCAL_TIME = ZoneInfo(settings.TIME_ZONE)


class FastProjectListSerializer(ProjectListSerializer):
    """The same document as ProjectListSerializer, built from `.values()` rows (the list is what tools poll)."""

    VALUES = ["id", "title", "phase", "progress_percent", "current_section", "current_step", "budget", "has_running_workflow",
              "updated_at", "opportunity__epilot_id", "opportunity__status", "opportunity__street", "opportunity__postal_code",
              "opportunity__city", "opportunity__tags"]

    def to_representation(self, row: dict[str, Any]) -> dict[str, Any]:
        epilot_id = row["opportunity__epilot_id"]
        place = f"{row['opportunity__postal_code']} {row['opportunity__city']}".strip()
        return {
            "id": row["id"],
            "epilot_id": epilot_id,
            "title": row["title"],
            "phase": row["phase"],
            "progress_percent": row["progress_percent"],
            "current_section": row["current_section"],
            "current_step": row["current_step"],
            "budget": None if row["budget"] is None else f"{row['budget']:.2f}",
            "has_running_workflow": row["has_running_workflow"],
            "opportunity_status": row["opportunity__status"],
            "address": ", ".join(part for part in (row["opportunity__street"], place) if part),
            "tags": list(row["opportunity__tags"] or []),
            "portal_url": portal_url("opportunity", epilot_id),
            "updated_at": row["updated_at"].astimezone(LOCAL_TIME).isoformat(),
        }


class ProjectDetailSerializer(ProjectListSerializer):
    opportunity = OpportunitySerializer()
    orders = serializers.SerializerMethodField()
    workflow_executions = serializers.SerializerMethodField()
    last_synced_at = serializers.DateTimeField(source="opportunity.synced_at")

    class Meta(ProjectListSerializer.Meta):
        fields = [*ProjectListSerializer.Meta.fields, "opportunity", "orders", "workflow_executions", "last_synced_at"]

    @extend_schema_field(OrderSerializer(many=True))
    def get_orders(self, obj: AusbauProject) -> list[dict[str, Any]]:
        return OrderSerializer(obj.opportunity.orders.all(), many=True).data

    @extend_schema_field(WorkflowExecutionSerializer(many=True))
    def get_workflow_executions(self, obj: AusbauProject) -> list[dict[str, Any]]:
        executions = list(obj.opportunity.executions.all()) + [
            e for order in obj.opportunity.orders.all() for e in order.executions.all()
        ]
        executions.sort(key=lambda e: (e.started_at is None, e.started_at), reverse=True)
        return WorkflowExecutionSerializer(executions, many=True).data


class StartWorkflowInput(serializers.Serializer):
    definition = serializers.CharField(help_text="epilot id of a V1 definition or V2 flow template, e.g. wfQpwhJF6J")
    target = serializers.ChoiceField(choices=["opportunity", "order"], default="opportunity",
                                     help_text="Start on the opportunity, or on the project's (single) order")
    allow_duplicate = serializers.BooleanField(default=False)


class ConvertInput(serializers.Serializer):
    definition = serializers.CharField(required=False, help_text="Workflow to start on the order (default: Ausbau Glasfaser)")
    # epilot stores numbers as JavaScript does: above 2**53 - 1 cents a total would lose precision there.
    amount_total = serializers.IntegerField(required=False, min_value=0, max_value=2**53 - 1,
                                            help_text="Order total in cents (default: the budget)")


class ActionResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    execution_epilot_id = serializers.CharField(allow_blank=True)
    order_epilot_id = serializers.CharField(allow_blank=True, required=False)
    message = serializers.CharField()


class TaskSerializer(serializers.ModelSerializer):
    """An open or finished step of a mirrored execution, with where it belongs."""

    step_id = serializers.CharField(source="epilot_id", help_text="epilot's step (V1) or task (V2) id")
    execution_id = serializers.CharField(source="execution.epilot_id", help_text="epilot id of the execution")
    workflow = serializers.CharField(source="execution.name")
    engine = serializers.CharField(source="execution.engine")
    entity_schema = serializers.CharField(source="execution.entity_schema")
    entity_epilot_id = serializers.CharField(source="execution.entity_epilot_id")
    project = serializers.IntegerField(source="project_id", allow_null=True, read_only=True,
                                       help_text="id of the Ausbau project the execution's entity belongs to")
    assigned_to = serializers.ListField(child=serializers.CharField())
    position = serializers.IntegerField(min_value=0)
    overdue = serializers.SerializerMethodField()

    class Meta:
        model = MirroredStep
        fields = ["id", "step_id", "execution_id", "workflow", "engine", "entity_schema", "entity_epilot_id", "project",
                  "section", "position", "name", "status", "enabled", "assigned_to", "due_date", "overdue", "completed_at",
                  "synced_at"]

    def get_overdue(self, obj: MirroredStep) -> bool:
        return bool(obj.is_open and obj.due_date and obj.due_date < self.context["now"])


STEP_STATUSES = ["PENDING", "IN_PROGRESS", "COMPLETED", "SKIPPED", "SCHEDULED", "CONDITION_PENDING", "WAITING_FOR_CONFIRMATION",
                 "ON_HOLD", "FAILED", "UNASSIGNED", "ASSIGNED"]


def text(**kwargs: Any) -> serializers.RegexField:
    """A text input without NUL characters, and a schema that says so (PostgreSQL cannot store them)."""
    return serializers.RegexField(r"^[^\x00]*$", trim_whitespace=False, **kwargs)


def epilot_id(**kwargs: Any) -> serializers.RegexField:
    """An id as epilot writes them: 1 to 64 characters, no spaces."""
    return serializers.RegexField(r"^[^\x00 \t\r\n\f\v]{1,64}$", trim_whitespace=False, max_length=64, **kwargs)


class StepCompleteInput(serializers.Serializer):
    if_status = serializers.ChoiceField(choices=STEP_STATUSES, required=False,
                                        help_text="The step's status as the caller saw it; 409 when epilot's differs now")


class StepUpdateInput(serializers.Serializer):
    assigned_to = serializers.ListField(child=epilot_id(), required=False, max_length=50,
                                        help_text="epilot user ids; they replace the current assignees ([] unassigns)")
    due_date = serializers.DateTimeField(required=False, allow_null=True, help_text="ISO 8601; null clears it")
    if_status = serializers.ChoiceField(choices=STEP_STATUSES, required=False)


class ExecutionCloseInput(serializers.Serializer):
    closing_reasons = serializers.ListField(child=epilot_id(), required=False, default=list, max_length=20,
                                            help_text="ids of epilot's closing reasons for this execution")
    description = text(required=False, default="", allow_blank=True, max_length=2000)


class StepResultSerializer(serializers.Serializer):
    changed = serializers.BooleanField(help_text="false when epilot already had what was asked")
    task = TaskSerializer(allow_null=True)


class AreaForecastSerializer(serializers.Serializer):
    signed_per_day = serializers.FloatField(allow_null=True, help_text="units signed per day over the last 14 days")
    spread_per_day = serializers.FloatField(allow_null=True)
    needed_per_day = serializers.FloatField(allow_null=True, help_text="to reach the quota by the deadline")
    quota_reached_on = serializers.DateField(allow_null=True, help_text="at the current rate")
    earliest = serializers.DateField(allow_null=True)
    latest = serializers.DateField(allow_null=True)


class AreaPatchInput(serializers.Serializer):
    campaign_start = serializers.DateField(required=False)
    quota_percent = serializers.DecimalField(max_digits=4, decimal_places=1, min_value=1, max_value=100, required=False)
    deadline = serializers.DateField(required=False)


class QuotaChangeInput(serializers.Serializer):
    quota_percent = serializers.DecimalField(max_digits=4, decimal_places=1, min_value=1, max_value=100, required=False,
                                             allow_null=True, default=None)
    deadline = serializers.DateField(required=False, allow_null=True, default=None)
    reason = serializers.CharField(max_length=2000)


class QuotaChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    area = serializers.IntegerField(source="area_id")
    quota_percent = serializers.DecimalField(max_digits=4, decimal_places=1, allow_null=True)
    deadline = serializers.DateField(allow_null=True)
    reason = serializers.CharField()
    status = serializers.CharField()
    proposed_by_name = serializers.CharField()
    proposed_at = serializers.DateTimeField()


class AreaSerializer(serializers.Serializer):
    """A rollout area with the figures the rollout is steered by (these names are the contract)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    units_in_scope = serializers.IntegerField(min_value=0)
    addresses_in_scope = serializers.IntegerField(min_value=0)
    units_signed = serializers.IntegerField(min_value=0)
    take_up_percent = serializers.FloatField(help_text="100 × signed / in scope, one decimal")
    quota_percent = serializers.FloatField()
    units_missing_for_quota = serializers.IntegerField(min_value=0)
    deadline = serializers.DateField(allow_null=True)
    days_left = serializers.IntegerField(allow_null=True)
    units_connected = serializers.IntegerField(min_value=0, help_text="units of buildings that reached the funnel's "
                                               "`connected` milestone (a completed project while no rule marks it)")
    projects_by_phase = serializers.DictField(child=serializers.IntegerField(min_value=0))
    figures_at = serializers.DateTimeField(allow_null=True)
    campaign_start = serializers.DateField(allow_null=True, help_text="from this day on the quota and deadline are fixed")
    public_gauge_url = serializers.CharField(help_text="the public gauge (HTML; gauge.svg and gauge.json beside it); "
                                                       "empty until a token is made")
    forecast = AreaForecastSerializer()


class AreaAddressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    postal_code = serializers.CharField()
    street = serializers.CharField()
    house_number = serializers.CharField()
    units = serializers.IntegerField(min_value=1)
    signed = serializers.BooleanField()


class NewAttributeSerializer(serializers.Serializer):
    name = serializers.CharField()
    first_seen = serializers.DateTimeField()
    entities = serializers.IntegerField(help_text="live mirrored entities that carry it")


class ChangedAttributeSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField(help_text="JSON type now: string, number, boolean, array, object")
    previous_kind = serializers.CharField()
    changed_at = serializers.DateTimeField()


class SchemaSyncStatusSerializer(serializers.Serializer):
    schema = serializers.CharField()
    epilot_count = serializers.IntegerField(allow_null=True, help_text="live entities in epilot at the last reconciliation")
    mirror_count = serializers.IntegerField(help_text="live entities in the mirror now (not tombstones)")
    last_reconciled_at = serializers.DateTimeField(allow_null=True)
    deleted_found = serializers.IntegerField(help_text="purged in epilot, marked deleted by the last reconciliation")
    missing_found = serializers.IntegerField(help_text="missing in the mirror, fetched by the last reconciliation")
    newer_found = serializers.IntegerField()
    webhook_gaps = serializers.IntegerField(help_text="changes the last reconciliation found that no webhook delivered")
    last_full_sync_at = serializers.DateTimeField(allow_null=True)
    last_webhook_at = serializers.DateTimeField(allow_null=True)
    quarantined = serializers.IntegerField()
    executions_waiting = serializers.IntegerField()
    new_attributes = NewAttributeSerializer(many=True)
    changed_attributes = ChangedAttributeSerializer(many=True)
    alert = serializers.BooleanField(help_text="counts differ after a reconciliation, or epilot suddenly reported none")


class SyncStatusSerializer(serializers.Serializer):
    schemas = SchemaSyncStatusSerializer(many=True)


STAGE_KEYS = ["in_scope", "signed", "passed", "connected", "activated"]
STUCK_KEYS = ["signed_not_passed", "passed_not_connected", "connected_not_activated"]


class FunnelStageSerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=STAGE_KEYS)
    buildings = serializers.IntegerField(min_value=0, help_text="buildings that reached this stage, whatever came after")
    units = serializers.IntegerField(min_value=0, help_text="their units (Wohneinheiten)")
    conversion_percent = serializers.FloatField(allow_null=True, help_text="buildings here per building of the stage before")


class FunnelSerializer(serializers.Serializer):
    """A rollout area's funnel from in scope to activated."""

    stages = FunnelStageSerializer(many=True)
    stuck = serializers.DictField(child=serializers.IntegerField(min_value=0),
                                  help_text="buildings at a stage longer than allowed, by " + ", ".join(STUCK_KEYS))
    stuck_after_days = serializers.DictField(child=serializers.IntegerField(min_value=1))


class BuildingSerializer(serializers.Serializer):
    """A building in scope of an area: its address, units, furthest stage and the date of each milestone."""

    id = serializers.IntegerField()
    area = serializers.IntegerField(source="area_id")
    postal_code = serializers.CharField()
    street = serializers.CharField()
    house_number = serializers.CharField()
    units = serializers.IntegerField(min_value=1)
    stage = serializers.ChoiceField(choices=STAGE_KEYS)
    signed_at = serializers.DateTimeField(allow_null=True)
    passed_at = serializers.DateTimeField(allow_null=True)
    connected_at = serializers.DateTimeField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)
    days_at_stage = serializers.IntegerField(allow_null=True, help_text="days since the building reached its stage")
    stuck = serializers.BooleanField()
    waiting_on = serializers.CharField(help_text="the open step of a running workflow at the building")
    latitude = serializers.FloatField(allow_null=True)
    longitude = serializers.FloatField(allow_null=True)


class MilestoneRuleSerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=["passed", "connected", "activated"])
    definition = serializers.CharField(max_length=64, allow_blank=True, required=False, default="",
                                       help_text="epilot workflow definition (V1) or flow template (V2) id; empty: any")
    step = serializers.CharField(max_length=300, help_text="the step's or task's name as epilot shows it")


class MilestonesSerializer(serializers.Serializer):
    """The milestone rules: a milestone is reached when any of its rules' steps is COMPLETED."""

    milestones = MilestoneRuleSerializer(many=True, max_length=200)
    stuck_after_days = serializers.DictField(child=serializers.IntegerField(min_value=1, max_value=3650), required=False,
                                             help_text="days at a stage before a building counts as stuck, by "
                                                       + ", ".join(STUCK_KEYS))
