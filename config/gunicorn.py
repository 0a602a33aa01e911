"""gunicorn settings the Procfile passes with `-c`: metrics of a worker that exited no longer count as live."""
import os


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
