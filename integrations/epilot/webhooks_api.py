"""The webhooks API (webhooks.sls.epilot.io): webhook configs, their delivery log, replays and the signing key."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from integrations.epilot.transport import Transport, segment
from integrations.epilot.types import MalformedPayload

BATCH_REPLAY_LIMIT = 100  # BatchReplayRequest.eventIds maxItems


@dataclass(frozen=True)
class WebhookConfig:
    """A webhook config; `signing_secret` is only set in the answer to createConfig (epilot shows it once)."""

    id: str
    name: str
    event_name: str
    url: str
    enabled: bool
    signing_secret: str | None
    raw: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"WebhookConfig(id={self.id!r}, name={self.name!r}, url={self.url!r}, signing_secret=<redacted>)"

    @classmethod
    def from_api(cls, data: Any) -> WebhookConfig:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
            raise MalformedPayload("a webhook config needs an 'id'")
        secret = data.get("signingSecret")
        return cls(id=data["id"], name=str(data.get("name") or ""), event_name=str(data.get("eventName") or ""),
                   url=str(data.get("url") or ""), enabled=data.get("enabled") is not False,
                   signing_secret=secret if isinstance(secret, str) and secret else None,
                   raw={key: value for key, value in data.items() if key != "signingSecret"})


@dataclass(frozen=True)
class WebhookDelivery:
    """One entry of a config's delivery log (getWebhookEventsV2)."""

    event_id: str
    status: str
    created_at: str
    status_code: int | None

    @classmethod
    def from_api(cls, data: Any) -> WebhookDelivery:
        if not isinstance(data, Mapping) or not isinstance(data.get("event_id"), str):
            raise MalformedPayload("a webhook event needs an 'event_id'")
        response = data.get("http_response") if isinstance(data.get("http_response"), Mapping) else {}
        code = response.get("status_code")
        return cls(event_id=data["event_id"], status=str(data.get("status") or ""), created_at=str(data.get("created_at") or ""),
                   status_code=code if isinstance(code, int) else None)


class WebhooksAPI(Transport):
    """Operations of the webhooks API; methods are named after the spec's operationIds."""

    def get_configs(self) -> list[WebhookConfig]:
        """getConfigs: every webhook config of the organisation."""
        body = self._json("getConfigs", self._request(
            "getConfigs", "GET", self.urls.webhooks, "/v1/webhooks/configs", idempotent=True))
        if not isinstance(body, list):
            raise self._invalid("getConfigs", "the body is not a list")
        return [self._parse("getConfigs", WebhookConfig.from_api, item) for item in body]

    def get_config(self, config_id: str) -> WebhookConfig:
        """getConfig; raises EpilotNotFoundError."""
        response = self._request("getConfig", "GET", self.urls.webhooks, f"/v1/webhooks/configs/{segment(config_id)}",
                                 idempotent=True)
        return self._parse("getConfig", WebhookConfig.from_api, self._json("getConfig", response))

    def create_config(self, config: Mapping[str, Any]) -> WebhookConfig:
        """createConfig; the answer carries the signing secret, the only time epilot shows it."""
        response = self._request("createConfig", "POST", self.urls.webhooks, "/v1/webhooks/configs", json_body=dict(config),
                                 idempotent=False)
        return self._parse("createConfig", WebhookConfig.from_api, self._json("createConfig", response))

    def update_config(self, config_id: str, config: Mapping[str, Any]) -> WebhookConfig:
        """updateConfig (PUT: the config as a whole); raises EpilotNotFoundError."""
        response = self._request("updateConfig", "PUT", self.urls.webhooks, f"/v1/webhooks/configs/{segment(config_id)}",
                                 json_body=dict(config), idempotent=True)
        return self._parse("updateConfig", WebhookConfig.from_api, self._json("updateConfig", response))

    def delete_config(self, config_id: str) -> None:
        """deleteConfig; raises EpilotNotFoundError for a config that is gone."""
        self._request("deleteConfig", "DELETE", self.urls.webhooks, f"/v1/webhooks/configs/{segment(config_id)}",
                      idempotent=True)

    def get_public_key(self, org_id: str) -> str:
        """getPublicKey: the PEM Ed25519 key that `v1a` signatures of this organisation verify with."""
        body = self._json("getPublicKey", self._request(
            "getPublicKey", "GET", self.urls.webhooks, "/v1/webhooks/.well-known/public-key", params={"orgId": org_id},
            idempotent=True))
        if not isinstance(body, Mapping) or not isinstance(body.get("public_key"), str):
            raise self._invalid("getPublicKey", "the body has no 'public_key'")
        return body["public_key"]

    def iter_webhook_events(self, config_id: str, *, status: str | None = None, since: str | None = None,
                            page_size: int = 25) -> Iterator[WebhookDelivery]:
        """getWebhookEventsV2: a config's delivery log, newest first, following next_cursor."""
        cursor: Any = None
        while True:
            options: dict[str, Any] = {"limit": page_size}
            if status:
                options["status"] = status
            if since:
                options["timestamp"] = {"from": since}
            if cursor:
                options["cursor"] = cursor
            body = self._json("getWebhookEventsV2", self._request(
                "getWebhookEventsV2", "POST", self.urls.webhooks, f"/v2/webhooks/configs/{segment(config_id)}/events",
                json_body=options, idempotent=True))
            if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
                raise self._invalid("getWebhookEventsV2", "the body has no 'data' list")
            yield from (self._parse("getWebhookEventsV2", WebhookDelivery.from_api, item) for item in body["data"])
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not isinstance(cursor, Mapping) or not body["data"]:
                return

    def batch_replay_events(self, config_id: str, event_ids: list[str]) -> list[str]:
        """batchReplayEvents (at most 100 ids); returns the ids epilot enqueued."""
        if not 0 < len(event_ids) <= BATCH_REPLAY_LIMIT:
            raise ValueError(f"batchReplayEvents takes 1 to {BATCH_REPLAY_LIMIT} event ids")
        body = self._json("batchReplayEvents", self._request(
            "batchReplayEvents", "POST", self.urls.webhooks, f"/v1/webhooks/configs/{segment(config_id)}/events/replay-batch",
            json_body={"eventIds": event_ids}, idempotent=True), allow_empty=True)
        replayed = body.get("replayed_event_ids") if isinstance(body, Mapping) else None
        return [item for item in replayed if isinstance(item, str)] if isinstance(replayed, list) else []
