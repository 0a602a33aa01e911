"""The sync's state, ledger and quarantine."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SyncState(models.Model):
    """Per schema: the watermark of the incremental sync and the single-flight lock."""

    schema = models.CharField(_("entity type"), max_length=100, unique=True)
    watermark_updated_at = models.DateTimeField(_("watermark"), null=True, blank=True)
    watermark_id = models.CharField(_("watermark id"), max_length=64, blank=True)
    last_success_at = models.DateTimeField(_("last success"), null=True, blank=True)
    lock_owner = models.CharField(_("lock owner"), max_length=100, blank=True)
    lock_expires_at = models.DateTimeField(_("lock expires"), null=True, blank=True)
    # The table's indexes a full pass dropped to load it faster, as [{"name", "sql"}], until they are built again
    # (projects/mirror/indexes_set_aside.py); written in the transaction that drops them.
    indexes_set_aside = models.JSONField(_("indexes set aside"), default=list, blank=True)

    class Meta:
        verbose_name = _("sync state")
        verbose_name_plural = _("sync states")

    def __str__(self) -> str:
        return self.schema


class SyncRun(models.Model):
    """The ledger of sync runs."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", _("Schedule")
        COMMAND = "command", _("Command")
        ADMIN = "admin", _("Admin")
        API = "api", _("API")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped (already running)")

    trigger = models.CharField(_("trigger"), max_length=20, choices=Trigger.choices)
    schemas = models.JSONField(_("entity types"), default=list)
    full = models.BooleanField(_("full"), default=False)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created = models.PositiveIntegerField(_("created"), default=0)
    updated = models.PositiveIntegerField(_("updated"), default=0)
    deleted = models.PositiveIntegerField(_("deleted"), default=0)
    quarantined = models.PositiveIntegerField(_("quarantined"), default=0)
    pages = models.PositiveIntegerField(_("pages"), default=0)
    started_at = models.DateTimeField(_("started"))
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    owner = models.CharField(_("owner"), max_length=100, blank=True, help_text=_("host:pid of the process that ran it"))

    class Meta:
        verbose_name = _("sync run")
        verbose_name_plural = _("sync runs")
        ordering = ["-started_at"]
        permissions = [("run_sync", "Can start an epilot sync")]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class QuarantinedEntity(models.Model):
    """An epilot entity the sync could not mirror, with the reason and the raw payload."""

    schema = models.CharField(_("entity type"), max_length=100)
    epilot_id = models.CharField(_("epilot id"), max_length=255, blank=True)
    reason = models.TextField(_("reason"))
    payload = models.JSONField(_("payload"), default=dict)
    first_seen_at = models.DateTimeField(_("first seen"))
    last_seen_at = models.DateTimeField(_("last seen"))
    sync_run = models.ForeignKey(SyncRun, verbose_name=_("sync run"), null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name = _("quarantined entity")
        verbose_name_plural = _("quarantine")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.schema} {self.epilot_id or '(no id)'}: {self.reason[:60]}"


class PendingExecutionRead(models.Model):
    """An entity whose changed `workflows` is mirrored while its executions are not read yet.

    Written in the transaction that stores the entity and removed in the one that stores its
    executions: a run or refresh that stops in between leaves it here, and the next sync reads them.
    """

    epilot_id = models.CharField(_("epilot id"), max_length=64, unique=True)
    schema = models.CharField(_("entity type"), max_length=100)
    workflows = models.JSONField(_("workflows"), null=True, blank=True)
    since = models.DateTimeField(_("since"))

    class Meta:
        verbose_name = _("executions to read")
        verbose_name_plural = _("executions to read")

    def __str__(self) -> str:
        return f"{self.schema} {self.epilot_id}"


class Reconciliation(models.Model):
    """One comparison of epilot's ids with the mirror's for a schema, and what it found and fixed."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    schema = models.CharField(_("entity type"), max_length=100)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(_("started"))
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    epilot_count = models.PositiveIntegerField(_("entities in epilot"), default=0)
    mirror_count = models.PositiveIntegerField(_("entities in the mirror"), default=0)
    deleted_found = models.PositiveIntegerField(_("purged in epilot, marked deleted"), default=0)
    missing_found = models.PositiveIntegerField(_("missing in the mirror, fetched"), default=0)
    newer_found = models.PositiveIntegerField(_("newer in epilot, fetched"), default=0)
    webhook_gaps = models.PositiveIntegerField(_("changes no webhook delivered"), default=0)
    requests = models.PositiveIntegerField(_("requests to epilot"), default=0)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("reconciliation")
        verbose_name_plural = _("reconciliations")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["schema", "-started_at"], name="reconciliation_latest")]

    def __str__(self) -> str:
        return f"{self.schema} {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class SchemaAttribute(models.Model):
    """An attribute epilot sends for a schema: when it was first seen and its JSON type.

    Attributes of a schema's first sync are the baseline; one that appears later, or changes its type,
    is drift and is announced (dashboard, API) until staff acknowledge it.
    """

    schema = models.CharField(_("entity type"), max_length=100)
    name = models.CharField(_("attribute"), max_length=200)
    kind = models.CharField(_("JSON type"), max_length=20)
    previous_kind = models.CharField(_("JSON type before"), max_length=20, blank=True)
    first_seen = models.DateTimeField(_("first seen"))
    kind_changed_at = models.DateTimeField(_("type changed"), null=True, blank=True)
    baseline = models.BooleanField(_("known from the first sync"), default=False)
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)

    class Meta:
        verbose_name = _("schema attribute")
        verbose_name_plural = _("schema attributes")
        ordering = ["schema", "name"]
        constraints = [models.UniqueConstraint(fields=["schema", "name"], name="schema_attribute_once")]

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def announced(self) -> bool:
        return self.acknowledged_at is None and (not self.baseline or self.kind_changed_at is not None)
