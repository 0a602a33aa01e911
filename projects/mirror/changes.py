"""The mirror's change event: what one committed change set brought into the mirror, as data.

Everything that enters the mirror (a sync run, a webhook, the refresh after one of our writes) is
written by `pages.store_page` and the execution store, and announced once its transaction has
committed: `entities_changed` with an `EntitiesChanged`. What is derived from the mirror listens
and recomputes only what the change touches (connected in `ProjectsConfig.ready`):

    entities_changed ──> projects (by opportunity) ──> projects_changed ──> rollout areas (by address key)

Local rules are not a listener: they may write to epilot, so the use case that made the change
evaluates them once, explicitly, with the same refs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.dispatch import Signal

# The schemas whose rows the listeners derive from (projects, their areas, promised dates); a sync run writes them
# first, and a full pass announces them as soon as they are whole.
DERIVED_FROM = ("opportunity", "order")
# Sent with `change` (an EntitiesChanged) once a change set is committed.
entities_changed = Signal()
# Sent by the projects' listener with `opportunity_ids` (pks; None after a full run: all) and `address_keys`
# (the addresses of those projects, now and before the change).
projects_changed = Signal()


@dataclass(frozen=True)
class EntitiesChanged:
    """One committed change set of the mirror.

    `refs` are the (schema, epilot id) of the entities whose mirrored rows changed, `kinds` says how
    (created, updated, deleted; `linked` for an order whose opportunity changed through another
    entity's items; `workflows` for an entity whose executions changed). `full` marks a full sync,
    also one that ended early: it lists no refs, and everything derived is recomputed.
    """

    refs: tuple[tuple[str, str], ...]
    kinds: Mapping[tuple[str, str], str]
    opportunities: frozenset[str] = frozenset()  # epilot ids of the opportunities among the refs
    orders: frozenset[str] = frozenset()  # epilot ids of the orders among the refs
    previous_owners: frozenset[int] = frozenset()  # opportunities (pks) changed orders belonged to before
    previous_address_keys: frozenset[str] = frozenset()  # addresses changed opportunities had before
    full: bool = False

    def __bool__(self) -> bool:
        return bool(self.refs) or self.full


def announce(change: EntitiesChanged) -> EntitiesChanged:
    """Send `entities_changed` for a committed change set (nothing when it is empty); returns the change.

    Listeners run in the caller's process, after the change set's own transaction; an error of a
    listener is raised to the caller (the change itself stays committed).
    """
    if change:
        entities_changed.send(sender=EntitiesChanged, change=change)
    return change
