"""Staff profiles and step jobs: working workflow steps from the back-office."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class StaffProfile(models.Model):
    """What links a back-office user to epilot: their epilot user id (for "my tasks") and the digest choice."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile",
                                verbose_name=_("user"))
    epilot_user_id = models.CharField(_("epilot user id"), max_length=64, blank=True, db_index=True,
                                      help_text=_("The id epilot assigns steps to; links 'my tasks' and the digest."))
    task_digest = models.BooleanField(_("daily task e-mail"), default=True,
                                      help_text=_("A daily e-mail with overdue and newly assigned steps."))
    last_digest_at = models.DateTimeField(_("last digest sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("staff profile")
        verbose_name_plural = _("staff profiles")

    def __str__(self) -> str:
        return str(self.user)


class StepJob(models.Model):
    """One operation applied to many steps in the background, item by item, resumable."""

    class Operation(models.TextChoices):
        COMPLETE = "complete", _("Complete")
        SKIP = "skip", _("Skip")
        REOPEN = "reopen", _("Reopen")
        ASSIGN = "assign", _("Assign")
        SET_DUE = "set_due", _("Set due date")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")

    operation = models.CharField(_("operation"), max_length=20, choices=Operation.choices)
    parameters = models.JSONField(_("parameters"), default=dict, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("requested by"), null=True,
                                     on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(_("triggered by"), max_length=100, default="admin")
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("step job")
        verbose_name_plural = _("step jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_operation_display()} ({self.pk})"


class StepJobItem(models.Model):
    """One step of a step job; `done` items are never written again, so a resumed job repeats nothing."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DONE = "done", _("Done")
        UNCHANGED = "unchanged", _("Already so in epilot")
        CONFLICT = "conflict", _("Conflict")
        FAILED = "failed", _("Failed")

    job = models.ForeignKey(StepJob, verbose_name=_("job"), on_delete=models.CASCADE, related_name="items")
    execution_epilot_id = models.CharField(_("execution (epilot id)"), max_length=64)
    step_epilot_id = models.CharField(_("step (epilot id)"), max_length=64)
    label = models.CharField(_("label"), max_length=500, blank=True)
    expected_status = models.CharField(_("status seen"), max_length=30, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(_("error"), blank=True)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["job", "execution_epilot_id", "step_epilot_id"],
                                               name="a_step_once_per_job")]
