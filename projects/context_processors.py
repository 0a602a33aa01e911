"""Template context shared by every admin page."""
from typing import Any

from django.http import HttpRequest

from integrations.connection import connection_info


def epilot_connection(request: HttpRequest) -> dict[str, Any]:
    """Which epilot this installation talks to, for the banner on every admin page."""
    return {"epilot_connection": connection_info()}
