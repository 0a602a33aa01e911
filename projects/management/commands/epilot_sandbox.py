"""Serve the epilot sandbox on a loopback port: `manage.py epilot_sandbox --port 8765`."""
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.epilot_sandbox import FaultConfig, SandboxApp, SandboxStore, is_seeded, make_sandbox_server, seed_demo


class Command(BaseCommand):
    help = "Serve the local epilot sandbox so other processes can reach it through EPILOT_API_URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind; keep it on loopback.")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--db", default=None, help="Sandbox SQLite file (default: EPILOT_SANDBOX_DB).")
        parser.add_argument("--token", default=None, help="Accept only this bearer token (default: any).")
        parser.add_argument("--fault-429", type=float, default=0.0, help="Share of requests answered 429 with Retry-After.")
        parser.add_argument("--fault-5xx", type=float, default=0.0, help="Share of requests answered 503.")
        parser.add_argument("--fault-drop", type=float, default=0.0, help="Share of requests handled but answered 502.")
        parser.add_argument("--latency-ms", type=int, default=0, help="Added latency per request.")
        parser.add_argument("--retry-after", type=int, default=1, help="Seconds in the Retry-After of injected 429s.")
        parser.add_argument("--seed", type=int, default=None, help="Random seed for fault injection.")
        parser.add_argument("--no-webhooks", action="store_true", help="Do not deliver webhooks (they stay queued).")
        parser.add_argument("--webhook-retry-scale", type=float, default=1.0,
                            help="Multiply epilot's webhook retry delays (5 s, 5 min, ...) by this, e.g. 0.01 for tests.")
        parser.add_argument(
            "--fault-operations", default="", help="Comma-separated operationIds the faults apply to (default: all)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["host"] not in ("127.0.0.1", "localhost", "::1"):
            raise CommandError("The sandbox only binds to loopback (127.0.0.1, localhost or ::1).")
        store = SandboxStore(options["db"] or settings.EPILOT_SANDBOX_DB)
        if not is_seeded(store):
            count = seed_demo(store)
            self.stdout.write(f"Seeded the Wülfrath demo ({count} entities).")
        faults = FaultConfig(rate_429=options["fault_429"], rate_5xx=options["fault_5xx"], rate_drop=options["fault_drop"],
                             latency_ms=options["latency_ms"], retry_after_seconds=options["retry_after"], seed=options["seed"],
                             operations=tuple(op for op in options["fault_operations"].split(",") if op))
        app = SandboxApp(store, token=options["token"], faults=faults, deliver_webhooks=not options["no_webhooks"],
                         webhook_retry_scale=options["webhook_retry_scale"])
        server = make_sandbox_server(app, host=options["host"], port=options["port"])
        host, port = server.server_address[:2]
        self.stdout.write(self.style.SUCCESS(f"epilot sandbox on http://{host}:{port} (data: {store.path})"))
        self.stdout.write(f"Use it from another process with EPILOT_API_URL=http://{host}:{port}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            app.deliverer.stop()
            server.server_close()
