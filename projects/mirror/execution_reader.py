"""A full pass's execution reads made in a forked process, so that the HTTP exchanges do not take turns with the writer.

`ExecutionFetcher` reads executions in threads of the sync's own process, where each read's CPU
work needs the GIL the writer needs too; its gate therefore keeps the readers
to half of that lock, and on a fast network the reads fall behind the pages. Here a child, forked
once per run, takes the same requests through a pipe, reads them with threads of its own (as many
at once as epilot's answer time asks for, see ReadGate) and answers through another pipe; a thread
of the parent takes the answers off it. The parent decides what is read and stores what comes back,
in order, exactly as with `ExecutionFetcher`.

The child touches no database, has its own connections (`EpilotClient.network_copy`) and ends with
`os._exit`; its epilot calls travel with the answers and are counted by the parent's observer.
"""
from __future__ import annotations

import contextlib
import copyreg
import io
import os
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any, BinaryIO, NoReturn

from config.tuning import tune_forked_helper
from integrations.epilot import EpilotClient
from integrations.epilot.observer import RecordingObserver, replay
from projects.mirror.forked import error_from, pickled_error, reap
from projects.mirror.intake import (
    EXECUTION_AHEAD,
    EXECUTION_BATCH,
    EXECUTION_FETCHERS,
    Answer,
    read_executions,
    v2_definition_ids,
)
from projects.mirror.pacing import ReadGate

Change = tuple[str, str, Any]  # schema, entity id, its `workflows`


class ExecutionReaderLost(RuntimeError):
    """The process reading the executions ended before it answered every request."""


class ExecutionsReadInChild:
    """`ExecutionFetcher`'s interface (`ready`, `answers`; a context manager), its reads made in a forked process.

    Leaving the context ends the child at once: reads not answered yet are dropped (their entities
    stay recorded as pending reads for the next run).
    """

    def __init__(self, client: EpilotClient, *, ahead: int = EXECUTION_AHEAD) -> None:
        self.ahead = ahead
        self.observer = client.observer
        v2_ids = v2_definition_ids()  # read here: the child touches no database
        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        self.child = os.fork()
        if self.child == 0:
            os.close(requests_write)
            os.close(answers_read)
            _read_and_answer(client, v2_ids, requests_read, answers_write)
        os.close(requests_read)
        os.close(answers_write)
        self.requests: BinaryIO = os.fdopen(requests_write, "wb")
        self.started = 0  # requests sent, numbered from 0
        self.taken = 0  # answers handed to the caller, in order
        self.arrived: dict[int, tuple] = {}  # the child's messages by request number, until taken
        self.lost = False
        self.changed = threading.Condition()
        self.receiver = threading.Thread(target=self._receive, args=(answers_read,), name="epilot-executions-answers",
                                         daemon=True)
        self.receiver.start()

    def __enter__(self) -> ExecutionsReadInChild:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self.requests.close()
        reap(self.child, stop=True)
        self.receiver.join()

    def feed(self, changes: list[Change]) -> None:
        """Send the changes not sent yet, as far as `ahead` allows."""
        upto = min(len(changes), self.taken + self.ahead)
        if self.started >= upto:
            return
        batch = [(number, changes[number]) for number in range(self.started, upto)]
        self.started = upto
        try:
            pickle.dump(batch, self.requests, pickle.HIGHEST_PROTOCOL)
            self.requests.flush()
        except OSError:  # the child is gone; waiting for its answers says so
            with self.changed:
                self.lost = True

    def answers(self, changes: list[Change]) -> Iterator[list[Answer]]:
        """Every change's answer, in order, EXECUTION_BATCH at a time; raises EpilotError as a read did."""
        self.feed(changes)
        while self.taken < self.started:
            batch = [self._next() for _ in range(min(EXECUTION_BATCH, self.started - self.taken))]
            self.feed(changes)
            yield batch

    def ready(self, changes: list[Change]) -> list[Answer]:
        """The answers read so far, in order, without waiting for the others; sends more requests.

        A read that failed stays where it is (and the answers after it wait) for `answers` to raise.
        """
        batch = []
        with self.changed:
            while self.arrived.get(self.taken, ("",))[0] == "answer":
                batch.append(self.arrived.pop(self.taken)[1])
                self.taken += 1
        self.feed(changes)
        return batch

    def _next(self) -> Answer:
        with self.changed:
            while self.taken not in self.arrived and not self.lost:
                self.changed.wait()
            message = self.arrived.pop(self.taken, None)
            if message is None:
                raise ExecutionReaderLost("the process reading the executions ended early")
            self.taken += 1
        if message[0] == "error":
            raise error_from(message[1], message[2], ExecutionReaderLost)
        return message[1]

    def _receive(self, answers_read: int) -> None:
        """Take the child's messages off the pipe until it ends: ("answer", number, calls, answer) or
        ("error", number, calls, pickled error, its text)."""
        with os.fdopen(answers_read, "rb") as source:
            while True:
                try:
                    kind, number, calls, *rest = pickle.load(source)
                except Exception:  # the pipe ended (or broke): whoever waits is told the reader is lost
                    break
                replay(calls, self.observer)
                with self.changed:
                    self.arrived[number] = (kind, *rest)
                    self.changed.notify_all()
        with self.changed:
            self.lost = True
            self.changed.notify_all()


def _read_and_answer(client: EpilotClient, v2_ids: set[str], requests_read: int, answers_write: int) -> NoReturn:
    """The child's whole life: read each request's executions, answer each as it is read; never returns."""
    status = 0
    try:
        tune_forked_helper()
        calls = RecordingObserver()
        own = client.network_copy(observer=calls)
        # Only readers share this process's GIL: they may hold all of it (share 1), however fast epilot answers.
        gate = ReadGate(most=EXECUTION_FETCHERS, share=1.0)
        sending = threading.Lock()
        with os.fdopen(answers_write, "wb") as sink, os.fdopen(requests_read, "rb") as source, \
                ThreadPoolExecutor(max_workers=EXECUTION_FETCHERS) as pool:

            def answer(number: int, change: Change) -> None:
                try:
                    with gate.slot():
                        answered: tuple = ("answer", number, read_executions(own, change, v2_ids))
                except Exception as exc:  # handed to the parent, which raises it in order
                    answered = ("error", number, pickled_error(exc), f"{type(exc).__name__}: {exc}")
                with sending:
                    try:
                        data = _pickled_message((answered[0], number, calls.taken(), *answered[2:]))
                    except Exception as exc:  # an answer that does not pickle fails the run, not the child
                        data = _pickled_message(("error", number, [], None, f"{type(exc).__name__}: {exc}"))
                    sink.write(data)
                    sink.flush()

            while True:
                try:
                    batch = pickle.load(source)
                except EOFError:  # the parent is done
                    break
                for number, change in batch:
                    pool.submit(answer, number, change)
    except BaseException:  # the parent stopped listening (a broken pipe): nobody is left to tell
        status = 1
    finally:
        os._exit(status)


def _pickled_message(message: tuple) -> bytes:
    """`message` pickled whole (a failure leaves nothing half-written); parsed executions' read-only mappings travel
    as dicts."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH_TABLE
    pickler.dump(message)
    return buffer.getvalue()


def _reduce_mapping_proxy(mapping: MappingProxyType) -> tuple:
    return read_only, (dict(mapping),)


_DISPATCH_TABLE = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping_proxy}


def read_only(mapping: dict) -> MappingProxyType:
    """A read-only view of `mapping`, as the parsed executions hold their documents."""
    return MappingProxyType(mapping)
