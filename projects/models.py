"""Mirror models of epilot entities and the Ausbau projects built from them.

Mirrored rows are written only by the sync engine (projects/services/sync.py); changes go to
epilot through services and come back on the next sync.
"""
from __future__ import annotations

from django.db import models

from integrations.epilot.types import MalformedPayload, WorkflowStep
from integrations.epilot.types import WorkflowExecution as RemoteExecution


class PayloadField(models.JSONField):
    """A JSONField that keeps bulk inserts on PostgreSQL on plain VALUES.

    Django 5.2 bulk-inserts through UNNEST of per-column arrays on PostgreSQL; psycopg escapes
    large JSON documents inside a text array character by character, which made a sync page
    several times slower. Having `get_placeholder` opts the insert out of UNNEST.
    """

    def get_placeholder(self, value, compiler, connection):
        return "%s"


class MirroredEntity(models.Model):
    """Columns every mirrored epilot entity has; `payload` is the entity exactly as epilot sent it."""

    epilot_id = models.CharField(max_length=64, unique=True)
    title = models.CharField("Titel", max_length=500, blank=True)
    status = models.CharField("Status", max_length=100, blank=True, db_index=True)
    tags = models.JSONField("Tags", default=list, blank=True)
    epilot_created_at = models.DateTimeField("in epilot angelegt", null=True, blank=True)
    epilot_updated_at = models.DateTimeField("in epilot geändert", null=True, blank=True, db_index=True)
    epilot_deleted_at = models.DateTimeField("in epilot gelöscht", null=True, blank=True)
    payload = PayloadField(default=dict)
    synced_at = models.DateTimeField("synchronisiert")

    class Meta:
        abstract = True
        ordering = ["-epilot_updated_at"]

    def __str__(self) -> str:
        return self.title or self.epilot_id

    @property
    def is_deleted(self) -> bool:
        return self.epilot_deleted_at is not None


class Contact(MirroredEntity):
    """An epilot contact (customer)."""

    email = models.CharField("E-Mail", max_length=254, blank=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Kontakt"
        verbose_name_plural = "Kontakte"


class Opportunity(MirroredEntity):
    """An epilot opportunity: an expansion in planning."""

    customer = models.ForeignKey(Contact, verbose_name="Kunde", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="opportunities")
    customer_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)
    street = models.CharField("Straße", max_length=200, blank=True)
    postal_code = models.CharField("PLZ", max_length=20, blank=True)
    city = models.CharField("Ort", max_length=100, blank=True)
    budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Opportunity"
        verbose_name_plural = "Opportunities"

    @property
    def address(self) -> str:
        return ", ".join(part for part in (self.street, f"{self.postal_code} {self.city}".strip()) if part)


class Order(MirroredEntity):
    """An epilot order: confirmed construction work. `amount_total` is in cents, as epilot keeps it."""

    amount_total = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    opportunity = models.ForeignKey(Opportunity, verbose_name="Opportunity", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="orders")
    opportunity_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Auftrag"
        verbose_name_plural = "Aufträge"


class GenericEntity(MirroredEntity):
    """An entity of a further configured schema (for example `infrastructure_project`)."""

    schema = models.CharField(max_length=100, db_index=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Weitere Entität"
        verbose_name_plural = "Weitere Entitäten"


class WorkflowDefinition(models.Model):
    """A V1 workflow definition or a V2 flow template."""

    class Engine(models.TextChoices):
        V1 = "v1", "Workflow (V1)"
        V2 = "v2", "Flow (V2)"

    epilot_id = models.CharField(max_length=64)
    engine = models.CharField(max_length=2, choices=Engine.choices)
    name = models.CharField(max_length=300)
    enabled = models.BooleanField(default=True)
    sections = models.JSONField(default=list)
    step_count = models.PositiveIntegerField(default=0)
    payload = models.JSONField(default=dict)
    removed_in_epilot = models.BooleanField(default=False)
    synced_at = models.DateTimeField()

    class Meta:
        verbose_name = "Workflow-Definition"
        verbose_name_plural = "Workflow-Definitionen"
        ordering = ["name"]
        # epilot lists V1 definitions as V2 flow templates too: one id, two engines.
        constraints = [models.UniqueConstraint(fields=["engine", "epilot_id"], name="one_definition_per_engine_and_id")]

    def __str__(self) -> str:
        return f"{self.name} ({self.epilot_id}, {self.engine.upper()})"


class WorkflowExecution(models.Model):
    """A workflow execution on any entity; linked to the mirrored entity where there is one."""

    epilot_id = models.CharField(max_length=64, unique=True)
    engine = models.CharField(max_length=2, choices=WorkflowDefinition.Engine.choices)
    definition_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)
    definition = models.ForeignKey(
        WorkflowDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    name = models.CharField("Name", max_length=300, blank=True)
    entity_schema = models.CharField("Entitätstyp", max_length=100, db_index=True)
    entity_epilot_id = models.CharField(max_length=64, db_index=True)
    opportunity = models.ForeignKey(Opportunity, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions")
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions")
    status = models.CharField("Status", max_length=20, db_index=True)
    current_section = models.CharField("Aktueller Abschnitt", max_length=300, blank=True)
    current_step = models.CharField("Aktueller Schritt", max_length=300, blank=True)
    completed_steps = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    flow = PayloadField(default=dict)
    started_at = models.DateTimeField("Gestartet", null=True, blank=True)
    epilot_updated_at = models.DateTimeField("in epilot geändert", null=True, blank=True)
    completed_at = models.DateTimeField("Abgeschlossen", null=True, blank=True)
    synced_at = models.DateTimeField()

    class Meta:
        verbose_name = "Workflow-Ausführung"
        verbose_name_plural = "Workflow-Ausführungen"
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.name or self.definition_epilot_id} on {self.entity_schema} {self.entity_epilot_id}"

    @property
    def progress_percent(self) -> int:
        return round(100 * self.completed_steps / self.total_steps) if self.total_steps else 0

    def steps(self) -> list[WorkflowStep]:
        """The steps (V1) or tasks (V2) of the mirrored document, in order; none when epilot sent something unreadable."""
        parse = RemoteExecution.from_v2 if self.engine == WorkflowDefinition.Engine.V2 else RemoteExecution.from_v1
        try:
            return list(parse(self.flow).steps)
        except MalformedPayload:
            return []


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


class SyncState(models.Model):
    """Per schema: the watermark of the incremental sync and the single-flight lock."""

    schema = models.CharField(max_length=100, unique=True)
    watermark_updated_at = models.DateTimeField(null=True, blank=True)
    watermark_id = models.CharField(max_length=64, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    lock_owner = models.CharField(max_length=100, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Sync-Stand"
        verbose_name_plural = "Sync-Stände"

    def __str__(self) -> str:
        return self.schema


class SyncRun(models.Model):
    """The ledger of sync runs."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Zeitplan"
        COMMAND = "command", "Befehl"
        ADMIN = "admin", "Admin"
        API = "api", "API"

    class Status(models.TextChoices):
        QUEUED = "queued", "Eingeplant"
        RUNNING = "running", "Läuft"
        SUCCEEDED = "succeeded", "Erfolgreich"
        FAILED = "failed", "Fehlgeschlagen"
        SKIPPED = "skipped", "Übersprungen (läuft bereits)"

    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    schemas = models.JSONField(default=list)
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    owner = models.CharField(max_length=100, blank=True, help_text="host:pid of the process that ran it")

    class Meta:
        verbose_name = "Sync-Lauf"
        verbose_name_plural = "Sync-Läufe"
        ordering = ["-started_at"]
        permissions = [("run_sync", "Can start an epilot sync")]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class QuarantinedEntity(models.Model):
    """An epilot entity the sync could not mirror, with the reason and the raw payload."""

    schema = models.CharField(max_length=100)
    epilot_id = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    payload = models.JSONField(default=dict)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    sync_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name = "Quarantäne-Eintrag"
        verbose_name_plural = "Quarantäne"
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.schema} {self.epilot_id or '(no id)'}: {self.reason[:60]}"


class EpilotWrite(models.Model):
    """The audit trail: one row per write to epilot, recorded before the call and completed after it."""

    class Action(models.TextChoices):
        START_WORKFLOW = "start_workflow", "Workflow starten"
        CREATE_ORDER = "create_order", "Auftrag anlegen"
        LINK_ORDER = "link_order", "Auftrag verknüpfen"
        CLOSE_OPPORTUNITY = "close_opportunity", "Opportunity-Status setzen (Umwandlung)"
        WRITE_STATUS = "write_status", "Status ändern"
        PROVISION_AUTOMATION = "provision_automation", "Automation anlegen/aktualisieren"

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


class WorkflowStartJob(models.Model):
    """Starting one definition on many entities in the background, with progress."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Eingeplant"
        RUNNING = "running", "Läuft"
        DONE = "done", "Fertig"

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT)
    requested_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL, related_name="+")
    allow_duplicate = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Workflow-Start (Stapel)"
        verbose_name_plural = "Workflow-Starts (Stapel)"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.definition.name} on {self.items.count()} entities"


class WorkflowStart(models.Model):
    """One request to start a definition on one entity; at most one pending per entity and definition."""

    class Status(models.TextChoices):
        PENDING = "pending", "Ausstehend"
        STARTED = "started", "Gestartet"
        REFUSED = "refused", "Abgelehnt (läuft bereits)"
        FAILED = "failed", "Fehlgeschlagen"

    job = models.ForeignKey(WorkflowStartJob, null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT)
    entity_schema = models.CharField(max_length=100)
    entity_epilot_id = models.CharField(max_length=64)
    entity_title = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    execution_epilot_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(max_length=100, default="admin")
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="lease of the attempt carrying out a pending start; after it, another may adopt it"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Workflow-Start"
        verbose_name_plural = "Workflow-Starts"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["entity_epilot_id", "definition"], condition=models.Q(status="pending"),
                                    name="one_pending_start_per_entity_and_definition"),
        ]

    def __str__(self) -> str:
        return f"{self.definition.name} on {self.entity_schema} {self.entity_title or self.entity_epilot_id}"


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


class ProvisionedAutomation(models.Model):
    """An epilot automation flow this back-office created; the trigger it covers belongs to epilot."""

    name = models.CharField(max_length=200, unique=True)
    flow_id = models.CharField(max_length=64)
    schema = models.CharField(max_length=100)
    attribute = models.CharField(max_length=100)
    value = models.CharField(max_length=200)
    definition_epilot_id = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    provisioned_at = models.DateTimeField()

    class Meta:
        verbose_name = "epilot-Automation"
        verbose_name_plural = "epilot-Automationen (von hier angelegt)"

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
