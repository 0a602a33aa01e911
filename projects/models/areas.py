"""Rollout areas (Ausbaugebiete): the households in scope, the pre-marketing quota, and the figures derived for them."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import models
from django.utils import timezone
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
    campaign_start = models.DateField(
        _("campaign start"), null=True, blank=True,
        help_text=_("from this day on, quota and deadline change only by a second person's approval"))
    public_token = models.CharField(_("public gauge token"), max_length=64, blank=True, db_index=True, editable=False)
    outline = models.JSONField(_("outline"), null=True, blank=True,
                               help_text=_("GeoJSON polygon imported with the address list; else the hull of its buildings"))
    figures_at = models.DateTimeField(_("figures computed"), null=True, blank=True)
    promise_connected_weeks = models.PositiveSmallIntegerField(
        _("promise connection after (weeks)"), null=True, blank=True,
        help_text=_("orders without a promised date get one: contract date + these weeks (empty: no rule)"))
    promise_activated_weeks = models.PositiveSmallIntegerField(
        _("promise activation after (weeks)"), null=True, blank=True,
        help_text=_("orders without a promised date get one: contract date + these weeks (empty: no rule)"))
    promise_notice = models.BooleanField(
        _("tell customers when a promise slips"), default=False,
        help_text=_("writes the order's promise_state in epilot when its promise becomes at risk or breached; an "
                    "automation recipe \"Customer notice when a promised date slips\" sends the e-mail"))

    class Meta:
        verbose_name = _("rollout area")
        verbose_name_plural = _("rollout areas")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def campaign_started(self) -> bool:
        return self.campaign_start is not None and self.campaign_start <= timezone.localdate()

    def changes_terms(self, quota_percent: Decimal | None, deadline: dt.date | None) -> bool:
        """Whether these (None: unchanged) differ from the area's quota and deadline."""
        return (quota_percent is not None and quota_percent != self.quota_percent) or \
            (deadline is not None and deadline != self.deadline)


class Stage(models.TextChoices):
    """How far a building came, in the order of the build."""

    IN_SCOPE = "in_scope", _("in scope")
    SIGNED = "signed", _("signed")
    PASSED = "passed", _("passed")
    CONNECTED = "connected", _("connected")
    ACTIVATED = "activated", _("activated")


class AreaAddress(models.Model):
    """A building in scope of an area (an address with its units); `key` is its normalised form, as opportunities are
    matched on."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE, related_name="addresses")
    postal_code = models.CharField(_("postal code"), max_length=10)
    street = models.CharField(_("street"), max_length=200)
    house_number = models.CharField(_("house number"), max_length=20)
    units = models.PositiveIntegerField(_("units"), help_text=_("Wohneinheiten: households at this address."))
    key = models.CharField(_("address key"), max_length=240, db_index=True)
    search_text = models.TextField(_("search words"), blank=True, default="", editable=False,
                                   help_text=_("street, house number and postal code, folded for the header search"))
    # What the address contributes to its area's figures (services/areas.py), kept so a change recomputes its own.
    signed = models.BooleanField(_("signed"), default=False)
    connected = models.BooleanField(_("connected"), default=False)
    projects_planning = models.PositiveIntegerField(_("projects in planning"), default=0)
    projects_approved = models.PositiveIntegerField(_("approved projects"), default=0)
    projects_construction = models.PositiveIntegerField(_("projects in construction"), default=0)
    projects_completed = models.PositiveIntegerField(_("completed projects"), default=0)
    projects_cancelled = models.PositiveIntegerField(_("cancelled projects"), default=0)
    # The building's way through the build (services/funnel.py): the furthest stage and when each milestone was
    # reached, as epilot reports the completion of the step that marks it. Not indexed: an area's few thousand
    # buildings are read by their area, and an indexed column that changes makes PostgreSQL write every index of
    # the row again (the trigram index too) on each change of the figures, instead of updating the row in place.
    stage = models.CharField(_("stage"), max_length=12, choices=Stage.choices, default=Stage.IN_SCOPE)
    signed_at = models.DateTimeField(_("signed"), null=True, blank=True)
    passed_at = models.DateTimeField(_("passed"), null=True, blank=True)
    connected_at = models.DateTimeField(_("connected"), null=True, blank=True)
    activated_at = models.DateTimeField(_("activated"), null=True, blank=True)
    waiting_on = models.CharField(_("waiting on"), max_length=300, blank=True,
                                  help_text=_("the open step of a running workflow at the building"))
    latitude = models.FloatField(_("latitude"), null=True, blank=True)
    longitude = models.FloatField(_("longitude"), null=True, blank=True)
    located_by_import = models.BooleanField(_("coordinates imported"), default=False,
                                            help_text=_("the coordinates came with the address list, not from epilot"))

    class Meta:
        verbose_name = _("building")
        verbose_name_plural = _("buildings")
        ordering = ["area", "street", "house_number"]
        constraints = [models.UniqueConstraint(fields=["area", "key"], name="an_address_once_per_area")]

    def __str__(self) -> str:
        return f"{self.street} {self.house_number}, {self.postal_code}"


class AreaSnapshot(models.Model):
    """Units signed in an area on a day, for the take-up chart, and its funnel that day (buildings and units per
    stage), for the funnel over time."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE, related_name="snapshots")
    day = models.DateField(_("day"))
    units_signed = models.PositiveIntegerField(_("units signed"))
    funnel = models.JSONField(_("funnel"), default=dict, blank=True)

    class Meta:
        ordering = ["area", "day"]
        constraints = [models.UniqueConstraint(fields=["area", "day"], name="one_snapshot_per_area_and_day")]


class Milestone(models.TextChoices):
    """The milestones of the build a workflow step marks (`signed` comes from the orders)."""

    PASSED = "passed", _("passed (fibre in the street)")
    CONNECTED = "connected", _("connected (house connection built)")
    ACTIVATED = "activated", _("activated (service live)")


class MilestoneRule(models.Model):
    """A milestone is reached when this step is COMPLETED on a workflow of this definition (V1) or flow template (V2)
    running on an opportunity at the building, or on an order of one. Several rules may mark one milestone."""

    milestone = models.CharField(_("milestone"), max_length=12, choices=Milestone.choices)
    definition = models.CharField(_("workflow (epilot id)"), max_length=64, blank=True,
                                  help_text=_("the definition or flow template id; empty: any workflow"))
    step = models.CharField(_("step"), max_length=300, help_text=_("the step's or task's name as in epilot"))

    class Meta:
        verbose_name = _("milestone rule")
        verbose_name_plural = _("milestone rules")
        ordering = ["milestone", "definition", "step"]
        constraints = [models.UniqueConstraint(fields=["milestone", "definition", "step"], name="a_milestone_rule_once")]

    def __str__(self) -> str:
        return f"{self.get_milestone_display()}: {self.step}"


class FunnelSettings(models.Model):
    """After how many days a building counts as stuck between two milestones (one row)."""

    signed_not_passed_days = models.PositiveIntegerField(_("signed, not passed after (days)"), default=90)
    passed_not_connected_days = models.PositiveIntegerField(_("passed, not connected after (days)"), default=60)
    connected_not_activated_days = models.PositiveIntegerField(_("connected, not activated after (days)"), default=14)
    promise_task_workflow = models.CharField(
        _("workflow for slipping promises (epilot id)"), max_length=64, blank=True,
        help_text=_("started on the order in epilot when its promise becomes at risk or breached, once per state, so "
                    "the responsible staff find it in their tasks; empty: the alert is listed here only"))

    class Meta:
        verbose_name = _("funnel settings")
        verbose_name_plural = _("funnel settings")

    def __str__(self) -> str:
        return str(_("funnel settings"))


class QuotaChange(models.Model):
    """A change of a started campaign's quota or deadline: proposed by one person with a reason, approved (and then
    applied) or refused by another."""

    class Status(models.TextChoices):
        PROPOSED = "proposed", _("proposed")
        APPROVED = "approved", _("approved")
        REFUSED = "refused", _("refused")

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE,
                             related_name="quota_changes")
    quota_percent = models.DecimalField(_("new quota (%)"), max_digits=5, decimal_places=1, null=True, blank=True)
    deadline = models.DateField(_("new deadline"), null=True, blank=True)
    previous_quota_percent = models.DecimalField(_("quota before (%)"), max_digits=5, decimal_places=1)
    previous_deadline = models.DateField(_("deadline before"), null=True, blank=True)
    reason = models.TextField(_("reason"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PROPOSED, db_index=True)
    proposed_by = models.ForeignKey("auth.User", verbose_name=_("proposed by"), null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    proposed_by_name = models.CharField(_("proposed by (name)"), max_length=200)
    proposed_at = models.DateTimeField(_("proposed"), auto_now_add=True)
    decided_by = models.ForeignKey("auth.User", verbose_name=_("decided by"), null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)

    class Meta:
        verbose_name = _("quota change")
        verbose_name_plural = _("quota changes")
        ordering = ["-proposed_at"]
        permissions = [("approve_quotachange", "Can approve or refuse another person's change of a started campaign")]

    def __str__(self) -> str:
        return f"{self.area}: {self.get_status_display()}"


class LateSignup(models.Model):
    """A contract signed after its area's pre-marketing deadline, flagged on the order in epilot once."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), on_delete=models.CASCADE,
                             related_name="late_signups")
    order_epilot_id = models.CharField(_("order (epilot id)"), max_length=64, unique=True)
    order_title = models.CharField(_("order"), max_length=500, blank=True)
    signed_at = models.DateTimeField(_("signed"))
    flagged_at = models.DateTimeField(_("flagged in epilot"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("late sign-up")
        verbose_name_plural = _("late sign-ups")
        ordering = ["-signed_at"]

    def __str__(self) -> str:
        return self.order_title or self.order_epilot_id
