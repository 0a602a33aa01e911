"""Check the epilot configuration: which epilot, whether the token works, whether each service answers."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from integrations.connection import build_epilot_client, connection_info
from integrations.epilot import EpilotClient, RetryPolicy
from integrations.epilot.errors import EpilotConfigurationError
from integrations.epilot.health import check_services


class Command(BaseCommand):
    help = "Verify the epilot configuration, the token and the reachability of each epilot service."

    def handle(self, *args: Any, **options: Any) -> None:
        info = connection_info()
        self.stdout.write(f"Mode: {info.label}")
        try:
            client: EpilotClient = build_epilot_client()
        except EpilotConfigurationError as exc:
            raise CommandError(str(exc)) from None
        # A check should answer quickly: one retry at most, no long waits.
        client.retry = RetryPolicy(max_attempts=2, max_elapsed_seconds=10, max_retry_after_seconds=5)
        with client:
            checks = check_services(client)
        width = max(len(check.service) for check in checks)
        for check in checks:
            mark = self.style.SUCCESS("ok  ") if check.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {check.service:<{width}}  {check.url:<45} {check.milliseconds:7.0f} ms  {check.detail}")
        failed = [check for check in checks if not check.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(checks)} epilot services failed: " + "; ".join(c.detail for c in failed))
        self.stdout.write(self.style.SUCCESS("All epilot services answered."))
