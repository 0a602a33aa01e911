"""`GET /api/v1/promises/`: promised dates with their state and forecast (scope: read), cursor-paged or as CSV."""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from projects.api.renderers import AddressCsvRenderer
from projects.api.views import MirrorViewSet
from projects.models import Promise, PromisedMilestone
from projects.services.promises import promise_rows
from projects.validation import parse_id

STATES = list(Promise.State.values)
MILESTONES = list(PromisedMilestone.values)


class PromiseOrderSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    epilot_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()


class PromiseBuildingSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="the normalised address key; empty for an order at no address")
    address = serializers.CharField()
    area = serializers.IntegerField(allow_null=True, help_text="the rollout area listing the building")


class PromiseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    order = PromiseOrderSerializer()
    building = PromiseBuildingSerializer()
    milestone = serializers.ChoiceField(choices=MILESTONES)
    promised_date = serializers.DateField(source="promised_on")
    source = serializers.ChoiceField(choices=list(Promise.Source.values),
                                     help_text="attribute: epilot's order attribute; staff: set here; rule: area rule")
    reached_at = serializers.DateTimeField(allow_null=True, help_text="epilot's completion of the step that marks it")
    forecast_p50 = serializers.DateField(allow_null=True)
    forecast_p90 = serializers.DateField(allow_null=True)
    state = serializers.ChoiceField(choices=STATES)
    days_late = serializers.IntegerField(allow_null=True, help_text="breached: days after the promised date")
    state_since = serializers.DateTimeField()


class PromiseCsvRenderer(AddressCsvRenderer):
    columns = ["id", "order_epilot_id", "order_title", "address", "area", "milestone", "promised_date", "source",
               "reached_at", "forecast_p50", "forecast_p90", "state", "days_late"]


def _document(promise: Promise) -> dict[str, Any]:
    opportunity = promise.order.opportunity
    address = opportunity.address if opportunity is not None else ""
    return PromiseSerializer({**vars(promise), "order": promise.order,
                              "building": {"key": promise.building_key, "address": address,
                                           "area": promise.area_id}}).data


def _flat(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "order_epilot_id": document["order"]["epilot_id"], "order_title": document["order"]["title"],
            "address": document["building"]["address"], "area": document["building"]["area"]}


class PromiseViewSet(MirrorViewSet):
    """Promised dates of orders (scope: read)."""

    serializer_class = PromiseSerializer
    filter_backends: list[Any] = []
    renderer_classes = [JSONRenderer, PromiseCsvRenderer]
    http_method_names = ["get", "head", "options"]

    def get_queryset(self, **filters: Any) -> Any:
        return promise_rows(**filters).select_related("order__opportunity").order_by("id")

    @extend_schema(summary="Promised dates with state and forecast; ?state=, ?milestone=, ?area=, ?format=csv",
                   parameters=[OpenApiParameter("state", OpenApiTypes.STR, enum=STATES),
                               OpenApiParameter("milestone", OpenApiTypes.STR, enum=MILESTONES),
                               OpenApiParameter("area", OpenApiTypes.INT),
                               OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"])],
                   responses={200: PromiseSerializer(many=True)})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        state, milestone, area = (request.query_params.get(name) for name in ("state", "milestone", "area"))
        if state not in (None, *STATES):
            raise exceptions.ValidationError({"state": [f"Use one of {', '.join(STATES)}."]})
        if milestone not in (None, *MILESTONES):
            raise exceptions.ValidationError({"milestone": [f"Use one of {', '.join(MILESTONES)}."]})
        area_id = None
        if area is not None:
            area_id = parse_id(area)
            if area_id is None and not area.strip().lstrip("-").isdigit():
                raise exceptions.ValidationError({"area": ["Give a rollout area's id."]})
        queryset = self.get_queryset(state=state, milestone=milestone, area=area_id)
        if area is not None and area_id is None:
            queryset = queryset.none()  # a whole number no area has
        if request.accepted_renderer.format == "csv":
            return Response([_flat(_document(p)) for p in queryset.iterator(chunk_size=2000)],
                            headers={"Content-Disposition": 'attachment; filename="promises.csv"'})
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([_document(p) for p in page])

    @extend_schema(summary="One promised date with its state and forecast", responses={200: PromiseSerializer})
    def retrieve(self, request: Request, pk: str | None = None, *args: Any, **kwargs: Any) -> Response:
        promise_id = parse_id(pk or "")
        promise = self.get_queryset().filter(pk=promise_id).first() if promise_id else None
        if promise is None:
            raise exceptions.NotFound("No promise with this id.")
        return Response(_document(promise))
