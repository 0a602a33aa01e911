"""What the sync's forked helpers (page_builder.py, execution_reader.py) share: errors across the pipe, and the end."""
from __future__ import annotations

import contextlib
import os
import pickle
import signal


def pickled_error(error: Exception) -> bytes | None:
    """`error` pickled, or None where it does not survive the round trip (an attribute that does not pickle)."""
    try:
        data = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception:
        return None
    return data


def error_from(data: bytes | None, text: str, lost: type[Exception]) -> Exception:
    """The error a child handed over: as it was raised there, else `lost` with its text."""
    return pickle.loads(data) if data is not None else lost(f"failed in a forked process: {text}")


def reap(child: int, *, stop: bool) -> None:
    """Wait for the child to end; `stop` ends it first (the parent stopped listening, or it ended without a word)."""
    if stop:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)
