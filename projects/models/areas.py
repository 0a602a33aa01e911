"""Rollout areas (Ausbaugebiete): the households in scope, the pre-marketing quota, and the figures derived for them."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class RolloutArea(models.Model):
    """A cluster of streets built only if enough households sign before the deadline; figures by services/areas.py."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    quota_percent = models.DecimalField(_("quota (%)"), max_digits=5, decimal_places=1, default=40,
                                        help_text=_("Share of the households in scope that must sign before the build."))
    deadline = models.DateField(_("pre-marketing deadline"), null=True, blank=True)
    notes = models.TextField(_("notes"), blank=True)
    units_in_scope = models.PositiveIntegerField(_("units in scope"), default=0)
    addresses_in_scope = models.PositiveIntegerField(_("addresses in scope"), default=0)
    units_signed = models.PositiveIntegerField(_("units signed"), default=0)
    units_connected = models.PositiveIntegerField(_("units connected"), default=0)
    projects_by_phase = models.JSONField(_("projects by phase"), default=dict, blank=True)
    figures_at = models.DateTimeField(_("figures computed"), null=True, blank=True)

    class Meta:
        verbose_name = _("rollout area")
        verbose_name_plural = _("rollout areas")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AreaAddress(models.Model):
    """A household address in scope of an area; `key` is its normalised form, as opportunities are matched on."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE, related_name="addresses")
    postal_code = models.CharField(_("postal code"), max_length=10)
    street = models.CharField(_("street"), max_length=200)
    house_number = models.CharField(_("house number"), max_length=20)
    units = models.PositiveIntegerField(_("units"), help_text=_("Wohneinheiten: households at this address."))
    key = models.CharField(_("address key"), max_length=240, db_index=True)
    # What the address contributes to its area's figures (services/areas.py), kept so a change recomputes its own.
    signed = models.BooleanField(_("signed"), default=False)
    connected = models.BooleanField(_("connected"), default=False)
    projects_planning = models.PositiveIntegerField(_("projects in planning"), default=0)
    projects_approved = models.PositiveIntegerField(_("approved projects"), default=0)
    projects_construction = models.PositiveIntegerField(_("projects in construction"), default=0)
    projects_completed = models.PositiveIntegerField(_("completed projects"), default=0)
    projects_cancelled = models.PositiveIntegerField(_("cancelled projects"), default=0)

    class Meta:
        verbose_name = _("address in scope")
        verbose_name_plural = _("addresses in scope")
        ordering = ["area", "street", "house_number"]
        constraints = [models.UniqueConstraint(fields=["area", "key"], name="an_address_once_per_area")]

    def __str__(self) -> str:
        return f"{self.street} {self.house_number}, {self.postal_code}"


class AreaSnapshot(models.Model):
    """Units signed in an area on a day, for the take-up chart."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE, related_name="snapshots")
    day = models.DateField(_("day"))
    units_signed = models.PositiveIntegerField(_("units signed"))

    class Meta:
        ordering = ["area", "day"]
        constraints = [models.UniqueConstraint(fields=["area", "day"], name="one_snapshot_per_area_and_day")]
