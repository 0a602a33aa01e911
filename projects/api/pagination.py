"""Cursor pagination with explicit 400s for bad cursors and page sizes."""
from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

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
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError({"page_size": [f"Must be a whole number from 1 to {MAX_PAGE_SIZE}."]})
        if int(raw) > MAX_PAGE_SIZE:
            raise ValidationError({"page_size": [f"At most {MAX_PAGE_SIZE} items per page."]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": MAX_PAGE_SIZE, "default": self.page_size})
        return parameters

    def decode_cursor(self, request: Request) -> Any:
        if not request.query_params.get(self.cursor_query_param):
            return None
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": ["Malformed cursor; use the 'next' or 'previous' link of a page."]}) from None
