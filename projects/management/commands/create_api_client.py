"""`manage.py create_api_client NAME --scopes read,areas [--rate 1200/min]`: provision an API client by script."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.services.api_clients import api_client_create
from projects.services.errors import ServiceError


class Command(BaseCommand):
    help = "Create a REST API client; its token is printed alone on the last line of stdout, and only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Unique name of the tool, e.g. 'GIS Wülfrath'.")
        parser.add_argument("--scopes", default="read", help="Comma-separated: read, areas, steps, workflows (default: read).")
        parser.add_argument("--rate", default="1200/min", help="Requests per s/min/hour/day (default: 1200/min).")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        try:
            client, token = api_client_create(name=options["name"], scopes=scopes, throttle_rate=options["rate"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"API client '{client.name}' created with scopes {', '.join(client.scopes)} and rate {client.throttle_rate}; "
            "the token below is shown only now."
        )
        self.stdout.write(token)
