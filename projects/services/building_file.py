"""The building file (Hausakte): everything the back office knows about one address, for the page staff open when a
customer calls. An address is its key (projects/mirror/addresses.py): a building of rollout areas or any address
of a mirrored opportunity."""
from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q

from projects.models import (
    AreaAddress,
    Contact,
    EpilotWrite,
    MirroredStep,
    Opportunity,
    Order,
    Promise,
    WorkflowExecution,
)
from projects.services.errors import NotFound

AUDIT_ROWS = 50


@dataclass
class BuildingFile:
    key: str
    street: str
    postal_code: str
    city: str
    buildings: list[AreaAddress] = field(default_factory=list)
    customers: list[Contact] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    executions: list[WorkflowExecution] = field(default_factory=list)
    open_steps: list[MirroredStep] = field(default_factory=list)
    promises: list[Promise] = field(default_factory=list)
    writes: list[EpilotWrite] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(part for part in (self.street, f"{self.postal_code} {self.city}".strip()) if part)


def building_file(key: str) -> BuildingFile:
    """The file of the address `key`; raises NotFound when neither a building nor an opportunity has it."""
    buildings = list(AreaAddress.objects.filter(key=key).select_related("area").order_by("area__name")) if key else []
    opportunities = list(Opportunity.objects.filter(address_key=key).select_related("customer")
                         .order_by("-epilot_created_at", "pk")) if key else []
    if not buildings and not opportunities:
        raise NotFound(f"no building or opportunity has the address {key!r}")
    if buildings:
        first = buildings[0]
        street, postal_code = f"{first.street} {first.house_number}", first.postal_code
        city = next((o.city for o in opportunities if o.city), "")
    else:
        street, postal_code, city = opportunities[0].street, opportunities[0].postal_code, opportunities[0].city
    opportunity_ids = [o.pk for o in opportunities]
    orders = list(Order.objects.filter(opportunity_id__in=opportunity_ids).select_related("opportunity")
                  .order_by("-epilot_created_at", "pk"))
    customers = list({o.customer.pk: o.customer for o in opportunities if o.customer}.values())
    executions = list(WorkflowExecution.objects.filter(
        Q(opportunity_id__in=opportunity_ids) | Q(order_id__in=[o.pk for o in orders])).order_by("-started_at", "pk"))
    running = [e.pk for e in executions if e.status == "STARTED"]  # as the task inbox counts open steps
    open_steps = list(MirroredStep.objects.filter(execution__in=running, status__in=MirroredStep.OPEN_STATUSES,
                                                  enabled=True)
                      .select_related("execution").order_by("due_date", "execution_id", "position"))
    promises = list(Promise.objects.filter(order_id__in=[o.pk for o in orders]).select_related("order")
                    .order_by("promised_on", "pk"))
    targets = [o.epilot_id for o in opportunities] + [o.epilot_id for o in orders] + [e.epilot_id for e in executions]
    writes = list(EpilotWrite.objects.filter(target_epilot_id__in=targets).select_related("user")
                  .order_by("-started_at")[:AUDIT_ROWS]) if targets else []
    return BuildingFile(key=key, street=street, postal_code=postal_code, city=city, buildings=buildings,
                        customers=customers, opportunities=opportunities, orders=orders, executions=executions,
                        open_steps=open_steps, promises=promises, writes=writes)
