"""`manage.py provision_webhook`: the epilot webhook config and automation flows that feed the live mirror."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.connection import connection_info
from projects.services.errors import ServiceError
from projects.services.webhook_subscriptions import webhook_provision, webhook_reconcile


class Command(BaseCommand):
    help = ("Create or update (idempotently, by name) the epilot webhook config pointing at this back-office and one "
            "automation flow per mirrored entity type that sends every change to it. The signing secret is stored "
            "encrypted and never printed; --rotate replaces it.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", help="Public URL of the receiver, e.g. https://backoffice.example/webhooks/epilot/.")
        parser.add_argument("--schema", action="append", dest="schemas", help="Entity type to subscribe (repeatable); "
                            "default: every mirrored one.")
        parser.add_argument("--rotate", action="store_true", help="Replace the config to get a new signing secret; the "
                            "old one stays valid for an hour.")
        parser.add_argument("--only-sandbox", action="store_true", help="Do nothing when talking to the real epilot "
                            "(for `make run`).")
        parser.add_argument("--replay-failed", action="store_true", help="Only ask epilot to deliver failed deliveries again.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["only_sandbox"] and not connection_info().is_sandbox:
            self.stdout.write("Talking to epilot, not a sandbox: nothing provisioned.")
            return
        try:
            if options["replay_failed"]:
                count = webhook_reconcile(actor="command")
                self.stdout.write(self.style.SUCCESS(f"{count} failed deliveries replayed."))
                return
            if not options["url"]:
                raise CommandError("--url is required.")
            report = webhook_provision(url=options["url"], schemas=options["schemas"], rotate=options["rotate"],
                                       actor="command")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        subscription = report.subscription
        if report.config_created:
            self.stdout.write(f"Created webhook config {subscription.config_id}.")
        elif report.secret_rotated:
            self.stdout.write(f"Replaced webhook config by {subscription.config_id} (new signing secret).")
        elif report.config_updated:
            self.stdout.write(f"Updated webhook config {subscription.config_id}.")
        for label, schemas in (("Created", report.flows_created), ("Updated", report.flows_updated),
                               ("Deleted", report.flows_deleted)):
            if schemas:
                self.stdout.write(f"{label} automation flows for: {', '.join(schemas)}.")
        state = "changed" if report.changed else "already up to date"
        self.stdout.write(self.style.SUCCESS(
            f"Webhook {state}: {subscription.url} receives {', '.join(subscription.schemas)} "
            f"(signing secret {subscription.secret_hint}, stored encrypted)."))
