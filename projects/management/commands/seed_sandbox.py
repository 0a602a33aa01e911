"""Seed the epilot sandbox: the Wülfrath demo, or large deterministic data sets for benchmarks."""
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from integrations.epilot_sandbox import SandboxStore, seed_build_site, seed_bulk, seed_demo


class Command(BaseCommand):
    help = "Load the Stadtwerke Wülfrath demo into the epilot sandbox (and optionally a large data set)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--db", default=None, help="Sandbox SQLite file (default: EPILOT_SANDBOX_DB).")
        parser.add_argument("--reset", action="store_true", help="Delete everything in the sandbox first.")
        parser.add_argument("--contacts", type=int, default=0, help="Also add this many generated contacts.")
        parser.add_argument("--opportunities", type=int, default=0, help="Also add this many generated opportunities.")
        parser.add_argument("--orders", type=int, default=0, help="Also add this many generated orders.")
        parser.add_argument("--seed", type=int, default=42, help="Seed of the generated data (same seed, same data).")

    def handle(self, *args: Any, **options: Any) -> None:
        store = SandboxStore(options["db"] or settings.EPILOT_SANDBOX_DB)
        if options["reset"]:
            store.reset()
        count = seed_demo(store)
        self.stdout.write(f"Wülfrath demo: {count} entities, workflow 'Ausbau Glasfaser' (wfQpwhJF6J).")
        if options["contacts"] or options["opportunities"] or options["orders"]:
            added = seed_bulk(store, contacts=options["contacts"], opportunities=options["opportunities"],
                              orders=options["orders"], seed=options["seed"])
            self.stdout.write(f"Generated data set: {added} entities (seed {options['seed']}).")
        else:  # the demo; a generated data set stays as generated
            built = seed_build_site(store)
            self.stdout.write(f"Flandersbach, mid-build: {built} buildings with a contract and their workflows' history.")
        self.stdout.write(self.style.SUCCESS(f"Sandbox {store.path} holds {store.count_entities()} entities."))
