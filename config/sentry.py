"""Optional error reporting to Sentry: on only with SENTRY_DSN, without personal data, secrets scrubbed."""
from __future__ import annotations

import re
from typing import Any

# Besides Sentry's own list (password, token, secret, authorization, cookies, ...): what this installation calls
# its secrets, in settings, request headers and local variables.
EXTRA_DENYLIST = ["epilot_api_token", "webhook_secret", "webhook_secrets", "encrypted_secret", "signing_secret",
                  "webhook-signature", "http_webhook_signature", "metrics_token", "secret_key", "dsn"]
# A webhook signing secret or a bearer token inside a message or an exception text.
SECRET_TEXT = re.compile(r"whsec_[A-Za-z0-9+/=]+|Bearer\s+\S+")


def init_sentry(dsn: str, *, environment: str, traces_sample_rate: float) -> None:
    """Start the Sentry SDK with the Django and Celery integrations; does nothing without a DSN."""
    if not dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(dsn=dsn, environment=environment, traces_sample_rate=traces_sample_rate, send_default_pii=False,
                    integrations=[DjangoIntegration(), CeleryIntegration()],
                    event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + EXTRA_DENYLIST, recursive=True),
                    before_send=scrub_texts)


def scrub_texts(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Blank out secrets inside the event's message and exception values (keys are Sentry's scrubber's job)."""
    if isinstance(event.get("message"), str):
        event["message"] = SECRET_TEXT.sub("[Filtered]", event["message"])
    logentry = event.get("logentry")
    if isinstance(logentry, dict) and isinstance(logentry.get("message"), str):
        logentry["message"] = SECRET_TEXT.sub("[Filtered]", logentry["message"])
    for exception in (event.get("exception") or {}).get("values") or ():
        if isinstance(exception.get("value"), str):
            exception["value"] = SECRET_TEXT.sub("[Filtered]", exception["value"])
    return event
