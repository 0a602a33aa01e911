"""What the transport tells whoever watches it (metrics): each answer, each retry, each wait for the write budget."""
from __future__ import annotations

import threading


class CallObserver:
    """Does nothing; subclass it to count. Methods must not raise and must be quick (they run on every request)."""

    def answered(self, service: str, operation: str, status: str, seconds: float) -> None:
        """One attempt ended: an HTTP status code, or `timeout`/`connection` when no answer came."""

    def retried(self, service: str, operation: str, reason: str) -> None:
        """An attempt is repeated; `reason` is the status code or `timeout`/`connection`."""

    def waited_for_budget(self, seconds: float) -> None:
        """A write waited this long for the shared write budget."""


class RecordingObserver(CallObserver):
    """Keeps what it is told, to be told to another observer later (`replay`): a forked process's calls are
    counted by its parent, as the metrics' locks may have been held by another thread when the process forked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()  # threads of the process record while one of them takes

    def answered(self, service: str, operation: str, status: str, seconds: float) -> None:
        self._record("answered", (service, operation, status, seconds))

    def retried(self, service: str, operation: str, reason: str) -> None:
        self._record("retried", (service, operation, reason))

    def waited_for_budget(self, seconds: float) -> None:
        self._record("waited_for_budget", (seconds,))

    def taken(self) -> list[tuple[str, tuple]]:
        """The calls recorded since the last time, forgotten here."""
        with self._lock:
            calls, self.calls = self.calls, []
        return calls

    def _record(self, method: str, arguments: tuple) -> None:
        with self._lock:
            self.calls.append((method, arguments))


def replay(calls: list[tuple[str, tuple]], observer: CallObserver) -> None:
    """Tell `observer` what a RecordingObserver recorded (`taken`)."""
    for method, arguments in calls:
        getattr(observer, method)(*arguments)
