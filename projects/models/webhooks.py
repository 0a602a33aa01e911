"""Deliveries of epilot webhooks: one row per `webhook-id`, so a repeated delivery changes nothing."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class WebhookEvent(models.Model):
    """A signed delivery from epilot and what became of it; the entity is re-read, never trusted from the body."""

    class Outcome(models.TextChoices):
        RECEIVED = "received", _("Received")
        PROCESSED = "processed", _("Processed")
        FAILED = "failed", _("Failed")

    webhook_id = models.CharField(_("webhook id"), max_length=200, unique=True)
    event_id = models.CharField(_("event id"), max_length=200, blank=True, db_index=True)
    organization_id = models.CharField(_("organisation"), max_length=64, blank=True)
    schema = models.CharField(_("entity type"), max_length=100, blank=True)
    entity_epilot_id = models.CharField(_("entity (epilot id)"), max_length=64, blank=True, db_index=True)
    automation = models.CharField(_("automation"), max_length=300, blank=True)
    received_at = models.DateTimeField(_("received"), db_index=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices, default=Outcome.RECEIVED, db_index=True)
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.webhook_id} {self.schema} {self.entity_epilot_id}"

    @property
    def latency_seconds(self) -> float | None:
        return (self.processed_at - self.received_at).total_seconds() if self.processed_at else None
