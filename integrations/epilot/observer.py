"""What the transport tells whoever watches it (metrics): each answer, each retry, each wait for the write budget."""
from __future__ import annotations


class CallObserver:
    """Does nothing; subclass it to count. Methods must not raise and must be quick (they run on every request)."""

    def answered(self, service: str, operation: str, status: str, seconds: float) -> None:
        """One attempt ended: an HTTP status code, or `timeout`/`connection` when no answer came."""

    def retried(self, service: str, operation: str, reason: str) -> None:
        """An attempt is repeated; `reason` is the status code or `timeout`/`connection`."""

    def waited_for_budget(self, seconds: float) -> None:
        """A write waited this long for the shared write budget."""
