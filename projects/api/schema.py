"""OpenAPI generation: every operation documents the error document and the statuses it can answer."""
from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorBody(serializers.Serializer):
    status = serializers.IntegerField()
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   help_text="Per parameter or field: what is wrong with it")


class ErrorDocument(serializers.Serializer):
    error = ErrorBody()


ERROR_STATUSES = {
    "400": "Invalid parameter or body; `fields` names it",
    "401": "No token, or an invalid or revoked one",
    "403": "The token lacks the scope",
    "404": "No such object",
    "429": "Too many requests; wait for `Retry-After` seconds",
}


class ApiAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        bodies = super()._get_response_bodies(direction)
        error = self._get_response_for_code(ErrorDocument, "400")
        for code, description in ERROR_STATUSES.items():
            if code in bodies and "content" in bodies[code]:
                continue
            bodies[code] = {**error, "description": description}
        for code, body in bodies.items():
            if code.startswith(("4", "5")) and "content" not in body:
                bodies[code] = {**error, "description": body.get("description", "")}
        return bodies


NO_NUL = "^[^\\x00]*$"


def forbid_nul_in_parameters(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing: every text parameter (path and query) excludes NUL, which the edge refuses
    with a 400 (`config.middleware.RejectNulMiddleware`)."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                if schema.get("type") == "string" and "enum" not in schema and "format" not in schema:
                    schema.setdefault("pattern", NO_NUL)
    return result
