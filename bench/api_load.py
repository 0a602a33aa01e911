"""Benchmark: the project API under concurrent load, against a minimal Django view as the floor.

Seeds 20,000 projects (sandbox → sync), serves the app with gunicorn on 127.0.0.1, and drives it
with wrk (Debian package) for a bounded time per endpoint. Prints requests/s and p50/p99 latency for
`projects/` (page of 100), `projects/{id}/status/` (random ids) and the floor views.

    DATABASE_URL=postgres://user@127.0.0.1:5432/db .venv/bin/python bench/api_load.py [--projects 20000] [--seconds 10]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402

LUA_RANDOM_STATUS = """
local low = tonumber(os.getenv("BENCH_LOW")); local high = tonumber(os.getenv("BENCH_HIGH"))
local prefix = os.getenv("BENCH_PREFIX"); local suffix = os.getenv("BENCH_SUFFIX")
math.randomseed(42)
request = function() return wrk.format(nil, prefix .. math.random(low, high) .. suffix) end
"""


def wrk(
    url: str, *, token: str | None, seconds: int, connections: int, script: Path | None, env: dict[str, str]
) -> tuple[float, str, str]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, env={**os.environ, **env}, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    distribution = re.search(r"Latency Distribution.*?50%\s+(\S+).*?99%\s+(\S+)", output, re.S)
    p50, p99 = distribution.group(1), distribution.group(2)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} failed responses\n{output}")
    return rps, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("note: DATABASE_URL is not PostgreSQL; the issue's figures are for PostgreSQL")

    workdir = scratch_directory("bench-api-")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "EPILOT_SANDBOX_DB": str(workdir / "sandbox.sqlite3"),
           "LOG_LEVEL": "WARNING", "SECRET_KEY": "bench-only"}
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "seed_sandbox", "--opportunities", str(args.projects)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run([*manage, "sync_epilot", "--full"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    setup = ("import django; django.setup(); from projects.models import AusbauProject as P; "
             "from projects.services.api_clients import api_client_create as c; "
             "print(P.objects.count(), min(P.objects.values_list('id', flat=True)), max(P.objects.values_list('id', flat=True)), "
             "c(name='bench-' + str(__import__('time').time()), scopes=['read'], throttle_rate='10000000/min')[1])")
    count, low, high, token = subprocess.run([sys.executable, "-c", setup], cwd=ROOT, env=env, check=True, capture_output=True,
                                             text=True).stdout.split()
    from integrations.epilot_sandbox import free_loopback_port

    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "bench.wsgi", "--bind", f"127.0.0.1:{port}", "--workers",
                               str(args.workers), "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{base}/floor/projects/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        script = workdir / "random_status.lua"
        script.write_text(LUA_RANDOM_STATUS)
        ids = {"BENCH_LOW": low, "BENCH_HIGH": high}
        runs = [
            ("api  projects/?page_size=100", f"{base}/api/v1/projects/?page_size=100", token, None, {}),
            ("floor projects (100 rows)", f"{base}/floor/projects/", None, None, {}),
            ("api  projects/{id}/status/", base, token, script,
             {**ids, "BENCH_PREFIX": "/api/v1/projects/", "BENCH_SUFFIX": "/status/"}),
            ("floor status", base, None, script, {**ids, "BENCH_PREFIX": "/floor/projects/", "BENCH_SUFFIX": "/status/"}),
        ]
        print(
            f"{count} projects, gunicorn {args.workers} workers, "
            f"wrk 2 threads {args.connections} connections, {args.seconds} s each"
        )
        results = {}
        for label, url, auth, lua, extra in runs:
            rps, p50, p99 = wrk(url, token=auth, seconds=args.seconds, connections=args.connections, script=lua, env=extra)
            results[label] = rps
            print(f"{label:32} {rps:8.0f} req/s   p50 {p50:>8}   p99 {p99:>8}")
        print(
            "list:   API at "
            f"{results['api  projects/?page_size=100'] / results['floor projects (100 rows)']:.2f} of the floor's rate"
        )
        print(f"status: API at {results['api  projects/{id}/status/'] / results['floor status']:.2f} of the floor's rate")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
