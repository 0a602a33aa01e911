"""How many reads of epilot run at once: as many as epilot's answer time needs, not so many that they starve the writer."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class GateClosed(Exception):
    """The gate was closed while a thread waited for a slot: the read is not to be made."""


class ReadGate:
    """Lets at most `limit` threads read at once; the limit follows the reads measured so far.

    A read costs this process CPU time under the GIL it shares with the sync's writer (building the
    request and parsing the answer: about 1 ms with httpx) and waits for epilot the rest of the
    time. Every thread that wants the GIL takes turns with the writer, so readers answered on
    loopback within a millisecond or two, sixteen at once, left the writer a fraction of it; readers
    waiting for a distant epilot hold it rarely and need many at once to keep up. The limit is
    therefore `share` times (wall time / CPU time) of a read, between 1 and `most`: readers hold
    the GIL about `share` of the time, however fast epilot answers. The wall time is the shortest
    of the recent reads, as the others include waits for the GIL, which more readers would lengthen.
    """

    SMOOTHING = 0.2  # weight of the latest read in the average CPU time
    WINDOW = 32  # reads whose shortest wall time counts

    def __init__(self, *, most: int, share: float = 0.5, start: int = 2, clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        """`clock` measures a read's wall time, `cpu_clock` the CPU time of the thread that reads."""
        self.most = most
        self.share = share
        self.limit = max(1, min(most, start))
        self._active = 0
        self._closed = False
        self._walls: deque[float] = deque(maxlen=self.WINDOW)
        self._cpu: float | None = None
        self._changed = threading.Condition()
        self._clock = clock
        self._cpu_clock = cpu_clock

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a free slot, then time the block as one read; raises GateClosed once `close` was called."""
        with self._changed:
            while self._active >= self.limit and not self._closed:
                self._changed.wait()
            if self._closed:
                raise GateClosed
            self._active += 1
        started, cpu = self._clock(), self._cpu_clock()
        try:
            yield
        finally:
            self._measured(self._clock() - started, self._cpu_clock() - cpu)

    def close(self) -> None:
        """Let no waiting thread read any more (those reading finish)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _measured(self, wall: float, cpu: float) -> None:
        with self._changed:
            self._active -= 1
            self._walls.append(wall)
            self._cpu = cpu if self._cpu is None else (1 - self.SMOOTHING) * self._cpu + self.SMOOTHING * cpu
            self.limit = max(1, min(self.most, math.ceil(self.share * min(self._walls) / max(self._cpu, 1e-4))))
            # Wake only as many waiting readers as there are free slots: the others would take the GIL to sleep again.
            self._changed.notify(max(0, self.limit - self._active))
