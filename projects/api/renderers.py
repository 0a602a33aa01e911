"""CSV renderers for address and building lists (`?format=csv`), so spreadsheets open them directly."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from rest_framework.renderers import BaseRenderer

from projects.formatting import spreadsheet_safe


class AddressCsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"
    columns = ["postal_code", "street", "house_number", "units", "signed"]

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):  # an error document stays readable
            writer.writerow(["error"])
            writer.writerow([data["error"].get("message", "")])
            return buffer.getvalue().encode()
        if not isinstance(data, list):  # anything else (OPTIONS metadata) as one JSON cell
            writer.writerow(["detail"])
            writer.writerow([json.dumps(data, default=str, ensure_ascii=False)])
            return buffer.getvalue().encode()
        writer.writerow(self.columns)
        for row in data or []:
            writer.writerow([spreadsheet_safe(row.get(column, "")) for column in self.columns])
        return buffer.getvalue().encode()


class BuildingCsvRenderer(AddressCsvRenderer):
    columns = ["id", "postal_code", "street", "house_number", "units", "stage", "signed_at", "passed_at", "connected_at",
               "activated_at", "days_at_stage", "stuck", "waiting_on", "latitude", "longitude"]
