"""Work on the next item of an iterator done in a thread while the caller works on the one before."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from django.db import connection, connections

T = TypeVar("T")
U = TypeVar("U")


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetched(items: Iterator[T], prepare: Callable[[T], U], *, ahead: int = 1,
               finished: Callable[[], None] | None = None) -> Iterator[U]:
    """Yield `prepare(item)` for the items of `items`, up to `ahead` of them fetched and prepared in a thread meanwhile.

    A sync's epilot answer times and the building of rows then overlap the writing of the page
    before; `prepare` must not touch the database (the thread has no connection of its own; see
    `read_ahead`). An error of the iterator or of `prepare` is raised here, in order, after the items
    before it. Closing the returned iterator lets the thread end once its current item is done.
    `finished` is called in the thread as it ends.
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
        outcome: object = _END
        try:
            for item in items:
                if not hand_over(prepare(item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            outcome = _Failed(exc)
        finally:
            if finished:  # before the consumer hears the end: what it opened is closed once the consumer goes on
                try:
                    finished()
                except BaseException as exc:
                    outcome = outcome if isinstance(outcome, _Failed) else _Failed(exc)
        hand_over(outcome)

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


def read_ahead(items: Sequence[T], read: Callable[[T], U], *, in_thread: bool | None = None) -> Iterator[U]:
    """Yield `read(item)` for the items, the next one read from the database in a thread while the caller works on the
    one before (writes the item before, say).

    The thread reads through a connection of its own, closed as it ends, and sees what is committed.
    By default that happens outside a transaction only (another connection would not see its rows);
    `in_thread=True` asks for it inside one whose uncommitted rows the reads do not need. A single
    item, or `in_thread=False`, is read here, in turn. An error of `read` is raised here, after the
    items before it.
    """
    if in_thread is None:
        in_thread = not connection.in_atomic_block
    if not in_thread or len(items) < 2:
        return (read(item) for item in items)
    return prefetched(iter(items), read, finished=connections.close_all)  # the thread's own connections only
