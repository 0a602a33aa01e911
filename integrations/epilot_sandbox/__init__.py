"""A local epilot: the API operations the back-office uses, faithful to the official specs, in SQLite.

Plain Python (no Django); it runs in-process behind httpx.WSGITransport or as a loopback server.
"""
from integrations.epilot_sandbox.app import FaultConfig, SandboxApp
from integrations.epilot_sandbox.build_site import seed_build_site
from integrations.epilot_sandbox.seed import (
    AUSBAU_DEFINITION_ID,
    HAUSANSCHLUSS_TEMPLATE_ID,
    demo_id,
    is_seeded,
    seed_bulk,
    seed_demo,
)
from integrations.epilot_sandbox.server import free_loopback_port, make_sandbox_server, sandbox_stats, wait_until_serving
from integrations.epilot_sandbox.store import SandboxStore

__all__ = [
    "AUSBAU_DEFINITION_ID",
    "HAUSANSCHLUSS_TEMPLATE_ID",
    "FaultConfig",
    "SandboxApp",
    "SandboxStore",
    "demo_id",
    "free_loopback_port",
    "is_seeded",
    "make_sandbox_server",
    "sandbox_stats",
    "seed_build_site",
    "seed_bulk",
    "seed_demo",
    "wait_until_serving",
]
