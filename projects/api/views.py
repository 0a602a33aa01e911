"""REST API views: read-only viewsets over the mirror, and two writing actions that call the admin's services."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import http_date, parse_http_date_safe
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, filters, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from projects.api import serializers as s
from projects.api.filters import OpportunityFilter, OrderFilter, ProjectFilter, TaskFilter, WorkflowExecutionFilter
from projects.api.renderers import AddressCsvRenderer, BuildingCsvRenderer
from projects.models import (
    AusbauProject,
    MirroredStep,
    Opportunity,
    Order,
    RolloutArea,
    WorkflowDefinition,
    WorkflowExecution,
)
from projects.selectors import area_figures, definition_by_epilot_id, sync_status, tasks_with_project, unsigned_addresses
from projects.services.campaign import area_forecast, area_terms_change, quota_change_propose
from projects.services.conversion import opportunity_convert
from projects.services.funnel import (
    RulesRejected,
    area_funnel,
    building_age_days,
    buildings_of,
    is_stuck,
    milestone_rules_replace,
    stuck_after_days,
)
from projects.services.milestones import milestone_rules
from projects.services.steps import ASSIGN, COMPLETE, SET_DUE, StepChange, StepResult, execution_close, step_change
from projects.services.workflows import project_workflow_target, workflow_start
from projects.validation import parse_id


class StrictOrderingFilter(filters.OrderingFilter):
    """Like OrderingFilter, but an unknown field is a 400 instead of being ignored."""

    def get_ordering(self, request: Request, queryset: QuerySet, view: Any) -> list[str]:
        raw = request.query_params.get(self.ordering_param)
        if raw:
            allowed = {field for field, _ in self.get_valid_fields(queryset, view, {"request": request})}
            wrong = [term for term in raw.split(",") if term.strip().lstrip("-") not in allowed]
            if wrong or "," in raw:
                raise exceptions.ValidationError({self.ordering_param: [f"Order by one of: {', '.join(sorted(allowed))} "
                                                                        "(prefix '-' for descending)."]})
        return super().get_ordering(request, queryset, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        fields = getattr(view, "ordering_fields", [])
        for parameter in parameters:
            if parameter["name"] == self.ordering_param:
                parameter["schema"]["enum"] = [*fields, *(f"-{field}" for field in fields)]
        return parameters


class QueryFilterBackend(DjangoFilterBackend):
    """django-filter, skipped when the request names none of its parameters (the common polling case)."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filterset_class = getattr(view, "filterset_class", None)
        if filterset_class is not None and not any(name in request.query_params for name in filterset_class.base_filters):
            return queryset
        return super().filter_queryset(request, queryset, view)


class MirrorViewSet(viewsets.ReadOnlyModelViewSet):
    filter_backends = [QueryFilterBackend, filters.SearchFilter, StrictOrderingFilter]
    ordering = ["id"]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # API messages are English whatever the admin's language; override() restores the thread's language after.
        with translation.override("en"):
            return super().dispatch(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(summary="List Ausbau projects", responses={200: s.ProjectListSerializer(many=True)},
                       description="Cursor-paginated; the default order by id walks every project once even while data changes."),
    retrieve=extend_schema(
        summary="One project with opportunity, orders and workflows", responses={200: s.ProjectDetailSerializer}
    ),
)
class ProjectViewSet(MirrorViewSet):
    """Ausbau projects: one per opportunity in scope, with phase and workflow progress."""

    filterset_class = ProjectFilter
    search_fields = ["title", "opportunity__street", "opportunity__city", "opportunity__postal_code"]
    ordering_fields = ["id", "updated_at", "progress_percent", "title"]
    required_scopes = {"start_workflow": "workflows", "convert": "workflows"}

    def get_queryset(self) -> QuerySet:
        queryset = AusbauProject.objects.select_related("opportunity")
        if self.action == "list":
            # Plain rows, no model instances and no payloads: the list is what tools poll.
            return AusbauProject.objects.values(*s.FastProjectListSerializer.VALUES)
        if self.action == "retrieve":
            queryset = queryset.select_related("opportunity__customer").prefetch_related(
                Prefetch("opportunity__orders", queryset=Order.objects.order_by("id").prefetch_related("executions__steps")),
                "opportunity__executions__steps")
        return queryset

    def get_serializer_class(self) -> type:
        return s.ProjectDetailSerializer if self.action == "retrieve" else s.FastProjectListSerializer

    @extend_schema(summary="Compact status for polling", responses={200: s.ProjectStatusSerializer, 304: None},
                   parameters=[OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
                               OpenApiParameter("If-Modified-Since", OpenApiTypes.STR, OpenApiParameter.HEADER)],
                   examples=[OpenApiExample("In Bau", response_only=True, value={
                       "id": 7, "phase": "construction", "progress_percent": 38, "current_section": "Tiefbau",
                       "current_step": "Tiefbau durchführen", "updated_at": "2026-11-20T14:03:11.120000+01:00"})])
    @action(detail=True, methods=["get"], url_path="status", filter_backends=[], pagination_class=None)
    def status_document(self, request: Request, pk: str | None = None) -> Response:
        fields = s.ProjectStatusSerializer.Meta.fields
        project_id = parse_id(pk)
        row = AusbauProject.objects.filter(pk=project_id).values(*fields).first() if project_id else None
        if row is None:
            raise exceptions.NotFound("No project with this id.")
        data = {**row, "updated_at": timezone.localtime(row["updated_at"]).isoformat()}
        etag = '"' + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32] + '"'
        last_modified = int(row["updated_at"].timestamp())
        headers = {"ETag": etag, "Last-Modified": http_date(last_modified), "Cache-Control": "no-cache"}
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            if if_none_match.strip() == "*" or etag in [tag.strip() for tag in if_none_match.split(",")]:
                return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        else:
            since = parse_http_date_safe(request.headers.get("If-Modified-Since", ""))
            if since is not None and last_modified <= since:
                return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(data, headers=headers)

    @extend_schema(summary="Start a workflow on the project's opportunity or order (scope: workflows)",
                   request=s.StartWorkflowInput,
                   responses={201: s.ActionResultSerializer, 404: OpenApiResponse(description="No such project or definition"),
                              409: OpenApiResponse(description="Already running or in progress"),
                              502: OpenApiResponse(description="epilot refused or failed")})
    @action(detail=True, methods=["post"], url_path="start-workflow", filter_backends=[], pagination_class=None)
    def start_workflow(self, request: Request, pk: str | None = None) -> Response:
        project = self.get_object()
        payload = s.StartWorkflowInput(data=request.data)
        payload.is_valid(raise_exception=True)
        definition = self._definition(payload.validated_data["definition"])
        target = project_workflow_target(project, payload.validated_data["target"])
        start = workflow_start(definition=definition, schema=target[0], entity_id=target[1], entity_title=target[2],
                               actor=f"api:{request.auth.name}", allow_duplicate=payload.validated_data["allow_duplicate"])
        return Response({"status": start.status, "execution_epilot_id": start.execution_epilot_id,
                         "message": f"'{definition.name}' started on {target[0]} {target[2]}."}, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Convert the project's opportunity into an order (scope: workflows)", request=s.ConvertInput,
                   responses={201: s.ActionResultSerializer, 404: OpenApiResponse(description="No such project or definition"),
                              409: OpenApiResponse(description="Not allowed or in progress"),
                              502: OpenApiResponse(description="A step failed in epilot; calling again resumes it")})
    @action(detail=True, methods=["post"], url_path="convert", filter_backends=[], pagination_class=None)
    def convert(self, request: Request, pk: str | None = None) -> Response:
        project = self.get_object()
        payload = s.ConvertInput(data=request.data)
        payload.is_valid(raise_exception=True)
        definition = self._definition(payload.validated_data.get("definition") or settings.DEFAULT_WORKFLOW_DEFINITION)
        conversion = opportunity_convert(opportunity=project.opportunity, definition=definition,
                                         amount_total=payload.validated_data.get("amount_total"),
                                         actor=f"api:{request.auth.name}")
        return Response({"status": conversion.status, "execution_epilot_id": conversion.execution_epilot_id,
                         "order_epilot_id": conversion.order_epilot_id, "message": f"Converted into '{conversion.order_title}'."},
                        status=status.HTTP_201_CREATED)

    @staticmethod
    def _definition(epilot_id: str) -> WorkflowDefinition:
        definition = definition_by_epilot_id(epilot_id)
        if definition is None:
            # The body names a resource that does not exist: 404, as for an unknown project in the path.
            raise exceptions.NotFound(f"Unknown workflow definition {epilot_id!r}.")
        return definition


@extend_schema_view(list=extend_schema(summary="List opportunities", responses={200: s.OpportunitySerializer(many=True)}),
                    retrieve=extend_schema(summary="One opportunity"))
class OpportunityViewSet(MirrorViewSet):
    queryset = Opportunity.objects.select_related("customer")
    serializer_class = s.OpportunitySerializer
    filterset_class = OpportunityFilter
    search_fields = ["title", "street", "city", "postal_code"]
    ordering_fields = ["id", "epilot_updated_at", "title"]


@extend_schema_view(list=extend_schema(summary="List orders", responses={200: s.OrderSerializer(many=True)}),
                    retrieve=extend_schema(summary="One order"))
class OrderViewSet(MirrorViewSet):
    queryset = Order.objects.all()
    serializer_class = s.OrderSerializer
    filterset_class = OrderFilter
    search_fields = ["title"]
    ordering_fields = ["id", "epilot_updated_at", "amount_total"]


@extend_schema_view(list=extend_schema(summary="List workflow executions",
                                       responses={200: s.WorkflowExecutionListSerializer(many=True)}),
                    retrieve=extend_schema(summary="One workflow execution with its steps"))
class WorkflowExecutionViewSet(MirrorViewSet):
    queryset = WorkflowExecution.objects.all()
    filterset_class = WorkflowExecutionFilter
    search_fields = ["name"]
    ordering_fields = ["id", "started_at"]

    def get_serializer_class(self) -> type:
        return s.WorkflowExecutionSerializer if self.action == "retrieve" else s.WorkflowExecutionListSerializer

    def get_queryset(self) -> QuerySet:
        if self.action == "list":
            return WorkflowExecution.objects.defer("flow")
        return WorkflowExecution.objects.prefetch_related("steps")


@extend_schema_view(
    list=extend_schema(summary="List workflow steps (the task inbox)", responses={200: s.TaskSerializer(many=True)},
                       description="Open steps of running executions unless `status` is given; cursor-paginated by id."),
    retrieve=extend_schema(summary="One workflow step", responses={200: s.TaskSerializer}),
)
class TaskViewSet(MirrorViewSet):
    """Steps (V1) and tasks (V2) of mirrored executions, one vocabulary for both."""

    serializer_class = s.TaskSerializer
    filterset_class = TaskFilter
    search_fields = ["name", "section", "execution__name"]
    ordering_fields = ["id"]

    def get_queryset(self) -> QuerySet:
        queryset = tasks_with_project()
        if self.action == "list" and "status" not in self.request.query_params:
            queryset = queryset.filter(execution__status="STARTED", enabled=True).exclude(
                status__in=MirroredStep.DONE_STATUSES)
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "now": timezone.now()}


class WriteView(APIView):
    """A writing endpoint: its scope in `default_scope`, answers in English, errors in the one error document."""

    default_scope = "steps"

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        with translation.override("en"):
            return super().dispatch(request, *args, **kwargs)

    def actor(self, request: Request) -> str:
        return f"api:{request.auth.name}"

    @staticmethod
    def task_document(request: Request, result: StepResult) -> dict[str, Any]:
        step = tasks_with_project().filter(pk=result.step.pk).first() if result.step else None
        context = {"request": request, "now": timezone.now()}
        return {"changed": result.changed, "task": s.TaskSerializer(step, context=context).data if step else None}


class StepCompleteView(WriteView):
    @extend_schema(summary="Complete a step in epilot (scope: steps)", request=s.StepCompleteInput,
                   responses={200: s.StepResultSerializer, 404: OpenApiResponse(description="No such execution or step"),
                              409: OpenApiResponse(description="The step's status is not `if_status`, or the workflow ended"),
                              502: OpenApiResponse(description="epilot failed; nothing changed")})
    def post(self, request: Request, execution_id: str, step_id: str) -> Response:
        payload = s.StepCompleteInput(data=request.data)
        payload.is_valid(raise_exception=True)
        result = step_change(execution_epilot_id=execution_id, step_epilot_id=step_id, actor=self.actor(request),
                             change=StepChange(operation=COMPLETE, expected_status=payload.validated_data.get("if_status")))
        return Response(self.task_document(request, result))


class StepUpdateView(WriteView):
    @extend_schema(summary="Assign a step or set its due date in epilot (scope: steps)", request=s.StepUpdateInput,
                   description="Fields left out stay as they are; a body with neither changes nothing.",
                   responses={200: s.StepResultSerializer, 404: OpenApiResponse(description="No such execution or step"),
                              409: OpenApiResponse(description="The step's status is not `if_status`, or the workflow ended"),
                              502: OpenApiResponse(description="epilot failed")})
    def patch(self, request: Request, execution_id: str, step_id: str) -> Response:
        payload = s.StepUpdateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = StepResult(None, MirroredStep.objects.filter(execution__epilot_id=execution_id, epilot_id=step_id).first(),
                            changed=False)
        if result.step is None and not ({"assigned_to", "due_date"} & set(data)):
            raise exceptions.NotFound("No such step of this workflow execution in the mirror.")
        changed = False
        if "assigned_to" in data:
            result = step_change(execution_epilot_id=execution_id, step_epilot_id=step_id, actor=self.actor(request),
                                 change=StepChange(operation=ASSIGN, assignees=tuple(data["assigned_to"]),
                                                   expected_status=data.get("if_status")))
            changed = result.changed
        if "due_date" in data:
            result = step_change(execution_epilot_id=execution_id, step_epilot_id=step_id, actor=self.actor(request),
                                 change=StepChange(operation=SET_DUE, due_date=data["due_date"],
                                                   expected_status=data.get("if_status")))
            changed = changed or result.changed
        return Response(self.task_document(request, StepResult(result.execution, result.step, changed)))


class ExecutionCloseView(WriteView):
    default_scope = "workflows"

    @extend_schema(summary="Close (cancel) a running workflow execution in epilot (scope: workflows)",
                   request=s.ExecutionCloseInput,
                   responses={200: s.WorkflowExecutionSerializer, 404: OpenApiResponse(description="No such execution"),
                              409: OpenApiResponse(description="Not running any more, or a reason epilot does not offer"),
                              502: OpenApiResponse(description="epilot failed")})
    def post(self, request: Request, execution_id: str) -> Response:
        payload = s.ExecutionCloseInput(data=request.data)
        payload.is_valid(raise_exception=True)
        execution = execution_close(execution_epilot_id=execution_id, reason_ids=payload.validated_data["closing_reasons"],
                                    description=payload.validated_data["description"], actor=self.actor(request))
        return Response(s.WorkflowExecutionSerializer(execution, context={"request": request}).data)


def area_document(area: RolloutArea, request: Request | None = None) -> dict[str, Any]:
    forecast = area_forecast(area)
    gauge = reverse("public-gauge", args=[area.public_token]) if area.public_token else ""
    return {"id": area.pk, "name": area.name, **area_figures(area), "figures_at": area.figures_at,
            "campaign_start": area.campaign_start,
            "public_gauge_url": request.build_absolute_uri(gauge) if gauge and request is not None else gauge,
            "forecast": {"signed_per_day": forecast.rate_per_day, "spread_per_day": forecast.spread_per_day,
                         "needed_per_day": forecast.needed_per_day, "quota_reached_on": forecast.reached_on,
                         "earliest": forecast.earliest, "latest": forecast.latest}}


@extend_schema_view(
    list=extend_schema(summary="List rollout areas with their figures", responses={200: s.AreaSerializer(many=True)}),
    retrieve=extend_schema(summary="One rollout area with its figures", responses={200: s.AreaSerializer}),
)
class AreaViewSet(MirrorViewSet):
    """Rollout areas (Ausbaugebiete): households in scope, take-up against the quota, build progress (scope: areas)."""

    default_scope = "areas"  # addresses of households: not for every reading tool

    queryset = RolloutArea.objects.all()
    serializer_class = s.AreaSerializer
    filter_backends = [StrictOrderingFilter]
    ordering_fields = ["id"]

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([area_document(area, request) for area in page])

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(area_document(self._area(kwargs.get("pk")), request))

    @extend_schema(summary="Start the campaign, or set quota and deadline before it started (scope: configuration)",
                   request=s.AreaPatchInput,
                   responses={200: s.AreaSerializer, 409: OpenApiResponse(description="The campaign started: quota and "
                                                                         "deadline change by a proposal (quota-changes)")})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        payload = s.AreaPatchInput(data=request.data)
        payload.is_valid(raise_exception=True)
        area = area_terms_change(self._area(pk), **payload.validated_data)
        return Response(area_document(area, request))

    @extend_schema(summary="Propose a change of a started campaign's quota or deadline for another person to approve "
                           "in the admin (scope: configuration)",
                   request=s.QuotaChangeInput, responses={201: s.QuotaChangeSerializer})
    @action(detail=True, methods=["post"], url_path="quota-changes", filter_backends=[], pagination_class=None)
    def quota_changes(self, request: Request, pk: str | None = None) -> Response:
        payload = s.QuotaChangeInput(data=request.data)
        payload.is_valid(raise_exception=True)
        change = quota_change_propose(self._area(pk), actor=f"api:{request.auth.name}", **payload.validated_data)
        return Response(s.QuotaChangeSerializer(change).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _area(pk: str | None) -> RolloutArea:
        """The area named in the path; raises NotFound."""
        area_id = parse_id(pk)
        area = RolloutArea.objects.filter(pk=area_id).first() if area_id else None
        if area is None:
            raise exceptions.NotFound("No rollout area with this id.")
        return area

    @extend_schema(summary="The area's addresses in scope; ?signed=false for the campaign, ?format=csv to download",
                   parameters=[OpenApiParameter("signed", OpenApiTypes.STR, enum=["true", "false"]),
                               OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"])],
                   responses={200: s.AreaAddressSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="addresses", filter_backends=[StrictOrderingFilter],
            renderer_classes=[JSONRenderer, AddressCsvRenderer])
    def addresses(self, request: Request, pk: str | None = None) -> Response:
        area = self._area(pk)
        signed_param = request.query_params.get("signed")
        if signed_param not in (None, "true", "false"):
            raise exceptions.ValidationError({"signed": ["Use true or false."]})
        unsigned = set(unsigned_addresses(area).values_list("id", flat=True))
        queryset = area.addresses.order_by("id")
        if signed_param == "false":
            queryset = queryset.filter(id__in=unsigned)
        elif signed_param == "true":
            queryset = queryset.exclude(id__in=unsigned)

        def rows(items: Any) -> list[dict[str, Any]]:
            return [{"id": a.pk, "postal_code": a.postal_code, "street": a.street, "house_number": a.house_number,
                     "units": a.units, "signed": a.pk not in unsigned} for a in items]

        if request.accepted_renderer.format == "csv":
            return Response(rows(queryset), headers={"Content-Disposition": f'attachment; filename="area-{area.pk}.csv"'})
        self.ordering = ["id"]
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(rows(page))


    @extend_schema(summary="The area's funnel: buildings and units per stage, conversion, stuck buildings (scope: read)",
                   responses={200: s.FunnelSerializer})
    @action(detail=True, methods=["get"], url_path="funnel", filter_backends=[], pagination_class=None)
    def funnel(self, request: Request, pk: str | None = None) -> Response:
        return Response(s.FunnelSerializer(vars(area_funnel(self._area(pk).pk))).data)

    @extend_schema(summary="The area's buildings with their stage and milestones; ?stage=, ?stuck=, ?format=csv",
                   parameters=[OpenApiParameter("stage", OpenApiTypes.STR, enum=s.STAGE_KEYS),
                               OpenApiParameter("stuck", OpenApiTypes.STR, enum=["true", "false"]),
                               OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"])],
                   responses={200: s.BuildingSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="buildings", filter_backends=[],
            renderer_classes=[JSONRenderer, BuildingCsvRenderer])
    def buildings(self, request: Request, pk: str | None = None) -> Response:
        area = self._area(pk)
        stage, stuck = request.query_params.get("stage"), request.query_params.get("stuck")
        if stage not in (None, *s.STAGE_KEYS):
            raise exceptions.ValidationError({"stage": [f"Use one of {', '.join(s.STAGE_KEYS)}."]})
        if stuck not in (None, "true", "false"):
            raise exceptions.ValidationError({"stuck": ["Use true or false."]})
        now, days = timezone.now(), stuck_after_days()
        queryset = buildings_of(area.pk, stage=stage, stuck=None if stuck is None else stuck == "true", now=now)

        def rows(items: Any) -> list[dict[str, Any]]:
            return [s.BuildingSerializer({**vars(b), "days_at_stage": building_age_days(b, now=now),
                                          "stuck": is_stuck(b, now=now, days=days)}).data for b in items]

        if request.accepted_renderer.format == "csv":
            return Response(rows(queryset.iterator(chunk_size=2000)),
                            headers={"Content-Disposition": f'attachment; filename="area-{area.pk}-buildings.csv"'})
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(rows(page))

    def get_permissions(self) -> list[Any]:
        # The funnel holds no household's address: any reading tool may have it.
        self.default_scope = {"funnel": "read", "partial_update": "configuration",
                              "quota_changes": "configuration"}.get(self.action, "areas")
        return super().get_permissions()


class FunnelView(APIView):
    """The funnel of all areas together (scope: read)."""

    @extend_schema(summary="The funnel of all rollout areas together (scope: read)", responses={200: s.FunnelSerializer})
    def get(self, request: Request) -> Response:
        return Response(s.FunnelSerializer(vars(area_funnel(None))).data)


class MilestonesView(WriteView):
    """The funnel's milestone rules: GET (scope: read), PUT replaces them all (scope: configuration)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.default_scope = "configuration" if request.method not in ("GET", "HEAD", "OPTIONS") else "read"
        super().initial(request, *args, **kwargs)

    @staticmethod
    def document() -> dict[str, Any]:
        return {"milestones": [{"key": r.milestone, "definition": r.definition, "step": r.step} for r in milestone_rules()],
                "stuck_after_days": stuck_after_days()}

    @extend_schema(summary="The milestone rules of the funnel (scope: read)", responses={200: s.MilestonesSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.document())

    @extend_schema(summary="Replace the milestone rules and recompute every building (scope: configuration)",
                   request=s.MilestonesSerializer, responses={200: s.MilestonesSerializer})
    def put(self, request: Request) -> Response:
        payload = s.MilestonesSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            milestone_rules_replace(payload.validated_data["milestones"],
                                    stuck_days=payload.validated_data.get("stuck_after_days"), actor=self.actor(request))
        except RulesRejected as exc:
            raise exceptions.ValidationError({"milestones": exc.errors}) from None
        return Response(self.document())


class SyncStatusView(APIView):
    """How whole the mirror is, per schema (scope: read)."""

    @extend_schema(summary="How whole the mirror is: epilot's and the mirror's counts, what reconciliation found, drift",
                   responses={200: s.SyncStatusSerializer})
    def get(self, request: Request) -> Response:
        return Response(s.SyncStatusSerializer({"schemas": sync_status()}).data)
