"""Benchmark: page 20,000 entities from the standalone sandbox through the gateway.

Prints entities per second, peak memory of the client process, and the sandbox's own time
to answer one 1,000-entity page (in-process, no HTTP), which must stay well under 100 ms.
Run: .venv/bin/python bench/client_paging.py [--entities 20000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402
from integrations.epilot import EpilotClient, ServiceURLs  # noqa: E402
from integrations.epilot_sandbox import (  # noqa: E402
    SandboxApp,
    SandboxStore,
    free_loopback_port,
    seed_bulk,
    seed_demo,
    wait_until_serving,
)
from integrations.epilot_sandbox.http import Request  # noqa: E402
from integrations.epilot_sandbox.http import dumps as _dumps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=20_000)
    args = parser.parse_args()

    workdir = scratch_directory("bench-paging-")
    db = workdir / "sandbox.sqlite3"
    store = SandboxStore(db)
    seed_demo(store)
    seed_bulk(store, contacts=args.entities, opportunities=0, orders=0, seed=1)

    # The sandbox's own cost of one full page, without HTTP.
    app = SandboxApp(store)
    body = json.dumps({"q": "_schema:contact", "size": 1000, "sort": ["_updated_at:asc", "_id:asc"]}).encode()
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        status, payload, _ = app.handle(Request("POST", "/v1/entity:search", {}, {"authorization": "Bearer b"}, body))
        _dumps(payload)
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200

    port = free_loopback_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "manage.py", "epilot_sandbox", "--port", str(port), "--db", str(db)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        client = EpilotClient(token="bench", urls=ServiceURLs.single_origin(url))
        tracemalloc.start()
        started = time.perf_counter()
        count = pages = 0
        for page in client.iter_search_entities("_schema:contact", page_size=1000):
            pages += 1
            count += len(page.results)
        elapsed = time.perf_counter() - started
        _, peak_traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"entities paged:            {count} in {pages} pages")
    print(f"client throughput:         {count / elapsed:,.0f} entities/s ({elapsed:.2f} s)")
    print(f"client peak memory:        {peak_traced / 1e6:.1f} MB traced by Python, {max_rss_mb:.0f} MB max RSS (process)")
    print(
        f"sandbox 1,000-entity page: median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms (in-process, 20 runs)"
    )


if __name__ == "__main__":
    main()
