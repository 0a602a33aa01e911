"""Mirror models of epilot entities and the Ausbau projects built from them.

Mirrored rows are written only by the sync engine (projects/services/sync.py); changes go to
epilot through services and come back on the next sync.
"""
from projects.models.areas import (
    AreaAddress,
    AreaSnapshot,
    FunnelSettings,
    LateSignup,
    Milestone,
    MilestoneRule,
    QuotaChange,
    RolloutArea,
    Stage,
)
from projects.models.ausbau import AusbauProject
from projects.models.backoffice import ApiClient, AutomationRecipe, AutomationRule, Conversion, EpilotWrite, RuleFiring
from projects.models.entities import Contact, GenericEntity, MirroredEntity, Opportunity, OpportunityItem, Order, PayloadField
from projects.models.promises import ForecastCurve, Promise, PromiseAlert, PromisedMilestone
from projects.models.staff import StaffProfile, StepJob, StepJobItem
from projects.models.sync import (
    PendingExecutionRead,
    QuarantinedEntity,
    Reconciliation,
    SchemaAttribute,
    SyncRun,
    SyncState,
)
from projects.models.webhooks import WebhookEvent, WebhookSubscription
from projects.models.workflows import MirroredStep, WorkflowDefinition, WorkflowExecution, WorkflowStart, WorkflowStartJob

__all__ = [
    "ApiClient",
    "AreaAddress",
    "AreaSnapshot",
    "AusbauProject",
    "AutomationRecipe",
    "AutomationRule",
    "Contact",
    "Conversion",
    "EpilotWrite",
    "ForecastCurve",
    "FunnelSettings",
    "GenericEntity",
    "LateSignup",
    "Milestone",
    "MilestoneRule",
    "MirroredEntity",
    "MirroredStep",
    "Opportunity",
    "OpportunityItem",
    "Order",
    "PayloadField",
    "PendingExecutionRead",
    "Promise",
    "PromiseAlert",
    "PromisedMilestone",
    "QuarantinedEntity",
    "QuotaChange",
    "Reconciliation",
    "RolloutArea",
    "RuleFiring",
    "SchemaAttribute",
    "StaffProfile",
    "Stage",
    "StepJob",
    "StepJobItem",
    "SyncRun",
    "SyncState",
    "WebhookEvent",
    "WebhookSubscription",
    "WorkflowDefinition",
    "WorkflowExecution",
    "WorkflowStart",
    "WorkflowStartJob",
]
