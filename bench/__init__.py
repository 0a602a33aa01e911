"""Benchmarks (docs/benchmarks.md): each script seeds its own data in a scratch directory and prints its figures."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def scratch_directory(prefix: str) -> Path:
    """A new directory for a benchmark's databases, removed when the process ends (kept, and named, with
    BENCH_KEEP=1 in the environment: its databases are a few hundred MB at 50,000 entities)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("BENCH_KEEP"):
        atexit.register(print, f"kept the benchmark's databases in {path}")
    else:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
