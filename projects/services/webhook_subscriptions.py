"""Provisioning the epilot webhook that feeds the live mirror, rotating its secret, and replaying failed deliveries.

One webhook config (found by its name) and one automation flow per mirrored schema (found by the
key "[webhook:<schema>]" in its name): an `entity_operation` trigger with a `trigger-webhook` action.
Running it again changes nothing that is already so. epilot shows a config's signing secret only
in the answer to createConfig, so a config whose secret this installation does not hold is replaced.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError, EpilotNotFoundError, WebhookConfig
from integrations.epilot.webhooks_api import BATCH_REPLAY_LIMIT
from projects.mirror.schemas import configured_schemas, validate_schemas
from projects.models import Contact, EpilotWrite, Opportunity, Order, WebhookSubscription
from projects.services.audit import audited_write
from projects.services.errors import NotAllowed, RemoteFailure
from projects.services.secret_box import SecretUnreadable, hint, reseal, seal, sealed_with_current_key, unseal

logger = logging.getLogger("projects.webhooks")

SUBSCRIPTION_NAME = "Ausbau Backoffice mirror"
# The event a config receives from automations' trigger-webhook actions.
EVENT_NAME = "automation_trigger"
OPERATIONS = ["createEntity", "updateEntity", "softDeleteEntity", "deleteEntity", "restoreEntity"]
FLOW_KEY = re.compile(r"\[webhook:([a-z][a-z0-9_]*)\]")
ROTATION_GRACE = dt.timedelta(hours=1)
PUBLIC_KEY_CACHE_SECONDS = 7 * 24 * 3600  # refreshed every six hours; kept through an epilot outage
PUBLIC_KEY_RETRY_SECONDS = 300  # at most one refresh queued per this long by deliveries that found no key


@dataclass
class ProvisionReport:
    """What provisioning did, for the command and the admin (never the secret itself)."""

    subscription: WebhookSubscription
    config_created: bool = False
    config_updated: bool = False
    secret_rotated: bool = False
    flows_created: list[str] = field(default_factory=list)
    flows_updated: list[str] = field(default_factory=list)
    flows_deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any([self.config_created, self.config_updated, self.secret_rotated, self.flows_created, self.flows_updated,
                    self.flows_deleted])


def config_body(url: str) -> dict[str, Any]:
    """The webhook config as sent to createConfig/updateConfig."""
    return {"name": SUBSCRIPTION_NAME, "eventName": EVENT_NAME, "url": url, "httpMethod": "POST", "enabled": True,
            "auth": {"authType": "NONE"}, "retryPolicy": {"enabled": True, "maxAttempts": 5},
            "payloadConfiguration": {"hydrate_entity": False, "include_relations": False, "include_changed_attributes": True}}


def flow_body(schema: str, config_id: str) -> dict[str, Any]:
    """The automation flow that sends every change of `schema` to the webhook config."""
    return {"flow_name": f"{SUBSCRIPTION_NAME}: {schema} [webhook:{schema}]", "enabled": True, "entity_schema": schema,
            "triggers": [{"type": "entity_operation", "configuration": {"schema": schema, "operations": OPERATIONS}}],
            "actions": [{"type": "trigger-webhook", "name": "Notify Ausbau Backoffice",
                         "config": {"target_webhook_id": config_id}}]}


def webhook_provision(*, url: str, schemas: list[str] | None = None, rotate: bool = False, user: Any = None,
                      actor: str = "command", client: EpilotClient | None = None) -> ProvisionReport:
    """Create or update the webhook config and its flows; `rotate` replaces the config to get a new secret.

    Raises NotAllowed (a URL that is not absolute http(s), an unknown schema) or RemoteFailure (epilot
    failed; what was done so far is recorded, and running it again finishes the rest).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotAllowed(_("The receiver URL must be an absolute http(s) URL, e.g. https://backoffice.example/webhooks/epilot/."))
    if settings.EPILOT_WEBHOOK_REQUIRE_HTTPS and parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        # Deliveries carry customer data and their signatures; plain http is for a sandbox on this machine only.
        raise NotAllowed(_("The receiver URL must use https (plain http only for 127.0.0.1, ::1 or localhost)."))
    try:
        wanted = validate_schemas(schemas) if schemas else configured_schemas()
    except ValueError as exc:
        raise NotAllowed(str(exc)) from None
    client = client or get_epilot_client()
    subscription, _created = WebhookSubscription.objects.get_or_create(name=SUBSCRIPTION_NAME, defaults={"url": url})
    report = ProvisionReport(subscription=subscription)
    try:
        config = _ensure_config(client, subscription, url, rotate, report, user=user, actor=actor)
        _ensure_flows(client, subscription, config.id, wanted, report, user=user, actor=actor)
        _delete_stray_configs(client, keep=config.id, user=user, actor=actor)
    except EpilotError as exc:
        raise RemoteFailure(_("The webhook could not be provisioned: %(error)s") % {"error": exc.message}) from None
    WebhookSubscription.objects.filter(pk=subscription.pk).update(url=url, schemas=wanted, provisioned_at=timezone.now(),
                                                                  organization_id=_mirrored_organisation())
    subscription.refresh_from_db()
    webhook_public_key_refresh(client)  # v1a deliveries verify from the first one on
    return report


def _mirrored_organisation() -> str:
    """The organisation the mirrored entities belong to (their `_org`), or EPILOT_ORG_ID, or ''."""
    if settings.EPILOT_ORG_ID:
        return settings.EPILOT_ORG_ID
    for model in (Opportunity, Contact, Order):
        found = model.objects.exclude(payload__isnull=True).values_list("payload___org", flat=True).first()
        if found:
            return str(found)[:64]
    return ""


def _ensure_config(client: EpilotClient, subscription: WebhookSubscription, url: str, rotate: bool, report: ProvisionReport,
                   **audit: Any) -> WebhookConfig:
    existing = _find_config(client, subscription)
    holds_secret = _readable(subscription) and existing is not None and existing.id == subscription.config_id
    if existing is not None and holds_secret and not rotate:
        body = config_body(url)
        if existing.url != url or existing.event_name != EVENT_NAME or not existing.enabled:
            with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="webhook_config",
                               target_epilot_id=existing.id, summary={"update": existing.id, "url": url}, **audit) as out:
                existing = client.update_config(existing.id, body)
                out.epilot_ids = [existing.id]
            report.config_updated = True
        return existing
    with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="webhook_config",
                       summary={"create": SUBSCRIPTION_NAME, "url": url, "replaces": existing.id if existing else None},
                       **audit) as out:
        created = client.create_config(config_body(url))
        out.epilot_ids = [created.id]
    if not created.signing_secret:
        raise RemoteFailure(_("epilot created the webhook config %(id)s but returned no signing secret.") % {"id": created.id})
    # Saved at once: the secret exists nowhere else. The old one stays valid for deliveries under way.
    previous = subscription.encrypted_secret
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        config_id=created.id, encrypted_secret=seal(created.signing_secret), secret_hint=hint(created.signing_secret),
        encrypted_previous_secret=previous, previous_valid_until=timezone.now() + ROTATION_GRACE if previous else None,
        rotated_at=timezone.now() if previous else subscription.rotated_at)
    subscription.refresh_from_db()
    report.config_created = existing is None
    report.secret_rotated = existing is not None or bool(previous)
    logger.info("webhook config %s created (secret %s)", created.id, subscription.secret_hint)
    return created


def _readable(subscription: WebhookSubscription) -> bool:
    """Whether this installation holds the config's secret and can open it (a changed SECRET_KEY without fallback
    cannot: then the config is replaced to get a new secret, never kept as if nothing were wrong)."""
    if not subscription.encrypted_secret:
        return False
    try:
        unseal(subscription.encrypted_secret)
    except SecretUnreadable as exc:
        logger.error("webhook subscription %s: %s", subscription.name, exc)
        return False
    return True


def webhook_secrets_reseal() -> int:
    """Seal stored webhook secrets that open only with a SECRET_KEY_FALLBACKS key again with SECRET_KEY; returns how
    many subscriptions were updated. One that no key opens is logged and left for provisioning to replace."""
    updated = 0
    for subscription in WebhookSubscription.objects.exclude(encrypted_secret=""):
        if sealed_with_current_key(subscription.encrypted_secret) and \
                sealed_with_current_key(subscription.encrypted_previous_secret):
            continue
        try:
            fields = {"encrypted_secret": reseal(subscription.encrypted_secret),
                      "encrypted_previous_secret": reseal(subscription.encrypted_previous_secret)}
        except SecretUnreadable as exc:
            logger.error("webhook subscription %s: %s", subscription.name, exc)
            continue
        WebhookSubscription.objects.filter(pk=subscription.pk).update(**fields)
        updated += 1
    if updated:
        logger.info("webhook secrets sealed again with the new SECRET_KEY: %d", updated)
    return updated


def _find_config(client: EpilotClient, subscription: WebhookSubscription) -> WebhookConfig | None:
    if subscription.config_id:
        try:
            return client.get_config(subscription.config_id)
        except EpilotNotFoundError:
            pass
    return next((config for config in client.get_configs() if config.name == SUBSCRIPTION_NAME), None)


def _ensure_flows(client: EpilotClient, subscription: WebhookSubscription, config_id: str, wanted: list[str],
                  report: ProvisionReport, **audit: Any) -> None:
    found: dict[str, list[Any]] = {}
    for flow in client.iter_flows():
        match = FLOW_KEY.search(flow.name)
        if match:
            found.setdefault(match.group(1), []).append(flow)
    flow_ids: dict[str, str] = {}
    for schema in wanted:
        body = flow_body(schema, config_id)
        flows = found.pop(schema, [])
        keep = flows[0] if flows else None
        for duplicate in flows[1:]:
            _delete_flow(client, duplicate.id, schema, report, **audit)
        if keep is None:
            with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="automation_flow",
                               summary={"create": body["flow_name"]}, **audit) as out:
                keep = client.create_flow(body)
                out.epilot_ids = [keep.id]
            report.flows_created.append(schema)
        elif _flow_differs(dict(keep.data), body):
            with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="automation_flow",
                               target_epilot_id=keep.id, summary={"update": body["flow_name"]}, **audit) as out:
                keep = client.put_flow(keep.id, body)
                out.epilot_ids = [keep.id]
            report.flows_updated.append(schema)
        flow_ids[schema] = keep.id
    for schema, flows in found.items():  # schemas no longer wanted
        for flow in flows:
            _delete_flow(client, flow.id, schema, report, **audit)
    WebhookSubscription.objects.filter(pk=subscription.pk).update(flow_ids=flow_ids)


def _flow_differs(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return any(found.get(key) != value for key, value in wanted.items())


def _delete_flow(client: EpilotClient, flow_id: str, schema: str, report: ProvisionReport, **audit: Any) -> None:
    with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="automation_flow", target_epilot_id=flow_id,
                       summary={"delete": flow_id, "schema": schema}, **audit), contextlib.suppress(EpilotNotFoundError):
        client.delete_flow(flow_id)
    report.flows_deleted.append(schema)


def _delete_stray_configs(client: EpilotClient, *, keep: str, **audit: Any) -> None:
    """Configs of ours besides `keep`: replaced by a rotation, or created by a run that died before saving."""
    for config in client.get_configs():
        if config.name == SUBSCRIPTION_NAME and config.id != keep:
            with audited_write(action=EpilotWrite.Action.PROVISION_WEBHOOK, target_schema="webhook_config",
                               target_epilot_id=config.id, summary={"delete": config.id}, **audit), \
                    contextlib.suppress(EpilotNotFoundError):
                client.delete_config(config.id)


def subscription_secrets(now: dt.datetime | None = None) -> list[str]:
    """The signing secrets provisioning stored: the current one, and the previous one during its grace period."""
    now = now or timezone.now()
    secrets: list[str] = []
    for subscription in WebhookSubscription.objects.exclude(encrypted_secret=""):
        try:
            secrets.append(unseal(subscription.encrypted_secret))
            if subscription.encrypted_previous_secret and subscription.previous_valid_until and \
                    subscription.previous_valid_until > now:
                secrets.append(unseal(subscription.encrypted_previous_secret))
        except SecretUnreadable as exc:
            logger.error("webhook subscription %s: %s", subscription.name, exc)
    return secrets


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _organisation_id() -> str:
    """EPILOT_ORG_ID, else the organisation provisioning found on the mirrored entities; never one a delivery names
    (anyone's epilot organisation can sign its own deliveries)."""
    return settings.EPILOT_ORG_ID or WebhookSubscription.objects.exclude(organization_id="").values_list(
        "organization_id", flat=True).first() or ""


def organisation_public_key() -> str | None:
    """The PEM key `v1a` signatures verify with, from the cache only; None while it is not known.

    A request never calls epilot for it (an unsigned delivery must cause no work): on a miss a
    refresh is queued, at most one per PUBLIC_KEY_RETRY_SECONDS, and the delivery is refused.
    """
    org_id = _organisation_id()
    if not org_id:
        return None
    pem = cache.get(_public_key_cache_key(org_id))
    if pem is None and cache.add(f"epilot-webhook-public-key-refresh:{org_id}", 1, PUBLIC_KEY_RETRY_SECONDS):
        from projects.tasks import webhook_public_key_refresh_task

        try:
            webhook_public_key_refresh_task.delay()
        except Exception:  # the broker is down: the periodic refresh will read it
            logger.warning("the refresh of the webhook public key could not be queued")
    return pem


def webhook_public_key_refresh(client: EpilotClient | None = None) -> bool:
    """Read the organisation's public key from epilot into the cache; returns whether it is known now.

    A failure is logged and keeps the key read before (a rotation in epilot reaches us with the next refresh).
    """
    org_id = _organisation_id()
    if not org_id:
        return False
    try:
        pem = (client or get_epilot_client()).get_public_key(org_id)
    except EpilotError as exc:
        logger.warning("the webhook public key could not be read: %s", exc.message)
        return cache.get(_public_key_cache_key(org_id)) is not None
    cache.set(_public_key_cache_key(org_id), pem, PUBLIC_KEY_CACHE_SECONDS)
    return True


def _public_key_cache_key(org_id: str) -> str:
    return f"epilot-webhook-public-key:{org_id}"


def webhook_reconcile(*, user: Any = None, actor: str = "schedule", client: EpilotClient | None = None) -> int:
    """Ask epilot to deliver again every failed delivery since the last reconciliation; returns how many.

    Without a provisioned webhook, or when its config is gone in epilot (logged), it does nothing.
    Raises RemoteFailure (nothing is marked reconciled).
    """
    subscription = WebhookSubscription.objects.exclude(config_id="").first()
    if subscription is None:
        return 0
    client = client or get_epilot_client()
    started = timezone.now()
    since = (subscription.reconciled_at or started - dt.timedelta(days=7)) - dt.timedelta(minutes=5)
    try:
        failed = list(dict.fromkeys(delivery.event_id for delivery in client.iter_webhook_events(
            subscription.config_id, status="failed", since=since.isoformat().replace("+00:00", "Z"))))
        for start in range(0, len(failed), BATCH_REPLAY_LIMIT):
            batch = failed[start:start + BATCH_REPLAY_LIMIT]
            with audited_write(action=EpilotWrite.Action.REPLAY_WEBHOOKS, target_schema="webhook_config",
                               target_epilot_id=subscription.config_id, summary={"events": len(batch)}, user=user,
                               actor=actor) as out:
                out.epilot_ids = client.batch_replay_events(subscription.config_id, batch)
    except EpilotNotFoundError:
        logger.warning("webhook config %s is gone in epilot; run provision_webhook again", subscription.config_id)
        return 0
    except EpilotError as exc:
        # Chained: the task retries when the cause is transient (epilot down or busy).
        raise RemoteFailure(_("Failed webhook deliveries could not be replayed: %(error)s") % {"error": exc.message}) from exc
    WebhookSubscription.objects.filter(pk=subscription.pk).update(reconciled_at=started)
    return len(failed)
