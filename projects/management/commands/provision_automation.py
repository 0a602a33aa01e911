"""`manage.py provision_automation`: create or update the Ausbau automation flow in epilot, by name."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.services.automations import automation_provision
from projects.services.errors import ServiceError


class Command(BaseCommand):
    help = "Create or update (by name) the epilot automation: opportunity status 'bearbeitung' → start Ausbau Glasfaser."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--definition", default=None, help="Workflow to start (default: DEFAULT_WORKFLOW_DEFINITION).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            record, created = automation_provision(actor="command", definition_epilot_id=options["definition"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"{'Created' if created else 'Updated'} '{record.name}' (flow {record.flow_id})."))
