"""The single-flight lock of the sync: one lease per schema in `SyncState`, kept alive by a heartbeat."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time

from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models import Q
from django.utils import timezone

from projects.models import SyncRun, SyncState

logger = logging.getLogger("projects.sync")

class LeaseLost(RuntimeError):
    """Another run took over a schema's lock: this run's lease ran out while it was still working."""


def lease_seconds() -> int:
    return max(3, settings.SYNC_LOCK_SECONDS)


def acquire_lock(schema: str, owner: str) -> bool:
    """Take the schema's lock unless a live holder has it; an expired holder (a crashed run) loses it."""
    with contextlib.suppress(IntegrityError):  # created by a concurrent run a moment ago
        SyncState.objects.get_or_create(schema=schema)
    now = timezone.now()
    previous = SyncState.objects.filter(schema=schema).values_list("lock_owner", flat=True).first()
    taken = SyncState.objects.filter(schema=schema).filter(Q(lock_owner="") | Q(lock_expires_at__lt=now)).update(
        lock_owner=owner, lock_expires_at=now + dt.timedelta(seconds=lease_seconds())
    )
    if taken and previous:
        # The previous holder let its lease run out without releasing it: its process died mid-run.
        SyncRun.objects.filter(owner=previous, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, finished_at=now, error="abandoned: the process running it stopped (lock expired)")
        logger.warning("sync %s: took over the expired lock of %s", schema, previous)
    return taken == 1


def renew_lock(schema: str, owner: str) -> bool:
    """Extend the lease of a lock `owner` holds; False when it is no longer the holder."""
    expires = timezone.now() + dt.timedelta(seconds=lease_seconds())
    return SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_expires_at=expires) == 1


def release_lock(schema: str, owner: str) -> None:
    SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


class SyncLease:
    """The locks of one run, as short leases kept alive by a heartbeat thread in every phase.

    A live run renews its leases every third of SYNC_LOCK_SECONDS, also while it waits for
    epilot or refreshes projects, so it is never taken over; a run killed with SIGKILL stops
    renewing, and its locks are free within SYNC_LOCK_SECONDS. The main thread renews at page
    boundaries as well, so short runs never need the heartbeat's own database connection.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.schemas: list[str] = []
        self._renewed_at = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def acquire(self, schemas: list[str], *, wait_seconds: float = 0.0) -> list[str]:
        """Lock every schema, waiting up to `wait_seconds` while another run holds one; returns the locked ones.

        Nothing is held while waiting (all or none, so two waiting runs cannot split the schemas
        between them); once the wait is over, the schemas that are free are taken and the rest skipped.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            locked = [schema for schema in schemas if acquire_lock(schema, self.owner)]
            if len(locked) == len(schemas) or time.monotonic() >= deadline:
                break
            for schema in locked:
                release_lock(schema, self.owner)
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for schema in schemas:
            if schema not in locked:
                logger.warning("sync %s: another run holds the lock; skipped", schema)
        self.schemas = locked
        self._renewed_at = time.monotonic()
        if self.schemas:
            self._start_heartbeat()
        return list(self.schemas)

    def renew_if_due(self) -> None:
        """Renew from the calling thread when a sixth of the lease has passed; raises LeaseLost."""
        self.check()
        if time.monotonic() - self._renewed_at >= lease_seconds() / 6:
            self._renew()
            self.check()

    def check(self) -> None:
        """Raise LeaseLost when the heartbeat found a lock taken over."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=lease_seconds())
        for schema in self.schemas:
            release_lock(schema, self.owner)

    def _renew(self) -> None:
        with self._mutex:
            for schema in self.schemas:
                if not renew_lock(schema, self.owner):
                    self._lost = f"sync lock for {schema} was lost (lease expired and taken by another run)"
            self._renewed_at = time.monotonic()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name="sync-lease-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(1.0):
                if time.monotonic() - self._renewed_at < lease_seconds() / 3:
                    continue
                try:
                    self._renew()
                except Exception:  # a failed renewal is tried again a second later; expiry is the only judge
                    logger.exception("sync lease renewal failed")
        finally:
            connection.close()
