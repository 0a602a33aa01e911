"""The webhooks API of the sandbox: configs (the signing secret shown once), the delivery log, replays, the public key."""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from integrations.epilot_sandbox.http import HTTPError, Request, Response, json_object
from integrations.epilot_sandbox.query import iso_ms
from integrations.epilot_sandbox.store import SandboxStore, now_ms
from integrations.epilot_sandbox.webhook_outbox import delivery_event, new_signing_secret, public_key_pem

READ_ONLY = ("id", "signingSecret", "creationTime", "updatedTime")


class WebhookHandlers:
    """Handlers of the webhooks API, named after its operationIds."""

    store: SandboxStore

    def getConfigs(self, request: Request) -> Response:
        configs = [_public(config) for config in self.store.list_documents("webhook_config")]
        event_name = request.arg("eventName")
        return 200, [config for config in configs if not event_name or config.get("eventName") == event_name]

    def createConfig(self, request: Request) -> Response:
        data = _config(request.json())
        stamp = now_ms()
        config = {**data, "id": uuid.uuid4().hex[:10], "creationTime": stamp, "updatedTime": stamp,
                  "signingSecret": new_signing_secret()}
        config.setdefault("enabled", True)
        with self.store.write() as conn:
            self.store.put_document(conn, "webhook_config", config["id"], config)
        return 201, config  # the only answer that shows the secret

    def getConfig(self, request: Request, config_id: str) -> Response:
        return 200, _public(self._config(config_id))

    def updateConfig(self, request: Request, config_id: str) -> Response:
        data = _config(request.json())
        with self.store.write() as conn:
            existing = self._config(config_id)
            config = {**data, **{key: existing[key] for key in READ_ONLY if key in existing}, "updatedTime": now_ms()}
            config.setdefault("enabled", True)
            self.store.put_document(conn, "webhook_config", config_id, config)
        return 200, _public(config)

    def deleteConfig(self, request: Request, config_id: str) -> Response:
        with self.store.write() as conn:
            self._config(config_id)
            self.store.delete_document(conn, "webhook_config", config_id)
        return 204, None

    def getPublicKey(self, request: Request) -> Response:
        if not request.arg("orgId"):
            raise HTTPError(400, "orgId is required", style="workflow")
        return 200, {"public_key": public_key_pem(self.store), "algorithm": "ed25519", "issuer": "epilot"}

    def getWebhookEventsV2(self, request: Request, config_id: str) -> Response:
        config = self._config(config_id)
        options = json_object(request.json() if request.raw_body else {}, style="workflow")
        limit = options.get("limit", 25)
        if not isinstance(limit, int) or not 1 <= limit <= 25:
            raise HTTPError(400, "limit must be an integer from 1 to 25", style="workflow")
        conditions, params = ["config_id = ?"], [config_id]
        if options.get("status"):
            if options["status"] not in ("succeeded", "failed", "skipped"):
                raise HTTPError(400, "status must be succeeded, failed or skipped", style="workflow")
            conditions.append("status = ?")
            params.append(options["status"])
        timestamp = options.get("timestamp") if isinstance(options.get("timestamp"), Mapping) else {}
        for key, operator in (("from", ">="), ("to", "<=")):
            if timestamp.get(key):
                conditions.append(f"created_at {operator} ?")
                params.append(_iso(timestamp[key]))
        cursor = options.get("cursor") if isinstance(options.get("cursor"), Mapping) else None
        if cursor and cursor.get("created_at") and cursor.get("event_id"):
            conditions.append("(created_at < ? OR (created_at = ? AND event_id < ?))")
            params += [_iso(cursor["created_at"]), _iso(cursor["created_at"]), cursor["event_id"]]
        rows = self.store.conn.execute(
            f"SELECT * FROM webhook_deliveries WHERE {' AND '.join(conditions)} ORDER BY created_at DESC, event_id DESC "
            "LIMIT ?", [*params, limit + 1]).fetchall()
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if page else None
        return 200, {"data": [delivery_event(row, config) for row in page], "has_more": more,
                     "next_cursor": {"created_at": last["created_at"], "event_id": last["event_id"]} if more and last else None}

    def batchReplayEvents(self, request: Request, config_id: str) -> Response:
        self._config(config_id)
        data = json_object(request.json(), style="workflow")
        ids = data.get("eventIds")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100 or not all(isinstance(item, str) for item in ids):
            raise HTTPError(400, "eventIds must be a list of 1 to 100 event ids", style="workflow")
        with self.store.write() as conn:
            replayed = [row["event_id"] for row in conn.execute(
                f"SELECT event_id FROM webhook_deliveries WHERE config_id = ? AND event_id IN ({','.join('?' * len(ids))})",
                [config_id, *ids])]
            # A replay is a new delivery (new webhook-id) of the same event (same _webhook_event_id in the body).
            conn.executemany("UPDATE webhook_deliveries SET status = 'in_progress', attempts = 0, next_attempt_at = ?, "
                             "claimed_until = 0, message_id = ? WHERE event_id = ?",
                             [(time.time(), f"msg_{uuid.uuid4().hex}", event_id) for event_id in replayed])
        return 202, {"replayed_event_ids": replayed}

    def _config(self, config_id: str) -> dict[str, Any]:
        config = self.store.get_document("webhook_config", config_id)
        if config is None:
            raise HTTPError(404, "No webhook config found", style="workflow")
        return config


def _public(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "signingSecret"}


def _config(value: Any) -> dict[str, Any]:
    data = json_object(value, style="workflow")
    missing = [key for key in ("name", "eventName") if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise HTTPError(400, f"missing required fields: {', '.join(missing)}", style="workflow")
    if "url" in data and not isinstance(data["url"], str):
        raise HTTPError(400, "url must be a string", style="workflow")
    return {key: value for key, value in data.items() if key not in READ_ONLY}


def _iso(value: Any) -> str:
    """A timestamp of a filter or cursor in the stored form (UTC, milliseconds, Z); a bad one is a 400."""
    return iso_ms(str(value).replace("Z", "+00:00"))
