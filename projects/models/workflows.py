"""Mirrored workflow definitions, executions and their steps; starts of workflows made from here."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from integrations.epilot.types import MalformedPayload, WorkflowStep
from integrations.epilot.types import WorkflowExecution as RemoteExecution
from projects.models.entities import Contact, Opportunity, Order, PayloadField


class WorkflowDefinition(models.Model):
    """A V1 workflow definition or a V2 flow template."""

    class Engine(models.TextChoices):
        V1 = "v1", _("Workflow (V1)")
        V2 = "v2", _("Flow (V2)")

    epilot_id = models.CharField(_("epilot id"), max_length=64)
    engine = models.CharField(_("engine"), max_length=2, choices=Engine.choices)
    name = models.CharField(_("name"), max_length=300)
    enabled = models.BooleanField(_("enabled"), default=True)
    sections = models.JSONField(_("sections"), default=list)
    step_count = models.PositiveIntegerField(_("steps"), default=0)
    payload = models.JSONField(_("payload"), default=dict)
    removed_in_epilot = models.BooleanField(_("removed in epilot"), default=False)
    synced_at = models.DateTimeField(_("synchronised"))

    class Meta:
        verbose_name = _("workflow definition")
        verbose_name_plural = _("workflow definitions")
        ordering = ["name"]
        # epilot lists V1 definitions as V2 flow templates too: one id, two engines.
        constraints = [models.UniqueConstraint(fields=["engine", "epilot_id"], name="one_definition_per_engine_and_id")]

    def __str__(self) -> str:
        return f"{self.name} ({self.epilot_id}, {self.engine.upper()})"


class WorkflowExecution(models.Model):
    """A workflow execution on any entity; linked to the mirrored entity where there is one."""

    epilot_id = models.CharField(_("epilot id"), max_length=64, unique=True)
    engine = models.CharField(_("engine"), max_length=2, choices=WorkflowDefinition.Engine.choices)
    definition_epilot_id = models.CharField(_("workflow (epilot id)"), max_length=64, blank=True, db_index=True)
    definition = models.ForeignKey(
        WorkflowDefinition, verbose_name=_("workflow definition"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="executions")
    name = models.CharField(_("name"), max_length=300, blank=True)
    entity_schema = models.CharField(_("entity type"), max_length=100, db_index=True)
    entity_epilot_id = models.CharField(_("entity (epilot id)"), max_length=64, db_index=True)
    opportunity = models.ForeignKey(Opportunity, verbose_name=_("opportunity"), null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="executions")
    order = models.ForeignKey(Order, verbose_name=_("order"), null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="executions")
    contact = models.ForeignKey(Contact, verbose_name=_("contact"), null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="executions")
    status = models.CharField(_("status"), max_length=20, db_index=True)
    current_section = models.CharField(_("current section"), max_length=300, blank=True)
    current_step = models.CharField(_("current step"), max_length=300, blank=True)
    completed_steps = models.PositiveIntegerField(_("completed steps"), default=0)
    total_steps = models.PositiveIntegerField(_("total steps"), default=0)
    flow = PayloadField(_("flow"), default=dict)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    epilot_updated_at = models.DateTimeField(_("changed in epilot"), null=True, blank=True)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    synced_at = models.DateTimeField(_("synchronised"))

    class Meta:
        verbose_name = _("workflow execution")
        verbose_name_plural = _("workflow executions")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        """The workflow and the title of its entity (an id only for an entity the mirror does not hold)."""
        entity = self.order or self.opportunity or self.contact
        return f"{self.name or self.definition_epilot_id}: {entity or f'{self.entity_schema} {self.entity_epilot_id[:8]}…'}"

    @property
    def progress_percent(self) -> int:
        return round(100 * self.completed_steps / self.total_steps) if self.total_steps else 0

    def parsed_steps(self) -> list[WorkflowStep]:
        """The steps (V1) or tasks (V2) of the mirrored document, in order; none when epilot sent something unreadable."""
        parse = RemoteExecution.from_v2 if self.engine == WorkflowDefinition.Engine.V2 else RemoteExecution.from_v1
        try:
            return list(parse(self.flow).steps)
        except MalformedPayload:
            return []


class MirroredStep(models.Model):
    """One step (V1) or task (V2) of a mirrored execution, rewritten whenever its execution is mirrored."""

    OPEN_STATUSES = ("PENDING", "IN_PROGRESS", "UNASSIGNED", "ASSIGNED", "ON_HOLD", "WAITING_FOR_CONFIRMATION",
                     "CONDITION_PENDING", "SCHEDULED", "FAILED")
    DONE_STATUSES = ("COMPLETED", "SKIPPED")

    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="steps",
                                  verbose_name=_("workflow execution"))
    epilot_id = models.CharField(_("step id"), max_length=64)
    position = models.PositiveIntegerField(_("position"))
    section = models.CharField(_("section"), max_length=300, blank=True, db_index=True)
    section_epilot_id = models.CharField(_("section (epilot id)"), max_length=64, blank=True)
    name = models.CharField(_("step"), max_length=300)
    status = models.CharField(_("status"), max_length=30, db_index=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    execution_type = models.CharField(_("kind"), max_length=20, blank=True)
    assigned_to = models.JSONField(_("assigned to"), default=list, blank=True)
    assignees = models.CharField(_("assignee ids"), max_length=1000, blank=True, db_index=True,
                                 help_text=_("the assignees' epilot user ids as ',a,b,' for filtering on any database"))
    due_date = models.DateTimeField(_("due"), null=True, blank=True, db_index=True)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    assigned_at = models.DateTimeField(_("assigned at"), null=True, blank=True,
                                       help_text=_("when the mirror first saw the current assignees"))
    synced_at = models.DateTimeField(_("synchronised"))

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        ordering = ["execution", "position"]
        constraints = [models.UniqueConstraint(fields=["execution", "epilot_id"], name="one_row_per_step_of_an_execution")]
        permissions = [("work_steps", "Can complete, assign and schedule workflow steps and close executions in epilot")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_open(self) -> bool:
        return self.status not in self.DONE_STATUSES


class WorkflowStartJob(models.Model):
    """Starting one definition on many entities in the background, with progress."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")

    definition = models.ForeignKey(WorkflowDefinition, verbose_name=_("workflow definition"), on_delete=models.PROTECT)
    requested_by = models.ForeignKey("auth.User", verbose_name=_("requested by"), null=True, on_delete=models.SET_NULL,
                                     related_name="+")
    allow_duplicate = models.BooleanField(_("also where it runs"), default=False)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("workflow start job")
        verbose_name_plural = _("workflow start jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.definition.name} on {self.items.count()} entities"


class WorkflowStart(models.Model):
    """One request to start a definition on one entity; at most one pending per entity and definition."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        STARTED = "started", _("Started")
        REFUSED = "refused", _("Refused (already running)")
        FAILED = "failed", _("Failed")

    job = models.ForeignKey(WorkflowStartJob, verbose_name=_("job"), null=True, blank=True, on_delete=models.CASCADE,
                            related_name="items")
    definition = models.ForeignKey(WorkflowDefinition, verbose_name=_("workflow definition"), on_delete=models.PROTECT)
    entity_schema = models.CharField(_("entity type"), max_length=100)
    entity_epilot_id = models.CharField(_("entity (epilot id)"), max_length=64)
    entity_title = models.CharField(_("entity"), max_length=500, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    execution_epilot_id = models.CharField(_("execution (epilot id)"), max_length=64, blank=True)
    error = models.TextField(_("error"), blank=True)
    requested_by = models.ForeignKey("auth.User", verbose_name=_("requested by"), null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(_("triggered by"), max_length=100, default="admin")
    claimed_until = models.DateTimeField(_("claimed until"),
        null=True, blank=True, help_text=_("lease of the attempt carrying out a pending start; after it, another may adopt it")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("workflow start")
        verbose_name_plural = _("workflow starts")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["entity_epilot_id", "definition"], condition=models.Q(status="pending"),
                                    name="one_pending_start_per_entity_and_definition"),
        ]

    def __str__(self) -> str:
        return f"{self.definition.name} on {self.entity_schema} {self.entity_title or self.entity_epilot_id}"
