"""The write budget is one budget for every process of an installation: three processes writing at once never
exceed it in any window, bulk writes leave a reserve to interactive ones, and a write is never dropped."""
from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from integrations.epilot import FileWindow, ProcessWindow, RedisWindow, WriteBudget, bulk_writes
from tests.conftest import FakeClock
from tests.integration.conftest import ROOT

LIMIT, WINDOW, PER_PROCESS = 5, 2.0, 5

WRITER = f"""
import sys, time
from integrations.epilot import FileWindow, RedisWindow, WriteBudget
kind, where = sys.argv[1], sys.argv[2]
window = FileWindow(where) if kind == "file" else RedisWindow(where, key=sys.argv[3])
budget = WriteBudget({LIMIT}, clock=time.monotonic, sleep=time.sleep, window=window, reserve=0, window_seconds={WINDOW})
for _ in range({PER_PROCESS}):
    budget.acquire()
    print(time.time(), flush=True)
"""


def writes_of_three_processes(*args: str) -> list[float]:
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
    moments = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        moments += [float(line) for line in out.split()]
    return sorted(moments)


def most_in_any_window(moments: list[float], seconds: float) -> int:
    return max(sum(1 for other in moments if start <= other < start + seconds) for start in moments)


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_three_processes_writing_at_once_share_one_budget(kind, tmp_path, request) -> None:
    where = [str(tmp_path / "budget.json")] if kind == "file" else [request.getfixturevalue("redis_url"), uuid.uuid4().hex]
    moments = writes_of_three_processes(kind, *where)
    assert len(moments) == 3 * PER_PROCESS  # none dropped
    # A little slack for the moment a process prints after the counter took its write.
    assert most_in_any_window(moments, WINDOW - 0.1) <= LIMIT
    assert moments[-1] - moments[0] >= (3 * PER_PROCESS / LIMIT - 1) * WINDOW - 0.2


def test_bulk_writes_leave_the_reserve_to_interactive_ones() -> None:
    clock = FakeClock()
    budget = WriteBudget(10, clock=clock, sleep=clock.sleep, window=ProcessWindow(clock), reserve=3)
    with bulk_writes():
        assert [budget.acquire() for _ in range(7)] == [0.0] * 7
    assert [budget.acquire() for _ in range(3)] == [0.0] * 3  # a person's write does not wait behind the job
    with bulk_writes():
        assert budget.acquire() > 0  # the job waits for the window to move on
    assert clock.sleeps


def test_while_redis_does_not_answer_writes_are_counted_in_the_process_and_sent(caplog) -> None:
    window = RedisWindow("redis://127.0.0.1:1/0", key="gone")  # nothing listens there
    clock = FakeClock()
    budget = WriteBudget(3, clock=clock, sleep=clock.sleep, window=window, reserve=0)
    assert [budget.acquire() for _ in range(3)] == [0.0] * 3
    assert "Redis does not answer" in caplog.text


def test_a_torn_budget_file_starts_a_new_window(tmp_path) -> None:
    path = tmp_path / "budget.json"
    path.write_text("[1.0, 2.")  # a crash mid-write
    assert FileWindow(path).take(2, 61.0) == 0.0
    assert FileWindow(path).take(2, 61.0) == 0.0
    assert FileWindow(path).take(2, 61.0) > 0


def test_the_installation_counts_in_redis_with_a_redis_broker_and_in_a_file_otherwise(tmp_path) -> None:
    probe = ("import django; django.setup(); from integrations.connection import write_budget_window as w; "
             "print(type(w()).__name__)")

    def window_with(**env: str) -> str:
        import os

        clean = {key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "EPILOT_", "DJANGO_"))}
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "ERROR",
                                     "VAR_DIR": str(tmp_path), **env})
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[-1]

    assert window_with() == "FileWindow"
    assert window_with(CELERY_BROKER_URL="redis://127.0.0.1:6379/0") == "RedisWindow"
    assert window_with(CELERY_BROKER_URL="redis://127.0.0.1:6379/0", EPILOT_WRITE_BUDGET_URL="file:///tmp/b.json") == \
        "FileWindow"
