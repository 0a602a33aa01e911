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
    claimed_until = models.DateTimeField(_("taken by a worker until"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.webhook_id} {self.schema} {self.entity_epilot_id}"

    @property
    def latency_seconds(self) -> float | None:
        return (self.processed_at - self.received_at).total_seconds() if self.processed_at else None


class WebhookSubscription(models.Model):
    """The webhook config this installation provisioned in epilot, its signing secret and its automation flows.

    The secret is stored encrypted (key derived from SECRET_KEY) and never shown again in full; after a
    rotation the previous one is accepted until `previous_valid_until`, for deliveries already under way.
    """

    name = models.CharField(_("name"), max_length=200, unique=True)
    config_id = models.CharField(_("webhook config (epilot id)"), max_length=100, blank=True)
    url = models.URLField(_("receiver URL"), max_length=500)
    schemas = models.JSONField(_("entity types"), default=list)
    flow_ids = models.JSONField(_("automation flows"), default=dict, help_text=_("epilot flow id per entity type"))
    encrypted_secret = models.TextField(_("signing secret (encrypted)"), blank=True)
    secret_hint = models.CharField(_("signing secret"), max_length=20, blank=True)
    organization_id = models.CharField(_("organisation"), max_length=64, blank=True,
                                       help_text=_("epilot organisation of the mirrored entities; its key verifies v1a"))
    encrypted_previous_secret = models.TextField(_("previous signing secret (encrypted)"), blank=True)
    previous_valid_until = models.DateTimeField(_("previous secret valid until"), null=True, blank=True)
    provisioned_at = models.DateTimeField(_("provisioned"), null=True, blank=True)
    rotated_at = models.DateTimeField(_("secret rotated"), null=True, blank=True)
    reconciled_at = models.DateTimeField(_("failed deliveries last replayed"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")
        permissions = [("provision_webhook", _("Can provision the epilot webhook and replay failed deliveries"))]

    def __str__(self) -> str:
        return self.name
