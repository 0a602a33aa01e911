"""Cursor pagination with explicit 400s for bad cursors and page sizes."""
from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from projects.validation import parse_id

MAX_PAGE_SIZE = 500


class StableCursorPagination(CursorPagination):
    """Walks every row once; ordered by `id` (immutable) unless `ordering` says otherwise."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    ordering = "id"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if not raw:
            return self.page_size
        size = parse_id(raw)
        if size is None:
            raise ValidationError({"page_size": [f"Must be a whole number from 1 to {MAX_PAGE_SIZE}."]})
        if size > MAX_PAGE_SIZE:
            raise ValidationError({"page_size": [f"At most {MAX_PAGE_SIZE} items per page."]})
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": MAX_PAGE_SIZE, "default": self.page_size})
        return parameters

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list | None:
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Request) -> Any:
        if not request.query_params.get(self.cursor_query_param):
            return None
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise _malformed() from None
        if cursor.position is not None and not self._position_fits(cursor.position):
            raise _malformed()
        return cursor

    def _position_fits(self, position: str) -> bool:
        """A cursor's position must be a value of the ordering field: it goes into the query as it is."""
        name = self.ordering[0].lstrip("-") if isinstance(self.ordering, (list, tuple)) else str(self.ordering).lstrip("-")
        try:
            field = self._model._meta.get_field(name)
        except (AttributeError, FieldDoesNotExist):
            return False
        if isinstance(field, (models.AutoField, models.IntegerField)):
            value = parse_id(position.lstrip("-")) if position.lstrip("-") != "0" else 0
            return value is not None
        try:
            value = field.to_python(position)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            return False
        if isinstance(value, dt.datetime):
            try:
                value.astimezone(dt.UTC)
            except (OverflowError, ValueError):
                return False
        return "\x00" not in position


def _malformed() -> ValidationError:
    return ValidationError({"cursor": ["Malformed cursor; use the 'next' or 'previous' link of a page."]})
