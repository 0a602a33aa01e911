"""Client-side budgets: the write budget and the retry back-off."""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("integrations.epilot")


WINDOW_SECONDS = 61.0
"""A second more than epilot's minute: requests sent just inside our window can arrive just inside epilot's (network
and clock skew), and would then count twice in one minute there."""

_bulk = contextvars.ContextVar("epilot_bulk_writes", default=False)


@contextlib.contextmanager
def bulk_writes() -> Iterator[None]:
    """Writes made inside yield to interactive ones: they leave the budget's reserve free (step and start jobs)."""
    token = _bulk.set(True)
    try:
        yield
    finally:
        _bulk.reset(token)


class BudgetWindow(Protocol):
    """Where the writes of the last window are counted: one process, a file on the host, or Redis for all hosts."""

    def take(self, limit: int, window_seconds: float) -> float:
        """Count one write if fewer than `limit` were counted in the last `window_seconds` and return 0; else count
        nothing and return the seconds until one fits."""


class ProcessWindow:
    """The writes of this process only (tests, and the fallback while a shared window is unreachable)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, limit: int, window_seconds: float) -> float:
        with self._lock:
            now = self._clock()
            while self._sent and now - self._sent[0] >= window_seconds:
                self._sent.popleft()
            if len(self._sent) < limit:
                self._sent.append(now)
                return 0.0
            return window_seconds - (now - self._sent[len(self._sent) - limit])


class FileWindow:
    """The writes of every process on this host, in a JSON file under an exclusive lock (a local installation)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def take(self, limit: int, window_seconds: float) -> float:
        import fcntl

        with open(self.path, "a+", encoding="ascii") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            handle.seek(0)
            try:
                sent = [moment for moment in json.loads(handle.read() or "[]") if isinstance(moment, (int, float))]
            except ValueError:
                sent = []  # a torn file (a crash mid-write): start a new window
            now = time.time()
            sent = sorted(moment for moment in sent if now - moment < window_seconds)
            if len(sent) >= limit:
                return window_seconds - (now - sent[len(sent) - limit])
            sent.append(now)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(sent))
            return 0.0


# Atomic in Redis: drop what left the window, then count this write or say how long until one fits.
# Redis' own clock, so hosts with skewed clocks share one window.
_REDIS_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""


class RedisWindow:
    """The writes of every process of the installation, in a Redis sorted set (production).

    While Redis does not answer, this process counts on its own (logged): a write is never lost
    for want of a counter, at the price of a looser limit during the outage.
    """

    def __init__(self, url: str, key: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(_REDIS_TAKE)
        self._errors = redis.exceptions.RedisError
        self.key = key
        self._fallback = ProcessWindow()

    def take(self, limit: int, window_seconds: float) -> float:
        try:
            milliseconds = self._script(keys=[self.key], args=[limit, int(window_seconds * 1000), uuid.uuid4().hex])
        except self._errors as exc:
            logger.warning("write budget: Redis does not answer (%s); counting in this process only", type(exc).__name__)
            return self._fallback.take(limit, window_seconds)
        return max(0.0, int(milliseconds) / 1000)


class WriteBudget:
    """At most `per_minute` writes in any sliding window of WINDOW_SECONDS, counted in `window`.

    epilot counts entity mutations per organisation per minute (500); staying a little under that
    stops a bulk job from tripping 429s for everybody else. With a shared window (a file, Redis)
    every process of the installation counts against the same budget. Writes inside `bulk_writes()`
    leave `reserve` writes of every window to interactive ones. A write that must wait is logged with
    the reason, then sent: none is dropped.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float], sleep: Callable[[float], None],
                 window: BudgetWindow | None = None, reserve: int | None = None,
                 window_seconds: float = WINDOW_SECONDS) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.reserve = min(per_minute - 1, max(1, per_minute // 10) if reserve is None else reserve)
        self.window_seconds = window_seconds
        self._sleep = sleep
        self._window = window or ProcessWindow(clock)

    def acquire(self) -> float:
        """Wait until one more write fits; returns the seconds waited."""
        bulk = _bulk.get()
        limit = self.per_minute - self.reserve if bulk else self.per_minute
        waited = 0.0
        while True:
            delay = self._window.take(limit, self.window_seconds)
            if delay <= 0:
                return waited
            if not waited:
                logger.info("write budget: %d %swrites in the last %.0f s; this one waits %.1f s", limit,
                            "bulk " if bulk else "", self.window_seconds, delay,
                            extra={"budget_limit": limit, "bulk": bulk, "wait_seconds": round(delay, 2)})
            delay = max(delay, 0.01)
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
