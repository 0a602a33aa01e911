"""What the back-office itself records: the audit trail, conversions, rules, automations, API clients."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from projects.models.entities import Opportunity
from projects.models.workflows import WorkflowDefinition, WorkflowStart


class EpilotWrite(models.Model):
    """The audit trail: one row per write to epilot, recorded before the call and completed after it."""

    class Action(models.TextChoices):
        START_WORKFLOW = "start_workflow", "Workflow starten"
        CREATE_ORDER = "create_order", "Auftrag anlegen"
        LINK_ORDER = "link_order", "Auftrag verknüpfen"
        CLOSE_OPPORTUNITY = "close_opportunity", "Opportunity-Status setzen (Umwandlung)"
        WRITE_STATUS = "write_status", "Status ändern"
        PROVISION_AUTOMATION = "provision_automation", "Automation anlegen/aktualisieren"
        UPDATE_STEP = "update_step", _("Update workflow step")
        CLOSE_EXECUTION = "close_execution", _("Close workflow")

    class Result(models.TextChoices):
        PENDING = "pending", "Ausstehend"
        SUCCEEDED = "succeeded", "Erfolgreich"
        FAILED = "failed", "Fehlgeschlagen"
        CONFLICT = "conflict", "Konflikt"

    action = models.CharField(max_length=30, choices=Action.choices, db_index=True)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField("Auslöser", max_length=100, help_text="admin, command, rule:<id>, api:<client>")
    target_schema = models.CharField(max_length=100)
    target_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)
    request_summary = models.JSONField(default=dict)
    result = models.CharField(max_length=20, choices=Result.choices, default=Result.PENDING, db_index=True)
    error = models.TextField(blank=True)
    epilot_ids = models.JSONField(default=list, help_text="ids epilot returned (order, execution, flow)")
    conversion = models.ForeignKey("Conversion", null=True, blank=True, on_delete=models.SET_NULL, related_name="writes")
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "epilot-Schreibvorgang"
        verbose_name_plural = "Audit: epilot-Schreibvorgänge"
        ordering = ["-started_at"]
        permissions = [
            ("start_workflow", "Can start epilot workflows"),
            ("convert_opportunity", "Can convert opportunities into orders"),
            ("write_status", "Can change opportunity status in epilot"),
            ("provision_automation", "Can provision epilot automations"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.target_schema} {self.target_epilot_id}: {self.result}"


class Conversion(models.Model):
    """Opportunity → order as a saga: each step is recorded, a retry resumes where it stopped.

    `key` is stored on the order in epilot (attribute `backoffice_conversion_key`) and the order is
    created by upsert on it, so a lost answer or a retry can never create a second order.
    """

    class Step(models.TextChoices):
        REQUESTED = "requested", "Angefordert"
        ORDER_CREATED = "order_created", "Auftrag angelegt"
        LINKED = "linked", "Mit Opportunity verknüpft"
        WORKFLOW_STARTED = "workflow_started", "Workflow gestartet"
        DONE = "done", "Abgeschlossen"

    class Status(models.TextChoices):
        PENDING = "pending", "Ausstehend"
        RUNNING = "running", "Läuft"
        FAILED = "failed", "Fehlgeschlagen – fortsetzbar"
        DONE = "done", "Fertig"

    opportunity = models.OneToOneField(Opportunity, on_delete=models.PROTECT, related_name="conversion")
    key = models.CharField(max_length=64, unique=True)
    definition = models.ForeignKey(WorkflowDefinition, null=True, blank=True, on_delete=models.PROTECT)
    target_status = models.CharField(max_length=100, default="geschlossen")
    source_status = models.CharField(
        max_length=100,
        blank=True,
        help_text="the opportunity's status when the conversion was requested; only that one is replaced",
    )
    order_title = models.CharField(max_length=500)
    amount_total = models.BigIntegerField(null=True, blank=True, help_text="cents")
    currency = models.CharField(max_length=3, default="EUR")
    step = models.CharField(max_length=30, choices=Step.choices, default=Step.REQUESTED)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    order_epilot_id = models.CharField(max_length=64, blank=True)
    execution_epilot_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Umwandlung"
        verbose_name_plural = "Umwandlungen Opportunity → Auftrag"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.opportunity} → {self.order_title}"


class AutomationRule(models.Model):
    """A local rule: when a mirrored entity of `schema` has `attribute` = `value`, start `definition` once."""

    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    schema = models.CharField(max_length=100, default="opportunity")
    attribute = models.CharField(max_length=100, default="status")
    value = models.CharField(max_length=200)
    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Lokale Regel"
        verbose_name_plural = "Lokale Regeln (Workflow-Auslöser)"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RuleFiring(models.Model):
    """A rule fired for an entity; the unique pair is what keeps a rule from firing twice."""

    rule = models.ForeignKey(AutomationRule, on_delete=models.CASCADE, related_name="firings")
    entity_epilot_id = models.CharField(max_length=64)
    workflow_start = models.ForeignKey(WorkflowStart, null=True, blank=True, on_delete=models.SET_NULL)
    fired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Regel-Auslösung"
        verbose_name_plural = "Regel-Auslösungen"
        constraints = [models.UniqueConstraint(fields=["rule", "entity_epilot_id"], name="rule_fires_once_per_entity")]


class AutomationRecipe(models.Model):
    """One of the guide's patterns by which epilot starts a workflow itself, provisioned as one automation flow."""

    class Pattern(models.TextChoices):
        STATUS_CHANGE = "status_change", _("Entity status change")
        JOURNEY_SUBMISSION = "journey_submission", _("Journey submission")
        MANUAL = "manual", _("Manual trigger on an entity")

    class Language(models.TextChoices):
        DE = "de", _("German")
        EN = "en", _("English")

    key = models.SlugField(_("key"), max_length=60, unique=True,
                           help_text=_("Stable; carried in the flow's name in epilot, so provisioning finds its flow again."))
    name = models.CharField(_("name"), max_length=150)
    pattern = models.CharField(_("pattern"), max_length=30, choices=Pattern.choices)
    enabled = models.BooleanField(_("enabled"), default=True)
    definition_epilot_id = models.CharField(_("workflow"), max_length=64,
                                            help_text=_("epilot id of the workflow definition or flow template to start"))
    schema = models.CharField(_("entity type"), max_length=100, default="opportunity", blank=True)
    attribute = models.CharField(_("attribute"), max_length=100, default="status", blank=True)
    value = models.CharField(_("value"), max_length=200, blank=True)
    journey_id = models.CharField(_("journey id"), max_length=64, blank=True, help_text=_("the journey's UUID"))
    field_mapping = models.JSONField(_("field mapping"), default=list, blank=True,
                                     help_text=_('Journey fields to opportunity attributes: [{"source": "…", "target": "…"}]'))
    assignees = models.JSONField(_("assignees"), default=list, blank=True, help_text=_("epilot user ids of the workflow"))
    assign_steps = models.JSONField(_("assignees per step"), default=list, blank=True,
                                    help_text=_('[{"step_id": "…", "step_name": "…", "user_ids": [123]}]'))
    email_template_id = models.CharField(_("e-mail template"), max_length=64, blank=True,
                                         help_text=_("epilot e-mail template to notify the team; none sends no e-mail"))
    email_language = models.CharField(_("e-mail language"), max_length=2, choices=Language.choices, default=Language.DE)
    legacy_names = models.JSONField(default=list, blank=True, help_text="flow names this recipe's flow had before")
    flow_id = models.CharField(_("flow id"), max_length=64, blank=True)
    provisioned_body = models.JSONField(null=True, blank=True, help_text="what was sent to epilot last")
    provisioned_at = models.DateTimeField(_("provisioned"), null=True, blank=True)
    drift = models.TextField(_("drift"), blank=True, help_text=_("how the flow in epilot differs from what was provisioned"))
    drift_checked_at = models.DateTimeField(_("drift checked"), null=True, blank=True)

    class Meta:
        verbose_name = _("automation recipe")
        verbose_name_plural = _("automation recipes")
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


class ApiClient(models.Model):
    """A tool that reads (or writes) through the REST API; its token is stored only as a hash."""

    class Scope(models.TextChoices):
        READ = "read", "Lesen"
        WRITE = "write", "Schreiben (Workflow starten, umwandeln)"

    name = models.CharField(max_length=200, unique=True)
    token_prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="read and/or write")
    throttle_rate = models.CharField(
        max_length=20, default="1200/min", help_text="requests per second/min/hour/day, e.g. 600/min"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API-Client"
        verbose_name_plural = "API-Clients"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])
