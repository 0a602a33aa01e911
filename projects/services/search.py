"""The admin header's search: buildings, customers, opportunities and orders by what people say on the phone
(street and house number in any usual spelling, a name, a customer, opportunity or order number, an e-mail).

Every searchable row keeps its words folded (`search_text`, projects/mirror/addresses.py `searchable`); a query is
folded the same way and each of its words must start a word of the row, a number must be a whole word ("15" is not
"150"), and "strasse" may end a compound ("Düssel Straße" finds "Düsselstraße").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Prefetch, Q

from projects.mirror.addresses import searchable
from projects.models import AreaAddress, Contact, Opportunity, Order, Stage

MAX_PER_GROUP = 10
MIN_QUERY_LENGTH = 2


@dataclass(frozen=True)
class BuildingHit:
    """An address: a building of one or more rollout areas, or an address of mirrored opportunities only."""

    key: str
    label: str
    areas: tuple[str, ...] = ()
    stage: str = ""


@dataclass
class SearchResults:
    query: str
    buildings: list[BuildingHit] = field(default_factory=list)
    customers: list[Contact] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.buildings) + len(self.customers) + len(self.opportunities) + len(self.orders)


def search_patterns(query: str) -> list[str]:
    """The substrings a row's `search_text` must contain for the query; [] for a query too short to search."""
    words = searchable(query).split()
    if len("".join(words)) < MIN_QUERY_LENGTH:
        return []
    patterns = []
    for word in words:
        if word == "strasse":
            patterns.append("strasse")
        elif word[0].isdigit():
            patterns.append(f" {word} ")
        else:
            patterns.append(f" {word}")
    return patterns


def matching(patterns: list[str], column: str = "search_text") -> Q:
    condition = Q()
    for pattern in patterns:
        condition &= Q(**{f"{column}__contains": pattern})
    return condition


def search(query: str, *, groups: set[str] | None = None, limit: int = MAX_PER_GROUP) -> SearchResults:
    """What matches `query`, grouped; `groups` limits it to those the user may see ("buildings", "customers",
    "opportunities", "orders"). Nothing for a query shorter than two letters or digits."""
    results = SearchResults(query=query)
    patterns = search_patterns(query)
    if not patterns:
        return results
    wanted = groups if groups is not None else {"buildings", "customers", "opportunities", "orders"}
    live = Q(epilot_deleted_at__isnull=True)
    if "buildings" in wanted:
        results.buildings = _buildings(patterns, limit)
    # Each group reads by its own words and, separately, by the words of the opportunities at an address: one
    # OR across the join would keep PostgreSQL from its trigram indexes.
    by_opportunity = Opportunity.objects.filter(live, matching(patterns)).order_by("pk")
    if "customers" in wanted:
        customers = Contact.objects.filter(live).defer("payload").order_by("title", "pk")
        found = {c.pk: c for c in customers.filter(matching(patterns))[:limit]}
        at_address = by_opportunity.filter(customer__isnull=False).values("customer__pk")[:limit]  # mirrored ones
        found.update({c.pk: c for c in customers.filter(pk__in=at_address)[:limit]})
        results.customers = sorted(found.values(), key=lambda c: (c.title, c.pk))[:limit]
    if "opportunities" in wanted:
        # The customer is a join on its epilot id (no column), which Django cannot select along with deferred fields.
        customers_of = Prefetch("customer", queryset=Contact.objects.defer("payload"))
        results.opportunities = list(by_opportunity.defer("payload").prefetch_related(customers_of)
                                     .order_by("street", "title", "pk")[:limit])
    if "orders" in wanted:
        orders = Order.objects.filter(live).select_related("opportunity").defer("payload", "opportunity__payload") \
            .order_by("title", "pk")
        found = {o.pk: o for o in orders.filter(matching(patterns))[:limit]}
        found.update({o.pk: o for o in orders.filter(opportunity__in=by_opportunity.values("pk")[:limit * 5])[:limit]})
        results.orders = sorted(found.values(), key=lambda o: (o.title, o.pk))[:limit]
    return results


def _buildings(patterns: list[str], limit: int) -> list[BuildingHit]:
    """Buildings of rollout areas first, then addresses only opportunities have, one hit per address."""
    hits: dict[str, BuildingHit] = {}
    for building in AreaAddress.objects.filter(matching(patterns)).select_related("area").order_by(
            "street", "house_number", "pk")[:limit * 2]:
        known = hits.get(building.key)
        areas = (*known.areas, building.area.name) if known else (building.area.name,)
        hits[building.key] = BuildingHit(building.key, f"{building.street} {building.house_number}, {building.postal_code}",
                                         areas, Stage(building.stage).label)
    if len(hits) < limit:
        rows = (Opportunity.objects.filter(matching(patterns), epilot_deleted_at__isnull=True).exclude(address_key="")
                .order_by("street", "pk").values_list("address_key", "street", "postal_code", "city")[:limit * 3])
        for key, street, postal_code, city in rows:
            address = searchable(street, postal_code, city)  # the opportunity matched, perhaps by its title
            if key not in hits and all(pattern in address for pattern in patterns):
                hits[key] = BuildingHit(key, ", ".join(part for part in (street, f"{postal_code} {city}".strip()) if part))
    return list(hits.values())[:limit]

