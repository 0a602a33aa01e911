"""The production topology on this machine: Redis, real Celery workers and beat, the sandbox on loopback.

Each test starts what it needs as subprocesses and stops them; everything listens on 127.0.0.1.
Skipped where redis-server is not installed (.ci/run installs it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from integrations.epilot_sandbox import free_loopback_port

ROOT = Path(__file__).resolve().parents[2]
REDIS = shutil.which("redis-server")


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.3) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_loopback_port()
    directory = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _port_open(port), timeout=20, what="redis")
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=20)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def database_url() -> str:
    """The test database, as a URL the worker processes can open."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    auth = settings["USER"] + (f":{settings['PASSWORD']}" if settings.get("PASSWORD") else "")
    return f"postgres://{auth}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"


class Topology:
    """Processes of one test; all of them are stopped when the test ends."""

    def __init__(self, redis_url: str, sandbox_url: str, logs: Path) -> None:
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": database_url(),
                    "CELERY_BROKER_URL": redis_url, "EPILOT_API_URL": sandbox_url, "EPILOT_API_TOKEN": "",
                    "SYNC_LOCK_SECONDS": "4", "CELERY_VISIBILITY_TIMEOUT": "6", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.logs = logs
        self.processes: list[subprocess.Popen] = []

    def start_worker(self, name: str, *, pool: str = "solo") -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - the worker writes to it until stop()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-n",
                f"{name}@%h",
                "--pool",
                pool,
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        wait_until(lambda: "ready." in (self.logs / f"{name}.log").read_text(), timeout=60, what=f"worker {name}")
        return process

    def start_web(self) -> int:
        """gunicorn on a free loopback port (as in production: it de-chunks request bodies); returns the port."""
        port = free_loopback_port()
        log = open(self.logs / "web.log", "a")  # noqa: SIM115 - gunicorn writes to it until stop()
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--threads", "4", "--timeout", "30"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: _port_open(port), timeout=30, what="gunicorn")
        return port

    def start_beat(self) -> subprocess.Popen:
        log = open(self.logs / "beat.log", "a")  # noqa: SIM115 - beat writes to it until stop()
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--scheduler",
             "django_celery_beat.schedulers:DatabaseScheduler", "--max-interval", "1"], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )

    def python(self, code: str) -> str:
        result = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def topology(redis_url, sandbox_server, tmp_path, django_db_serialized_rollback, transactional_db) -> Iterator[Topology]:
    """Committed data the worker processes can see; the migrations' data (schedule, groups) restored first."""
    processes = Topology(redis_url, sandbox_server, tmp_path)
    yield processes
    processes.stop()
    connection.close()
