"""Webhook deliveries of the sandbox: queued with the entity change that causes them, sent signed and chunked, retried.

An automation flow with an `entity_operation` trigger and a `trigger-webhook` action queues one
delivery per matching change (in the entity's own transaction, so none is lost). A deliverer
claims due deliveries with a lease (several processes may share the store) and POSTs them with
`Transfer-Encoding: chunked`, signed `v1` (HMAC) and `v1a` (Ed25519), as epilot does.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from integrations.epilot.webhook_signing import sign, sign_ed25519
from integrations.epilot_sandbox.query import now_ms

logger = logging.getLogger("integrations.epilot_sandbox")

# epilot's backoff between attempts: 5 s, 5 min, 30 min, 2 h, 5 h.
RETRY_DELAYS_SECONDS = (5, 300, 1800, 7200, 18000)
CLAIM_SECONDS = 30
SIGNING_KEY_KIND = "webhook_signing_key"


def queue_entity_webhooks(conn: sqlite3.Connection, org_id: str, operation: str, entity: Mapping[str, Any]) -> int:
    """Queue a delivery for every enabled flow that sends this operation on this schema to a webhook; returns how many."""
    queued = 0
    for row in conn.execute("SELECT body FROM documents WHERE kind = 'automation_flow' AND body LIKE '%trigger-webhook%'"):
        flow = json.loads(row["body"])
        if flow.get("enabled") is False or not _triggered(flow, entity.get("_schema"), operation):
            continue
        for action in flow.get("actions") or []:
            config_id = (action.get("config") or {}).get("target_webhook_id") if isinstance(action, Mapping) else None
            if action.get("type") != "trigger-webhook" or not config_id:
                continue
            config_row = conn.execute("SELECT body FROM documents WHERE kind = 'webhook_config' AND id = ?",
                                      (config_id,)).fetchone()
            config = json.loads(config_row["body"]) if config_row else None
            if not config or config.get("enabled") is False:
                continue
            event_id = str(uuid.uuid4())
            payload = {"metadata": {"organization_id": org_id, "webhook_id": config_id, "webhook_name": config.get("name"),
                                    "automation_name": flow.get("flow_name"), "correlation_id": str(uuid.uuid4()),
                                    "creation_timestamp": now_ms(), "execution_id": str(uuid.uuid4()),
                                    "action_id": action.get("id") or str(uuid.uuid4()), "action": operation},
                       "entity": dict(entity), "_org_id": org_id, "_webhook_event_id": event_id}
            conn.execute(
                "INSERT INTO webhook_deliveries (event_id, config_id, message_id, created_at, status, next_attempt_at, payload) "
                "VALUES (?,?,?,?,?,?,?)",
                (event_id, config_id, f"msg_{uuid.uuid4().hex}", now_ms(), "in_progress", time.time(),
                 json.dumps(payload, separators=(",", ":"), ensure_ascii=False)))
            queued += 1
    return queued


def _triggered(flow: Mapping[str, Any], schema: Any, operation: str) -> bool:
    for trigger in flow.get("triggers") or []:
        configuration = trigger.get("configuration") if isinstance(trigger, Mapping) else None
        if trigger.get("type") == "entity_operation" and isinstance(configuration, Mapping) \
                and configuration.get("schema") == schema and operation in (configuration.get("operations") or []):
            return True
    return False


def signing_key_pem(store: Any) -> str:
    """The sandbox organisation's Ed25519 private key (PEM), made on first use."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    existing = store.get_document(SIGNING_KEY_KIND, "ed25519")
    if existing:
        return existing["private_pem"]
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    with store.write() as conn:
        row = conn.execute("SELECT body FROM documents WHERE kind = ? AND id = 'ed25519'", (SIGNING_KEY_KIND,)).fetchone()
        if row:  # another process made it first
            return json.loads(row["body"])["private_pem"]
        store.put_document(conn, SIGNING_KEY_KIND, "ed25519", {"private_pem": pem})
    return pem


def public_key_pem(store: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    key = load_pem_private_key(signing_key_pem(store).encode(), password=None)
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


class WebhookDeliverer:
    """Sends due deliveries of a store; `deliver_due()` once, or `start()` a daemon thread that polls.

    `store` is a SandboxStore (typed loosely: the store imports this module).
    """

    def __init__(self, store: Any, *, retry_scale: float = 1.0, timeout_seconds: float = 10.0,
                 poll_seconds: float = 0.05) -> None:
        self.store = store
        self.retry_scale = retry_scale
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.deliver_due()
            except Exception:  # the loop must outlive a bad row or a locked file
                logger.exception("sandbox webhook delivery failed")
                sent = 0
            if not sent:
                self._stop.wait(self.poll_seconds)

    def deliver_due(self, *, limit: int = 20) -> int:
        """Claim and send up to `limit` due deliveries; returns how many were attempted."""
        now = time.time()
        with self.store.write() as conn:
            rows = conn.execute(
                "SELECT event_id FROM webhook_deliveries WHERE status = 'in_progress' AND next_attempt_at <= ? "
                "AND claimed_until <= ? ORDER BY next_attempt_at LIMIT ?", (now, now, limit)).fetchall()
            ids = [row["event_id"] for row in rows]
            conn.executemany("UPDATE webhook_deliveries SET claimed_until = ? WHERE event_id = ?",
                             [(now + CLAIM_SECONDS, event_id) for event_id in ids])
        for event_id in ids:
            self._attempt(event_id)
        return len(ids)

    def _attempt(self, event_id: str) -> None:
        row = self.store.conn.execute("SELECT * FROM webhook_deliveries WHERE event_id = ?", (event_id,)).fetchone()
        config = self.store.get_document("webhook_config", row["config_id"])
        if config is None:
            self._record(event_id, "failed", row["attempts"] + 1, None, "the webhook config was deleted", None)
            return
        status_code, message = self._post(config, row["message_id"], row["payload"].encode())
        attempts = row["attempts"] + 1
        if status_code is not None and 200 <= status_code < 300:
            self._record(event_id, "succeeded", attempts, status_code, message, None)
            return
        policy = config.get("retryPolicy") or {}
        retries = int(policy.get("maxAttempts") or 3) if policy.get("enabled", True) else 0
        transient = status_code is None or status_code >= 500 or status_code == 429
        if transient and attempts <= min(retries, len(RETRY_DELAYS_SECONDS)):
            delay = RETRY_DELAYS_SECONDS[attempts - 1] * self.retry_scale
            self._record(event_id, "in_progress", attempts, status_code, message, time.time() + delay)
        else:
            self._record(event_id, "failed", attempts, status_code, message, None)

    def _record(self, event_id: str, status: str, attempts: int, status_code: int | None, message: str,
                next_attempt_at: float | None) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE webhook_deliveries SET status = ?, attempts = ?, status_code = ?, message = ?, "
                         "next_attempt_at = coalesce(?, next_attempt_at), claimed_until = 0 WHERE event_id = ?",
                         (status, attempts, status_code, message[:500], next_attempt_at, event_id))

    def _post(self, config: Mapping[str, Any], message_id: str, body: bytes) -> tuple[int | None, str]:
        """POST one delivery, chunked and signed; (status code or None for a connection error, message)."""
        url = urlsplit(str(config.get("url") or ""))
        if url.scheme not in ("http", "https") or not url.hostname:
            return None, "the webhook URL is not http(s)"
        timestamp = int(time.time())
        signatures = [sign(config["signingSecret"], message_id, timestamp, body),
                      sign_ed25519(signing_key_pem(self.store), message_id, timestamp, body)]
        headers = {"Content-Type": "application/json", "webhook-id": message_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": " ".join(signatures), "User-Agent": "epilot-sandbox-webhooks/1.0"}
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(url.hostname, url.port, timeout=self.timeout_seconds)
        try:
            # Two chunks, as a streaming sender would; http.client frames them (Transfer-Encoding: chunked).
            connection.request("POST", (url.path or "/") + (f"?{url.query}" if url.query else ""),
                               body=iter([body[: len(body) // 2], body[len(body) // 2:]]), headers=headers,
                               encode_chunked=True)
            response = connection.getresponse()
            answer = response.read(2000)
            return response.status, answer.decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


def delivery_event(row: sqlite3.Row, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A delivery as the webhooks API's WebhookEvent."""
    event: dict[str, Any] = {
        "event_id": row["event_id"], "webhook_config_id": row["config_id"], "url": (config or {}).get("url", ""),
        "created_at": row["created_at"], "event_name": (config or {}).get("eventName", ""), "status": row["status"],
        "http_method": "POST", "payload": row["payload"], "retry_attempt": max(0, row["attempts"] - 1),
        "org_id": json.loads(row["payload"]).get("_org_id", "")}
    if row["status_code"] is not None or row["message"]:
        event["http_response"] = {key: value for key, value in
                                  (("status_code", row["status_code"]), ("message", row["message"] or "")) if value is not None}
    return event


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
