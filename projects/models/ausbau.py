"""Ausbau projects, derived from the mirror (services/projects.py)."""
from __future__ import annotations

from django.db import models

from projects.models.entities import Opportunity


class AusbauProject(models.Model):
    """One expansion project per opportunity in scope; phase, progress and budget derived in services/projects.py."""

    class Phase(models.TextChoices):
        PLANNING = "planning", "Planung"
        APPROVED = "approved", "Genehmigt"
        CONSTRUCTION = "construction", "Im Bau"
        COMPLETED = "completed", "Abgeschlossen"
        CANCELLED = "cancelled", "Abgebrochen"

    opportunity = models.OneToOneField(Opportunity, on_delete=models.CASCADE, related_name="project")
    title = models.CharField(max_length=500)
    phase = models.CharField(max_length=20, choices=Phase.choices, db_index=True)
    progress_percent = models.PositiveSmallIntegerField(default=0)
    current_section = models.CharField(max_length=300, blank=True)
    current_step = models.CharField(max_length=300, blank=True)
    budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    has_running_workflow = models.BooleanField(default=False, db_index=True)
    tags = models.CharField(
        max_length=1000, blank=True, help_text="the opportunity's tags as ',a,b,' for filtering on any database"
    )
    updated_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "Ausbauprojekt"
        verbose_name_plural = "Ausbauprojekte"
        ordering = ["-updated_at", "id"]

    def __str__(self) -> str:
        return self.title
