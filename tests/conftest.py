"""Shared fixtures: every test gets its own seeded epilot sandbox; nothing leaves loopback."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from integrations.connection import reset_epilot_client
from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import SandboxApp, SandboxStore, make_sandbox_server, seed_demo


class FakeClock:
    """A clock that only moves when the client sleeps, so retry waits cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox_store(tmp_path) -> SandboxStore:
    store = SandboxStore(tmp_path / "epilot-sandbox.sqlite3")
    seed_demo(store)
    return store


@pytest.fixture
def sandbox(sandbox_store: SandboxStore) -> SandboxApp:
    return SandboxApp(sandbox_store)


@pytest.fixture
def epilot(sandbox: SandboxApp, clock: FakeClock) -> Iterator[EpilotClient]:
    """A gateway client talking to the in-process sandbox, with a fake clock for retries."""
    client = EpilotClient.for_wsgi_app(sandbox, sleep=clock.sleep, clock=clock, seed=1)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    from django.core.cache import cache

    from projects.mirror.drift import forget_known_attributes

    cache.clear()
    forget_known_attributes()  # each test's database starts without the attributes an earlier one recorded


@pytest.fixture(autouse=True)
def _isolated_embedded_sandbox(settings, tmp_path) -> Iterator[None]:
    """Django code in a test uses a fresh embedded sandbox, never a configured epilot."""
    settings.EPILOT_API_TOKEN = ""
    settings.EPILOT_API_URL = ""
    settings.EPILOT_SANDBOX_DB = tmp_path / "embedded-sandbox.sqlite3"
    reset_epilot_client()
    yield
    reset_epilot_client()


@pytest.fixture
def sandbox_server(sandbox: SandboxApp) -> Iterator[str]:
    """The sandbox served on a free loopback port; yields its origin."""
    server = make_sandbox_server(sandbox, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recorder(sandbox: SandboxApp):
    """A transport in front of the in-process sandbox that checks every request and answer against epilot's specs."""
    import httpx

    from tests.integrations.contract.openapi import ContractRecorder

    return ContractRecorder(inner=httpx.WSGITransport(app=sandbox))


@pytest.fixture
def checked_client(recorder, clock: FakeClock) -> EpilotClient:
    """A gateway client whose traffic `recorder` validates; assert `recorder.violations == []` at the end."""
    from integrations.epilot import ServiceURLs

    return EpilotClient(token="contract-test", urls=ServiceURLs.single_origin("http://epilot-sandbox.invalid"),
                        transport=recorder, sleep=clock.sleep, clock=clock, seed=3)
