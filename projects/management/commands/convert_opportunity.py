"""`manage.py convert_opportunity ID [--amount N] [--definition D]`: the conversion saga from the shell."""
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.models import Opportunity
from projects.selectors import definition_by_epilot_id
from projects.services.conversion import opportunity_convert
from projects.services.errors import ServiceError


class Command(BaseCommand):
    help = "Convert an opportunity into an order (create, link, start the workflow, close); re-running resumes it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("opportunity", help="epilot id of the opportunity.")
        parser.add_argument("--amount", help="Order total in EUR (default: the opportunity's budget).")
        parser.add_argument("--definition", default=settings.DEFAULT_WORKFLOW_DEFINITION, help="Workflow to start on the order.")
        parser.add_argument(
            "--status", default=None, help="Status to set on the opportunity (default: CONVERSION_TARGET_STATUS)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        opportunity = Opportunity.objects.filter(epilot_id=options["opportunity"]).first()
        if opportunity is None:
            raise CommandError(f"Opportunity {options['opportunity']} is not mirrored; run sync_epilot first.")
        definition = definition_by_epilot_id(options["definition"])
        if definition is None:
            raise CommandError(f"Unknown workflow definition {options['definition']}.")
        amount = None
        if options["amount"]:
            try:
                amount = int(Decimal(options["amount"]) * 100)
            except InvalidOperation:
                raise CommandError(f"--amount must be a number, not {options['amount']!r}") from None
        try:
            conversion = opportunity_convert(opportunity=opportunity, definition=definition, amount_total=amount,
                                             target_status=options["status"], actor="command")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Converted: order {conversion.order_epilot_id} ('{conversion.order_title}'), "
                f"workflow {conversion.execution_epilot_id or '–'}, opportunity now '{conversion.target_status}'."
            )
        )
