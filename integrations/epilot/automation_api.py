"""The automation API (automation.sls.epilot.io): automation flows."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from integrations.epilot.transport import Transport, segment
from integrations.epilot.types import AutomationFlow


class AutomationAPI(Transport):
    """Operations of the automation API; methods are named after the spec's operationIds."""

    def search_flows(self, *, schema: str | None = None, size: int = 25, from_: int = 0) -> tuple[int, list[AutomationFlow]]:
        """searchFlows: one page of automation flows and the total."""
        params: dict[str, Any] = {"size": size, "from": from_}
        if schema:
            params["schema"] = schema
        body = self._json("searchFlows", self._request(
            "searchFlows", "GET", self.urls.automation, "/v1/automation/flows", params=params, idempotent=True))
        if not isinstance(body, Mapping) or not isinstance(body.get("results"), list):
            raise self._invalid("searchFlows", "the body has no 'results' list")
        flows = [self._parse("searchFlows", AutomationFlow.from_api, item) for item in body["results"]]
        total = body.get("total")
        return (int(total) if isinstance(total, (int, float)) else len(flows)), flows

    def iter_flows(self, *, schema: str | None = None, page_size: int = 100) -> Iterator[AutomationFlow]:
        """All automation flows, paging searchFlows with from/size."""
        offset = 0
        while True:
            total, flows = self.search_flows(schema=schema, size=page_size, from_=offset)
            yield from flows
            offset += len(flows)
            if not flows or offset >= total:
                return

    def get_flow(self, flow_id: str) -> AutomationFlow:
        """getFlow; raises EpilotNotFoundError."""
        body = self._json(
            "getFlow",
            self._request("getFlow", "GET", self.urls.automation, f"/v1/automation/flows/{segment(flow_id)}", idempotent=True),
        )
        return self._parse("getFlow", AutomationFlow.from_api, body)

    def create_flow(self, flow: Mapping[str, Any]) -> AutomationFlow:
        """createFlow; the body needs flow_name, triggers and actions."""
        response = self._request(
            "createFlow", "POST", self.urls.automation, "/v1/automation/flows", json_body=dict(flow), idempotent=False
        )
        return self._parse("createFlow", AutomationFlow.from_api, self._json("createFlow", response))

    def put_flow(self, flow_id: str, flow: Mapping[str, Any]) -> AutomationFlow:
        """putFlow: replace a flow as a whole."""
        response = self._request("putFlow", "PUT", self.urls.automation, f"/v1/automation/flows/{segment(flow_id)}",
                                 json_body=dict(flow), idempotent=True)
        return self._parse("putFlow", AutomationFlow.from_api, self._json("putFlow", response))


    def delete_flow(self, flow_id: str) -> None:
        """deleteFlow; raises EpilotNotFoundError for a flow that is gone."""
        self._request("deleteFlow", "DELETE", self.urls.automation, f"/v1/automation/flows/{segment(flow_id)}", idempotent=True)
