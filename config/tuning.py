"""Process tuning for the processes that write the mirror: Celery workers, the sync command, benchmarks.

Applied once, when such a process starts (Celery's `worker_process_init`; a full sync's forked helpers as they
begin), never inside a service.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys

# glibc's mallopt() parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
HELPER_MMAP_THRESHOLD_BYTES = 64 << 20  # a page body is a few MB: kept on the heap for the next page
HELPER_TRIM_THRESHOLD_BYTES = 256 << 20  # freed memory a helper keeps rather than giving it back page by page


@functools.cache  # once per process
def tune_process() -> None:
    """Fewer garbage collections, a shorter GIL switch interval, two shared malloc arenas, and large blocks
    given back to the system when freed.

    A sync page of a thousand documents allocates some 100,000 dicts and lists that live only until
    the page is written; at the default threshold the collector ran many times per page and scanned
    the process's long-lived objects again and again. Reference counting frees the pages; the
    collector is only needed for cycles, which pages do not make. Whatever is alive now (Django, the
    app) is frozen out of the collector's scans. The writer hands the GIL to the sync's prefetch
    thread at every database call and then waited up to a switch interval to get it back. glibc gives
    threads malloc arenas of their own, and every arena kept its own high-water mark. glibc also raises
    the size from which it maps a block of its own to the largest block freed so far; a sync's page
    bodies (megabytes) then came from the heap, whose free space between long-lived objects is never
    given back, and the peak grew with the number of pages (docs/benchmarks.md).
    """
    gc.freeze()
    generation0, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(max(generation0, 50_000), generation1, generation2)
    sys.setswitchinterval(0.001)
    _tune_malloc()


def _tune_malloc() -> None:
    """glibc: threads started from now on share two malloc arenas, as MALLOC_ARENA_MAX=2 would, and blocks from
    256 KiB on are mapped on their own and unmapped when freed, as MALLOC_MMAP_THRESHOLD_ would (each unless set)."""
    _malloc_options(("MALLOC_ARENA_MAX", M_ARENA_MAX, 2), ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def tune_forked_helper() -> None:
    """In a helper forked by a full sync (page builder, execution reader): glibc keeps the memory it frees for the
    next page, unless MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ say otherwise.

    The helper inherits the parent's low mmap threshold (`tune_process`), meant for a long-lived
    process whose peak must not grow with the number of pages. A helper lives for one pass and
    handles one page body after another: mapped afresh and unmapped when freed, each body's memory
    was faulted in again, a kernel page at a time (docs/benchmarks.md). What the helper keeps is
    given back when it exits.
    """
    _malloc_options(("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, HELPER_MMAP_THRESHOLD_BYTES),
                    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, HELPER_TRIM_THRESHOLD_BYTES))


def _malloc_options(*options: tuple[str, int, int]) -> None:
    """glibc: each (environment variable, mallopt parameter, value) set, unless the variable sets it; elsewhere
    nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc
    for variable, parameter, value in options:
        if variable not in os.environ:
            mallopt(parameter, value)
