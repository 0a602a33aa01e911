"""The sync's state, ledger and quarantine."""
from __future__ import annotations

from django.db import models


class SyncState(models.Model):
    """Per schema: the watermark of the incremental sync and the single-flight lock."""

    schema = models.CharField(max_length=100, unique=True)
    watermark_updated_at = models.DateTimeField(null=True, blank=True)
    watermark_id = models.CharField(max_length=64, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    lock_owner = models.CharField(max_length=100, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Sync-Stand"
        verbose_name_plural = "Sync-Stände"

    def __str__(self) -> str:
        return self.schema


class SyncRun(models.Model):
    """The ledger of sync runs."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Zeitplan"
        COMMAND = "command", "Befehl"
        ADMIN = "admin", "Admin"
        API = "api", "API"

    class Status(models.TextChoices):
        QUEUED = "queued", "Eingeplant"
        RUNNING = "running", "Läuft"
        SUCCEEDED = "succeeded", "Erfolgreich"
        FAILED = "failed", "Fehlgeschlagen"
        SKIPPED = "skipped", "Übersprungen (läuft bereits)"

    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    schemas = models.JSONField(default=list)
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    owner = models.CharField(max_length=100, blank=True, help_text="host:pid of the process that ran it")

    class Meta:
        verbose_name = "Sync-Lauf"
        verbose_name_plural = "Sync-Läufe"
        ordering = ["-started_at"]
        permissions = [("run_sync", "Can start an epilot sync")]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class QuarantinedEntity(models.Model):
    """An epilot entity the sync could not mirror, with the reason and the raw payload."""

    schema = models.CharField(max_length=100)
    epilot_id = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    payload = models.JSONField(default=dict)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    sync_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name = "Quarantäne-Eintrag"
        verbose_name_plural = "Quarantäne"
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.schema} {self.epilot_id or '(no id)'}: {self.reason[:60]}"
