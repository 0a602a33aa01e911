"""A full pass's pages read from epilot and built into rows in a forked process, beside the process that writes them.

Reading a page (the HTTP exchange, its JSON) and building its rows cost about as much CPU as writing
it, and a Python process runs its threads on one core at a time: a full sync in one process is
bound by that core while the machine's other cores idle. Here a child process, forked from the
sync, reads the schema's pages (with read ahead), builds each one with `prepare_page` and hands it
over whole through a pipe; the parent writes the pages as before, in order. A child builds on ahead
of the parent (up to BUILT_AHEAD_BYTES of pages), so the next schema's pages are built while the
schema before is written. Who converts a page's date-times for the database (`adapted`) depends on who
has time for it: the parent while it waits for the pages of the run's first schema, the child where it
builds ahead (`built_ahead`) and the parent, writing the schema before, has none.

Only for clients that talk to epilot over the network: the child opens connections of its own
(`EpilotClient.network_copy`). It touches no database (`prepare_page` is pure) and ends with
`os._exit`, so none of the parent's connections, exit handlers or test fixtures run their clean-up
in it.
"""
from __future__ import annotations

import collections
import functools
import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, NoReturn

from config.tuning import tune_forked_helper
from integrations.epilot import EpilotClient
from integrations.epilot.observer import RecordingObserver, replay
from projects.mirror.forked import error_from, pickled_error, reap
from projects.mirror.pages import PreparedPage, adapted, prepare_page
from projects.mirror.prefetch import prefetched

HANDOFF_BUFFER = 1 << 20  # bytes a pipe read or write moves at once; a page is a few MB
PAGES_AHEAD = 3  # pages taken over and unpacked while one is written
BUILT_AHEAD_BYTES = 64 << 20  # a child's pickled pages waiting for the parent to read them (a page is a few MB)


class PageBuilderLost(RuntimeError):
    """The process building the pages ended without handing over its last page or its error."""


def can_build_in_child(client: EpilotClient) -> bool:
    """Whether `client` can be copied into a forked process (it talks to epilot over the network)."""
    return hasattr(os, "fork") and client.over_network


class PagesBuiltInChild:
    """(hits, prepared page) for every page of `query` (searchEntities, deleted entities included), built in a child.

    The child is forked at once and reads its first pages while the caller still writes another
    schema's (`built_ahead`: its pages are then adapted there too). Iterating raises what reading or
    building raised in the child (the EpilotError as it was), after the pages before it;
    PageBuilderLost where the child ended without a word. `close` stops the child, iterated or not.
    """

    def __init__(self, client: EpilotClient, schema: str, query: str, *, built_ahead: bool = False) -> None:
        self.observer = client.observer
        self.schema = schema
        self.built_ahead = built_ahead
        read_end, write_end = os.pipe()
        self.child = os.fork()
        if self.child == 0:
            os.close(read_end)
            _build_and_hand_over(client, schema, query, write_end, adapt=built_ahead)
        os.close(write_end)
        self.read_end = read_end
        self.iterated = False  # from the first page on, the pipe is the reading thread's and the child the iterator's
        self.pages = self._taken_over()

    def __iter__(self) -> Iterator[tuple[int, PreparedPage]]:
        return self

    def __next__(self) -> tuple[int, PreparedPage]:
        return next(self.pages)

    def close(self) -> None:
        self.pages.close()
        if not self.iterated:
            os.close(self.read_end)
            reap(self.child, stop=True)
            self.iterated = True  # a second close does nothing

    def _taken_over(self) -> Iterator[tuple[int, PreparedPage]]:
        # A thread takes the pages off the pipe as they come and unpacks them, so the child builds on while this
        # process writes (and the writer has its page ready when the database is done with the one before).
        messages = prefetched(_messages(self.read_end, self.schema),
                              functools.partial(_unpacked_message, adapt=not self.built_ahead), ahead=PAGES_AHEAD)
        self.iterated = True
        ended = False
        try:
            for message in messages:
                replay(message[1], self.observer)
                if message[0] == "page":
                    yield message[2], message[3]
                    continue
                ended = True
                if message[0] == "error":
                    raise error_from(message[2], message[3], PageBuilderLost)
        finally:
            messages.close()
            reap(self.child, stop=not ended)


def _messages(read_end: int, schema: str) -> Iterator[tuple]:
    """The child's messages from the pipe, to its last ("end" or "error"); raises PageBuilderLost where the pipe ends
    first."""
    with os.fdopen(read_end, "rb", buffering=HANDOFF_BUFFER) as source:
        while True:
            try:
                message = pickle.load(source)
            except (EOFError, OSError, pickle.UnpicklingError):
                raise PageBuilderLost(f"the process building the {schema} pages ended early") from None
            yield message
            if message[0] != "page":
                return


def _unpacked_message(message: tuple, *, adapt: bool) -> tuple:
    """A "page" message with its page's rows unpacked, and adapted where `adapt` says (kind, calls, hits, page); any
    other message as it is."""
    if message[0] != "page":
        return message
    page = _unpacked(message[3], message[4])
    return (*message[:3], adapted(page) if adapt else page)


def _build_and_hand_over(client: EpilotClient, schema: str, query: str, write_end: int, *, adapt: bool) -> NoReturn:
    """The child's whole life: each page (adapted where `adapt` says), then "end" or "error" (the pickled error, its
    text), each message with the epilot calls made since the one before; never returns."""
    status = 0
    try:
        tune_forked_helper()
        with _HandOver(write_end) as sink:
            calls = RecordingObserver()  # told to the parent's observer with each message
            try:
                own = client.network_copy(observer=calls)
                for page in own.iter_search_documents(query, include_deleted="true", read_ahead=True):
                    prepared = prepare_page(schema, page.documents)
                    sink.send(("page", calls.taken(), page.hits, *_packed(adapted(prepared) if adapt else prepared)))
            except _ParentGone:
                raise
            except Exception as exc:  # handed to the parent, which raises it
                sink.send(("error", calls.taken(), pickled_error(exc), f"{type(exc).__name__}: {exc}"))
            else:
                sink.send(("end", calls.taken()))
    except BaseException:  # the parent stopped reading (a broken pipe): nobody is left to tell
        status = 1
    finally:
        os._exit(status)


class _ParentGone(Exception):
    """The pipe to the parent broke: it stopped reading."""


class _HandOver:
    """The child's messages, pickled and written to the pipe by a thread of their own, up to BUILT_AHEAD_BYTES waiting.

    A pipe holds a few kilobytes: written directly, a child whose schema comes next would build one
    page and then wait until the parent reads its pipe. Here it builds on while the schema before
    is written, on the time of the core that process leaves free, and its pages are ready when the
    parent comes to them. `send` raises _ParentGone once the pipe broke; leaving the block waits
    until every message is written.
    """

    def __init__(self, write_end: int) -> None:
        self.sink = os.fdopen(write_end, "wb", buffering=HANDOFF_BUFFER)
        self.waiting: collections.deque[bytes | None] = collections.deque()
        self.waiting_bytes = 0
        self.changed = threading.Condition()
        self.broken = False
        self.writer = threading.Thread(target=self._write, name="page-hand-over", daemon=True)
        self.writer.start()

    def __enter__(self) -> _HandOver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._put(None)
        self.writer.join()
        if self.broken:
            raise _ParentGone

    def send(self, message: tuple) -> None:
        self._put(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def _put(self, data: bytes | None) -> None:
        size = len(data) if data else 0
        with self.changed:
            # One message always fits, however large: the budget bounds what waits, not what a page may hold.
            self.changed.wait_for(lambda: self.broken or not self.waiting or self.waiting_bytes + size <= BUILT_AHEAD_BYTES)
            if self.broken:
                raise _ParentGone
            self.waiting.append(data)
            self.waiting_bytes += size
            self.changed.notify_all()

    def _write(self) -> None:
        try:
            with self.sink:
                while True:
                    with self.changed:
                        self.changed.wait_for(lambda: self.waiting)
                        data = self.waiting[0]
                    if data is None:
                        return
                    self.sink.write(data)
                    self.sink.flush()  # the parent waits for this page, not for the buffer to fill
                    with self.changed:
                        self.waiting.popleft()
                        self.waiting_bytes -= len(data)
                        self.changed.notify_all()
        except BaseException:  # a broken pipe, mostly: the builder must not wait for a writer that is gone
            with self.changed:
                self.broken = True
                self.changed.notify_all()


# A page's rows travel as tuples under their keys (a page's rows share them): pickling dicts repeats every key in
# every row. Date-times travel as they are, which pickles cheaper than their ISO texts and parses back cheaper too.
Packed = list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]  # (keys, rows)


def _packed(page: PreparedPage) -> tuple[PreparedPage, Packed]:
    """`page` without its rows, and the rows grouped by their keys."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for row in page.rows.values():
        keys = tuple(row)
        group = groups.get(keys)
        if group is None:
            group = groups[keys] = []
        group.append(tuple(row.values()))
    return replace(page, rows={}), list(groups.items())


def _unpacked(page: PreparedPage, packed: Packed) -> PreparedPage:
    rows: dict[str, dict[str, Any]] = {}
    for keys, values in packed:
        by_id = keys.index("epilot_id")
        for row in values:
            rows[row[by_id]] = dict(zip(keys, row, strict=True))
    return replace(page, rows=rows)
