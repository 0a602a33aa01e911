"""`manage.py start_workflow --schema S --entity ID --definition D [--force]`."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.mirror.schemas import model_for
from projects.selectors import definition_by_epilot_id
from projects.services.errors import ServiceError
from projects.services.workflows import workflow_start


class Command(BaseCommand):
    help = "Start an epilot workflow (V1 definition or V2 flow template) on one entity."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True, help="Entity schema, e.g. opportunity, order, contact.")
        parser.add_argument("--entity", required=True, help="epilot id of the entity.")
        parser.add_argument("--definition", required=True, help="Definition or flow template id, e.g. wfQpwhJF6J.")
        parser.add_argument("--force", action="store_true", help="Start even if the definition already runs on the entity.")

    def handle(self, *args: Any, **options: Any) -> None:
        definition = definition_by_epilot_id(options["definition"])
        if definition is None:
            raise CommandError(f"Unknown workflow definition {options['definition']}; run sync_epilot first or check the id.")
        entity = model_for(options["schema"]).objects.filter(epilot_id=options["entity"]).first()
        title = entity.title if entity else options["entity"]
        try:
            start = workflow_start(definition=definition, schema=options["schema"], entity_id=options["entity"],
                                   entity_title=title, actor="command", allow_duplicate=options["force"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Started '{definition.name}' on {options['schema']} {title}: execution {start.execution_epilot_id}"
            )
        )
