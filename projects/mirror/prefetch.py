"""Work on the next item of an iterator done in a thread while the caller works on the one before."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetched(items: Iterator[T], prepare: Callable[[T], U], *, ahead: int = 1) -> Iterator[U]:
    """Yield `prepare(item)` for the items of `items`, up to `ahead` of them fetched and prepared in a thread meanwhile.

    A sync's epilot answer times and the building of rows then overlap the writing of the page
    before; `prepare` must not touch the database (the thread has no connection of its own). An
    error of the iterator or of `prepare` is raised here, in order, after the items before it.
    Closing the returned iterator lets the thread end once its current item is done.
    """
    handoff: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for item in items:
                if not hand_over(prepare(item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over(_Failed(exc))
            return
        hand_over(_END)

    threading.Thread(target=fetch, name="epilot-prefetch", daemon=True).start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
