"""What the back-office itself records: the audit trail, conversions, rules, automations, API clients."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from projects.models.entities import Opportunity
from projects.models.workflows import WorkflowDefinition, WorkflowStart


class EpilotWrite(models.Model):
    """The audit trail: one row per write to epilot, recorded before the call and completed after it."""

    class Action(models.TextChoices):
        START_WORKFLOW = "start_workflow", _("Start workflow")
        CREATE_ORDER = "create_order", _("Create order")
        LINK_ORDER = "link_order", _("Link order")
        CLOSE_OPPORTUNITY = "close_opportunity", _("Set opportunity status (conversion)")
        WRITE_STATUS = "write_status", _("Change status")
        PROVISION_AUTOMATION = "provision_automation", _("Create/update automation")
        UPDATE_STEP = "update_step", _("Update workflow step")
        CLOSE_EXECUTION = "close_execution", _("Close workflow")
        PROVISION_WEBHOOK = "provision_webhook", _("Create/update webhook")
        REPLAY_WEBHOOKS = "replay_webhooks", _("Replay failed webhook deliveries")
        WRITE_PROMISE = "write_promise", _("Set promised date")
        WRITE_PROMISE_STATE = "write_promise_state", _("Set promise state (customer notice)")

    class Result(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CONFLICT = "conflict", _("Conflict")

    action = models.CharField(_("action"), max_length=30, choices=Action.choices, db_index=True)
    user = models.ForeignKey("auth.User", verbose_name=_("user"), null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    actor = models.CharField(_("triggered by"), max_length=100, help_text=_("admin, command, rule:<id>, api:<client>"))
    target_schema = models.CharField(_("target type"), max_length=100)
    target_epilot_id = models.CharField(_("target (epilot id)"), max_length=64, blank=True, db_index=True)
    request_summary = models.JSONField(_("request"), default=dict)
    result = models.CharField(_("result"), max_length=20, choices=Result.choices, default=Result.PENDING, db_index=True)
    error = models.TextField(_("error"), blank=True)
    epilot_ids = models.JSONField(_("ids from epilot"), default=list, help_text=_("ids epilot returned (order, execution, flow)"))
    conversion = models.ForeignKey("Conversion", verbose_name=_("conversion"), null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="writes")
    started_at = models.DateTimeField(_("started"), db_index=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("epilot write")
        verbose_name_plural = _("audit: epilot writes")
        ordering = ["-started_at"]
        permissions = [
            ("start_workflow", "Can start epilot workflows"),
            ("convert_opportunity", "Can convert opportunities into orders"),
            ("write_status", "Can change opportunity status in epilot"),
            ("provision_automation", "Can provision epilot automations"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.target_schema} {self.target_epilot_id[:8]}: {self.get_result_display()}"


class Conversion(models.Model):
    """Opportunity → order as a saga: each step is recorded, a retry resumes where it stopped.

    `key` is stored on the order in epilot (attribute `backoffice_conversion_key`) and the order is
    created by upsert on it, so a lost answer or a retry can never create a second order.
    """

    class Step(models.TextChoices):
        REQUESTED = "requested", _("Requested")
        ORDER_CREATED = "order_created", _("Order created")
        LINKED = "linked", _("Linked to the opportunity")
        WORKFLOW_STARTED = "workflow_started", _("Workflow started")
        DONE = "done", _("Completed")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        FAILED = "failed", _("Failed – can be resumed")
        DONE = "done", _("Done")

    opportunity = models.OneToOneField(Opportunity, verbose_name=_("opportunity"), on_delete=models.PROTECT,
                                       related_name="conversion")
    key = models.CharField(_("key"), max_length=64, unique=True)
    definition = models.ForeignKey(WorkflowDefinition, verbose_name=_("workflow definition"), null=True, blank=True,
                                   on_delete=models.PROTECT)
    target_status = models.CharField(_("status after"), max_length=100, default="geschlossen")
    source_status = models.CharField(_("status before"),
        max_length=100,
        blank=True,
        help_text=_("the opportunity's status when the conversion was requested; only that one is replaced"),
    )
    order_title = models.CharField(_("order title"), max_length=500)
    amount_total = models.BigIntegerField(_("amount (cents)"), null=True, blank=True, help_text=_("cents"))
    currency = models.CharField(_("currency"), max_length=3, default="EUR")
    step = models.CharField(_("step"), max_length=30, choices=Step.choices, default=Step.REQUESTED)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    order_epilot_id = models.CharField(_("order (epilot id)"), max_length=64, blank=True)
    execution_epilot_id = models.CharField(_("execution (epilot id)"), max_length=64, blank=True)
    error = models.TextField(_("error"), blank=True)
    requested_by = models.ForeignKey("auth.User", verbose_name=_("requested by"), null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("conversion")
        verbose_name_plural = _("conversions opportunity → order")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.opportunity} → {self.order_title}"


class AutomationRule(models.Model):
    """A local rule: when a mirrored entity of `schema` has `attribute` = `value`, start `definition` once."""

    name = models.CharField(_("name"), max_length=200)
    enabled = models.BooleanField(_("enabled"), default=True)
    schema = models.CharField(_("entity type"), max_length=100, default="opportunity")
    attribute = models.CharField(_("attribute"), max_length=100, default="status")
    value = models.CharField(_("value"), max_length=200)
    definition = models.ForeignKey(WorkflowDefinition, verbose_name=_("workflow definition"), on_delete=models.PROTECT)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("local rule")
        verbose_name_plural = _("local rules (workflow triggers)")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RuleFiring(models.Model):
    """A rule fired for an entity; the unique pair is what keeps a rule from firing twice."""

    rule = models.ForeignKey(AutomationRule, verbose_name=_("rule"), on_delete=models.CASCADE, related_name="firings")
    entity_epilot_id = models.CharField(_("entity (epilot id)"), max_length=64)
    workflow_start = models.ForeignKey(WorkflowStart, verbose_name=_("workflow start"), null=True, blank=True,
                                       on_delete=models.SET_NULL)
    fired_at = models.DateTimeField(_("fired"), auto_now_add=True)

    class Meta:
        verbose_name = _("rule firing")
        verbose_name_plural = _("rule firings")
        constraints = [models.UniqueConstraint(fields=["rule", "entity_epilot_id"], name="rule_fires_once_per_entity")]


class AutomationRecipe(models.Model):
    """One of the guide's patterns by which epilot starts a workflow itself, provisioned as one automation flow."""

    class Pattern(models.TextChoices):
        STATUS_CHANGE = "status_change", _("Entity status change")
        JOURNEY_SUBMISSION = "journey_submission", _("Journey submission")
        MANUAL = "manual", _("Manual trigger on an entity")
        PROMISE_NOTICE = "promise_notice", _("Customer notice when a promised date slips")

    class Language(models.TextChoices):
        DE = "de", _("German")
        EN = "en", _("English")

    key = models.SlugField(_("key"), max_length=60, unique=True,
                           help_text=_("Stable; carried in the flow's name in epilot, so provisioning finds its flow again."))
    name = models.CharField(_("name"), max_length=150)
    pattern = models.CharField(_("pattern"), max_length=30, choices=Pattern.choices)
    enabled = models.BooleanField(_("enabled"), default=True)
    definition_epilot_id = models.CharField(_("workflow"), max_length=64, blank=True,
                                            help_text=_("epilot id of the workflow definition or flow template to start "
                                                        "(none for a customer notice)"))
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
    legacy_names = models.JSONField(_("earlier names"), default=list, blank=True,
                                    help_text=_("flow names this recipe's flow had before"))
    flow_id = models.CharField(_("flow id"), max_length=64, blank=True)
    provisioned_body = models.JSONField(_("provisioned flow"), null=True, blank=True, help_text=_("what was sent to epilot last"))
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
        READ = "read", _("Read projects and the mirror")
        AREAS = "areas", _("Read rollout areas and their addresses")
        STEPS = "steps", _("Work steps (complete, assign, due dates)")
        WORKFLOWS = "workflows", _("Start, convert and close workflows")
        CONFIGURATION = "configuration", _("Change the rollout's configuration (the funnel's milestones)")
        WRITE = "write", _("Steps and workflows (tokens made before the finer scopes)")

    name = models.CharField(_("name"), max_length=200, unique=True)
    token_prefix = models.CharField(_("token prefix"), max_length=16, unique=True, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, editable=False)
    scopes = models.JSONField(_("scopes"), default=list, help_text=_("read, areas, steps, workflows, configuration"))
    throttle_rate = models.CharField(_("rate limit"),
        max_length=20, default="1200/min", help_text=_("requests per second/min/hour/day, e.g. 600/min")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("API client")
        verbose_name_plural = _("API clients")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        """Whether the token may use endpoints of `scope`; `write`, the one writing scope of older tokens, covers
        steps and workflows."""
        held = set(self.scopes or [])
        return scope in held or ("write" in held and scope in ("steps", "workflows"))
