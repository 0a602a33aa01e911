"""Client-side budgets: the write budget and the retry back-off."""
from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class WriteBudget:
    """At most `per_minute` writes in any sliding 60-second window of this process.

    epilot counts entity mutations per organisation per minute (500); keeping each process
    a little under that stops a bulk job from tripping 429s for everybody else.
    """

    # A second more than epilot's minute: requests sent just inside our window can arrive just inside
    # epilot's (network and clock skew), and would then count twice in one minute there.
    WINDOW_SECONDS = 61.0

    def __init__(self, per_minute: int, *, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait until one more write fits; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.WINDOW_SECONDS:
                    self._sent.popleft()
                if len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return waited
                delay = self.WINDOW_SECONDS - (now - self._sent[0])
            self._sleep(delay)
            waited += delay


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying one request: attempts, total seconds, and jittered exponential back-off."""

    max_attempts: int = 5
    max_elapsed_seconds: float = 90.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 10.0
    max_retry_after_seconds: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter back-off before attempt `attempt + 1`."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * (2 ** (attempt - 1)))
        return rng.uniform(ceiling / 2, ceiling)
