"""Process tuning for the processes that write the mirror: Celery workers, the sync command, benchmarks.

Applied once, when such a process starts (Celery's `worker_process_init`), never inside a service.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt() parameter


@functools.cache  # once per process
def tune_process() -> None:
    """Fewer garbage collections, a shorter GIL switch interval, and two shared malloc arenas.

    A sync page of a thousand documents allocates some 100,000 dicts and lists that live only until
    the page is written; at the default threshold the collector ran many times per page and scanned
    the process's long-lived objects again and again. Reference counting frees the pages; the
    collector is only needed for cycles, which pages do not make. Whatever is alive now (Django, the
    app) is frozen out of the collector's scans. The writer hands the GIL to the sync's prefetch
    thread at every database call and then waited up to a switch interval to get it back. glibc gives
    threads malloc arenas of their own, and every arena kept its own high-water mark (docs/benchmarks.md).
    """
    gc.freeze()
    generation0, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(max(generation0, 50_000), generation1, generation2)
    sys.setswitchinterval(0.001)
    _share_malloc_arenas()


def _share_malloc_arenas() -> None:
    """glibc: threads started from now on share two malloc arenas, as MALLOC_ARENA_MAX=2 would (unless that is set)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_ARENA_MAX, 2)
