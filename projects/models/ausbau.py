"""Ausbau projects, derived from the mirror (services/projects.py)."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from projects.models.entities import Opportunity


class AusbauProject(models.Model):
    """One expansion project per opportunity in scope; phase, progress and budget derived in services/projects.py."""

    class Phase(models.TextChoices):
        PLANNING = "planning", _("Planning")
        APPROVED = "approved", _("Approved")
        CONSTRUCTION = "construction", _("Construction")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")

    opportunity = models.OneToOneField(Opportunity, verbose_name=_("opportunity"), on_delete=models.CASCADE,
                                       related_name="project")
    title = models.CharField(_("title"), max_length=500)
    phase = models.CharField(_("phase"), max_length=20, choices=Phase.choices, db_index=True)
    progress_percent = models.PositiveSmallIntegerField(_("progress (%)"), default=0)
    current_section = models.CharField(_("current section"), max_length=300, blank=True)
    current_step = models.CharField(_("current step"), max_length=300, blank=True)
    budget = models.DecimalField(_("budget"), max_digits=14, decimal_places=2, null=True, blank=True)
    has_running_workflow = models.BooleanField(_("workflow running"), default=False, db_index=True)
    tags = models.CharField(_("tags"),
        max_length=1000, blank=True, help_text=_("the opportunity's tags as ',a,b,' for filtering on any database")
    )
    updated_at = models.DateTimeField(_("updated"), db_index=True)

    class Meta:
        verbose_name = _("Ausbau project")
        verbose_name_plural = _("Ausbau projects")
        ordering = ["-updated_at", "id"]

    def __str__(self) -> str:
        return self.title
