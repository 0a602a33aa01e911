"""Errors services raise for the admin, the API and commands to show as one clear message."""
from __future__ import annotations

from django.utils.translation import gettext as _

from integrations.epilot import EpilotRateLimitedError, EpilotServerError, EpilotTransportError

# epilot is down or busy: waiting and trying again can help (any other epilot error will not).
TRANSIENT_EPILOT_ERRORS = (EpilotTransportError, EpilotServerError, EpilotRateLimitedError)


class ServiceError(Exception):
    """A use case could not be carried out; `message` is meant for staff."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAllowed(ServiceError):
    """The request contradicts the current state (already running, already converted, deleted...)."""


class NotFound(ServiceError):
    """What the request names does not exist (in the mirror or in epilot)."""


class InProgress(ServiceError):
    """Another request for the same thing is being carried out right now."""


class RemoteFailure(ServiceError):
    """epilot refused or failed; local state is consistent and the action can be retried."""


class Conflict(ServiceError):
    """epilot's state is no longer the one the request was based on; nothing was overwritten."""


class StatusConflict(ServiceError):
    """epilot holds a newer version than the one staff edited."""

    def __init__(self, *, ours: str, theirs: str, theirs_updated_at: str) -> None:
        super().__init__(
            _("The status was changed in epilot meanwhile (now: '%(theirs)s'); your change ('%(ours)s') was not saved.")
            % {"theirs": theirs, "ours": ours}
        )
        self.ours = ours
        self.theirs = theirs
        self.theirs_updated_at = theirs_updated_at
