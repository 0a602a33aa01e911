"""Change an opportunity's status in epilot without overwriting a newer version."""
from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotConflictError, EpilotError, EpilotNotFoundError
from projects.mirror.intake import mirror_after_write
from projects.models import EpilotWrite, Opportunity
from projects.services.audit import audited_write, version_seen
from projects.services.errors import NotAllowed, RemoteFailure, StatusConflict
from projects.services.rules import rules_evaluate_safely


def opportunity_set_status(*, opportunity: Opportunity, status: str, user: Any = None, actor: str = "admin",
                           expected_updated_at: str | None = None, client: EpilotClient | None = None) -> Opportunity:
    """Write `status` with the `_updated_at` staff saw (the mirror's, unless given).

    Raises StatusConflict when epilot holds a newer version (ours and theirs attached),
    NotAllowed for a deleted opportunity, RemoteFailure for other epilot failures.
    """
    client = client or get_epilot_client()
    status = status.strip()
    if not status:
        raise NotAllowed(_("Please give a status."))
    expected = version_seen(opportunity, expected_updated_at)
    summary = {"status": status, "previous": opportunity.status, "_updated_at": expected}
    try:
        with audited_write(action=EpilotWrite.Action.WRITE_STATUS, target_schema="opportunity",
                           target_epilot_id=opportunity.epilot_id, summary=summary, user=user, actor=actor):
            client.patch_entity("opportunity", opportunity.epilot_id, {"status": status}, updated_at=expected)
    except EpilotConflictError:
        try:
            theirs = client.get_entity("opportunity", opportunity.epilot_id)
        except EpilotError as exc:
            raise RemoteFailure(
                _("A conflict, and the current version cannot be read: %(error)s") % {"error": exc.message}
            ) from None
        raise StatusConflict(ours=status, theirs=str(theirs.data.get("status", "")),
                             theirs_updated_at=str(theirs.data.get("_updated_at", ""))) from None
    except EpilotNotFoundError:
        raise NotAllowed(_("The opportunity no longer exists in epilot.")) from None
    except EpilotError as exc:
        raise RemoteFailure(_("epilot did not accept the change: %(error)s") % {"error": exc.message}) from None
    changes = mirror_after_write(refs=[("opportunity", opportunity.epilot_id)], client=client)
    rules_evaluate_safely(refs=changes.changed_refs, client=client)
    opportunity.refresh_from_db()
    return opportunity
