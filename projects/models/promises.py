"""Promise dates: what the customer was promised for a milestone of an order, the forecast from the organisation's own
history, and whether the promise holds (services/promises.py)."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from projects.models.areas import RolloutArea
from projects.models.entities import Order


class PromisedMilestone(models.TextChoices):
    CONNECTED = "connected", _("connected (house connection built)")
    ACTIVATED = "activated", _("activated (service live)")


class Promise(models.Model):
    """One order's promised date for one milestone; its state is recomputed whenever the order, its building or the
    forecasts change."""

    class Source(models.TextChoices):
        ATTRIBUTE = "attribute", _("epilot attribute")
        STAFF = "staff", _("set by staff")
        RULE = "rule", _("area rule")

    class State(models.TextChoices):
        OPEN = "open", _("open")
        AT_RISK = "at_risk", _("at risk")
        BREACHED = "breached", _("breached")
        KEPT = "kept", _("kept")

    order = models.ForeignKey(Order, verbose_name=_("order"), on_delete=models.CASCADE, related_name="promises")
    milestone = models.CharField(_("milestone"), max_length=12, choices=PromisedMilestone.choices)
    promised_on = models.DateField(_("promised date"))
    source = models.CharField(_("source"), max_length=10, choices=Source.choices)
    building_key = models.CharField(_("address key"), max_length=240, blank=True, db_index=True)
    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="promises")
    reached_at = models.DateTimeField(_("reached"), null=True, blank=True)
    forecast_p50 = models.DateField(_("forecast (P50)"), null=True, blank=True)
    forecast_p90 = models.DateField(_("forecast (P90)"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.OPEN, db_index=True)
    days_late = models.IntegerField(_("days late"), null=True, blank=True)
    state_since = models.DateTimeField(_("state since"))
    set_by = models.ForeignKey("auth.User", verbose_name=_("set by"), null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")

    class Meta:
        verbose_name = _("promise")
        verbose_name_plural = _("promises")
        ordering = ["promised_on", "pk"]
        constraints = [models.UniqueConstraint(fields=["order", "milestone"], name="one_promise_per_order_and_milestone")]
        permissions = [("set_promise", "Can set promised dates (written to epilot)")]

    def __str__(self) -> str:
        return f"{self.order} · {self.get_milestone_display()} · {self.promised_on}"


class PromiseAlert(models.Model):
    """A promise that became at risk or breached, once per promise and state: the task for the responsible staff
    (a workflow started on the order in epilot when one is configured)."""

    promise = models.ForeignKey(Promise, verbose_name=_("promise"), on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(_("state"), max_length=10, choices=Promise.State.choices)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    execution_epilot_id = models.CharField(_("task workflow (epilot id)"), max_length=64, blank=True)
    error = models.TextField(_("error"), blank=True)
    sent_at = models.DateTimeField(_("task started"), null=True, blank=True)
    notice_written_at = models.DateTimeField(_("customer notice written"), null=True, blank=True,
                                             help_text=_("when promise_state was written to the order for the notice"))

    class Meta:
        verbose_name = _("promise alert")
        verbose_name_plural = _("promise alerts")
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["promise", "state"], name="one_alert_per_promise_and_state")]

    def __str__(self) -> str:
        return f"{self.promise} · {self.get_state_display()}"


class ForecastCurve(models.Model):
    """How long buildings took from one milestone to a later one: quantiles (days) of the finished buildings of an area
    (or of all areas when `area` is empty), recomputed nightly; with the back-test of the P90 date."""

    area = models.ForeignKey(RolloutArea, verbose_name=_("rollout area"), null=True, blank=True, on_delete=models.CASCADE,
                             related_name="forecast_curves")
    start = models.CharField(_("from"), max_length=12)
    target = models.CharField(_("to"), max_length=12)
    finished = models.PositiveIntegerField(_("finished buildings"))
    quantiles = models.JSONField(_("quantiles (days)"), default=list, help_text=_("the 0th to 100th percentile"))
    p90_held = models.FloatField(_("P90 held (back-test)"), null=True, blank=True,
                                 help_text=_("share of finished buildings that took no longer than the P90 of the others"))
    computed_at = models.DateTimeField(_("computed"))

    class Meta:
        verbose_name = _("forecast curve")
        verbose_name_plural = _("forecast curves")
        # The curves are replaced as a whole each night (services/forecasts.py), so no constraint keeps them single.

    def __str__(self) -> str:
        return f"{self.area or _('all areas')}: {self.start} → {self.target}"
