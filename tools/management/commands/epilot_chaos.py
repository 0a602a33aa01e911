"""`manage.py epilot_chaos`: a bounded fault scenario with a report; exits non-zero on lost or duplicated data."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tools.chaos import Scenario, run_scenario


class Command(BaseCommand):
    help = ("Run the sync and conversions against a faulty, slow standalone sandbox with one killed worker, in a scratch "
            "directory, and report requests, retries, 429s honoured, mirror equality and duplicates.")

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = Scenario()
        parser.add_argument("--contacts", type=int, default=defaults.contacts)
        parser.add_argument("--opportunities", type=int, default=defaults.opportunities)
        parser.add_argument("--orders", type=int, default=defaults.orders)
        parser.add_argument("--fault-5xx", type=float, default=defaults.rate_5xx)
        parser.add_argument("--fault-429", type=float, default=defaults.rate_429)
        parser.add_argument("--fault-drop", type=float, default=defaults.rate_drop)
        parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
        parser.add_argument("--retry-after", type=int, default=defaults.retry_after)
        parser.add_argument("--no-kill", action="store_true", help="Do not kill a worker mid-sync.")
        parser.add_argument("--conversions", type=int, default=defaults.conversions)
        parser.add_argument(
            "--database-url", default=None, help="A scratch PostgreSQL database (default: a temporary SQLite file)."
        )
        parser.add_argument("--seed", type=int, default=defaults.seed)

    def handle(self, *args: Any, **options: Any) -> None:
        scenario = Scenario(
            contacts=options["contacts"], opportunities=options["opportunities"], orders=options["orders"],
            rate_5xx=options["fault_5xx"], rate_429=options["fault_429"], rate_drop=options["fault_drop"],
            latency_ms=options["latency_ms"], retry_after=options["retry_after"], kill_worker=not options["no_kill"],
            conversions=options["conversions"], database_url=options["database_url"], seed=options["seed"])
        report = run_scenario(scenario, echo=self.stdout.write)
        self.stdout.write("")
        for line in report.lines:
            self.stdout.write(line)
        if not report.ok:
            raise CommandError("the mirror differs from epilot or something was written twice")
        self.stdout.write(self.style.SUCCESS("zero lost, zero duplicated"))
