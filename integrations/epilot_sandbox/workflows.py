"""The workflow services of the sandbox: V1 definitions and V2 flow templates, V1 and V2 executions."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from integrations.epilot_sandbox.http import HTTPError, Request, Response, json_object, short_id
from integrations.epilot_sandbox.store import SandboxStore, later_than, now_ms

STEP_DONE = {"COMPLETED", "SKIPPED"}
STEP_STATUSES = {"UNASSIGNED", "ASSIGNED", "COMPLETED", "SKIPPED", "IN_PROGRESS", "SCHEDULED", "PENDING", "CONDITION_PENDING",
                 "WAITING_FOR_CONFIRMATION", "ON_HOLD", "FAILED"}


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class WorkflowHandlers:
    """Handlers of the workflow definition and execution services, named after their operationIds."""

    store: SandboxStore


    def _closing_reasons(self, references: Any) -> list[dict[str, str]]:
        """The org's closing reasons ({id, title}) a definition or template names by id."""
        known = {reason["id"]: reason for reason in self.store.list_documents("closing_reason")}
        return [{"id": ref["id"], "title": known[ref["id"]]["title"]} for ref in references or []
                if isinstance(ref, Mapping) and ref.get("id") in known]

    def getDefinitions(self, request: Request) -> Response:
        return 200, self.store.list_documents("definition")

    def getDefinition(self, request: Request, definition_id: str) -> Response:
        definition = self.store.get_document("definition", definition_id)
        if definition is None:
            raise HTTPError(404, f"Definition with id '{definition_id}' not found", style="workflow")
        return 200, definition

    def listFlowTemplates(self, request: Request) -> Response:
        templates = self.store.list_documents("flow_template")
        schema = request.arg("trigger_schema")
        if schema:
            templates = [t for t in templates if (t.get("trigger") or {}).get("entity_schema") in (None, schema)]
        return 200, {"results": templates}

    def getFlowTemplate(self, request: Request, flow_id: str) -> Response:
        template = self.store.get_document("flow_template", flow_id)
        if template is None:
            raise HTTPError(404, f"Flow template '{flow_id}' not found", style="workflow")
        return 200, template

    def getExecutions(self, request: Request) -> Response:
        executions = self.store.list_documents("execution", entity_id=request.arg("context"), schema=request.arg("schema"))
        return 200, [_slim(execution) for execution in executions]

    def createExecution(self, request: Request) -> Response:
        data = json_object(request.json(), style="workflow")
        workflow_id = data.get("workflowId")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise HTTPError(400, "workflowId is required", style="workflow")
        definition = self.store.get_document("definition", workflow_id)
        if definition is None:
            raise HTTPError(400, f"Invalid workflowId: definition {workflow_id} not found", style="workflow")
        contexts = data.get("contexts") or []
        if not isinstance(contexts, list) or not all(
            isinstance(c, Mapping) and c.get("id") and c.get("schema") and "title" in c for c in contexts
        ):
            raise HTTPError(400, "each context needs id, schema and title", style="workflow")
        trigger = data.get("trigger", "MANUAL")
        if trigger not in ("MANUAL", "AUTOMATIC"):
            raise HTTPError(400, "trigger must be MANUAL or AUTOMATIC", style="workflow")
        for ctx in contexts:
            entity = self.store.get_entity(str(ctx["id"]))
            if entity is None or entity.get("_deleted_at") or entity["_schema"] != ctx["schema"]:
                raise HTTPError(400, f"Invalid context: {ctx['schema']} {ctx['id']} not found", style="workflow")
        execution = _execution_from_definition(definition, contexts, trigger, self.store.org_id)
        execution["configuredClosingReasonSnapshot"] = self._closing_reasons(definition.get("closingReasons"))
        with self.store.write() as conn:
            self.store.put_document(conn, "execution", execution["id"], execution,
                                    links=[(str(c["id"]), str(c["schema"])) for c in contexts])
            self._reflect_execution(conn, execution, contexts)
        return 201, execution

    def getExecution(self, request: Request, execution_id: str) -> Response:
        execution = self.store.get_document("execution", execution_id)
        return 200, execution  # the spec answers an unknown id with an empty 200

    def updateExecution(self, request: Request, execution_id: str) -> Response:
        changes = json_object(request.json(), style="workflow")
        allowed = {"status", "assignedTo", "selectedClosingReasons", "closingReasonDescription", "dueDate",
                   "dynamicDueDate", "closedBy", "contexts", "completedTime"}
        if set(changes) - allowed:
            raise HTTPError(400, f"unknown fields: {', '.join(sorted(set(changes) - allowed))}", style="workflow")
        if "status" in changes and changes["status"] not in ("STARTED", "DONE", "CLOSED"):
            raise HTTPError(400, "status must be STARTED, DONE or CLOSED", style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            offered = {reason["id"] for reason in execution.get("configuredClosingReasonSnapshot") or []}
            for reason in changes.get("selectedClosingReasons") or []:
                if not isinstance(reason, Mapping) or reason.get("id") not in offered or not reason.get("title"):
                    raise HTTPError(400, f"Invalid closing reason: {reason!r}", style="workflow")
            execution.update(changes)
            execution["lastUpdateTime"] = now_ms()
            if changes.get("status") in ("DONE", "CLOSED"):
                execution.setdefault("completedTime", execution["lastUpdateTime"])
            self.store.put_document(conn, "execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 204, None

    def deleteExecution(self, request: Request, execution_id: str) -> Response:
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            self.store.delete_document(conn, "execution", execution_id)
            execution["status"] = "CLOSED"
            self._reflect_execution(conn, execution, execution.get("contexts") or [], removed=True)
        return 204, None

    def updateStep(self, request: Request, execution_id: str, step_id: str) -> Response:
        changes = json_object(request.json(), style="workflow")
        if "status" in changes and changes["status"] not in STEP_STATUSES:
            raise HTTPError(400, f"Invalid step status: {changes['status']!r}", style="workflow")
        if "assignedTo" in changes and not _string_list(changes["assignedTo"]):
            raise HTTPError(400, "assignedTo must be a list of user ids", style="workflow")
        if "dueDate" in changes and not isinstance(changes["dueDate"], str):
            raise HTTPError(400, "dueDate must be a string", style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            step = next((s for s in _v1_steps(execution) if s["id"] == step_id), None)
            if step is None:
                raise HTTPError(404, f"Step {step_id} not found", style="workflow")
            if execution.get("status") != "STARTED" and "status" in changes:
                raise HTTPError(400, f"Execution {execution_id} is {execution.get('status')}; its steps cannot change",
                                style="workflow")
            stamp = now_ms()
            step.update({key: value for key, value in changes.items() if key in ("status", "assignedTo", "dueDate", "name")})
            if changes.get("dueDate") == "":
                step.pop("dueDate", None)
            step["lastUpdated"] = stamp
            if "status" in changes:
                step["statusLastUpdated"] = stamp
                if changes["status"] in STEP_DONE:
                    step["completedTime"] = stamp
                else:
                    step.pop("completedTime", None)
            _advance_v1(execution, stamp)
            self.store.put_document(conn, "execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, step

    def getClosingReasonExecution(self, request: Request, execution_id: str) -> Response:
        execution = self.store.get_document("execution", execution_id)
        if execution is None:
            raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
        return 200, {"reasons": execution.get("configuredClosingReasonSnapshot") or []}

    def _reflect_execution(self, conn: Any, execution: Mapping[str, Any], contexts: Iterable[Mapping[str, Any]],
                           *, removed: bool = False) -> None:
        """Mirror the execution into each context entity's `workflows` attribute, and apply updateEntityAttributes."""
        v2 = "flow_template_id" in execution
        definition_id = execution.get("flow_template_id") if v2 else execution.get("definitionId")
        current = _current_v2(execution) if v2 else _current_v1(execution)
        summary = {
            "id": execution["id"],
            "definition_id": definition_id,
            "name": execution.get("name"),
            "status": execution.get("status"),
            "task_id": current[1]["id"] if current[1] else None,
            "task_name": current[1]["name"] if current[1] else None,
            "phase_id": current[0]["id"] if current[0] else None,
            "phase_name": current[0]["name"] if current[0] else None,
            "assignees": list((current[1] or {}).get("assigned_to" if v2 else "assignedTo") or []),
            "duedate": (current[1] or {}).get("due_date" if v2 else "dueDate"),
        }
        for ctx in contexts:
            entity_id = str(ctx.get("id") or ctx.get("entity_id"))
            entity = self.store.get_entity(entity_id)
            if entity is None:
                continue
            workflows = entity.get("workflows") if isinstance(entity.get("workflows"), dict) else {}
            runs = [
                run for run in workflows.get(definition_id, []) if isinstance(run, Mapping) and run.get("id") != execution["id"]
            ]
            if not removed:
                runs.append(summary)
            workflows = {key: value for key, value in workflows.items() if key != "primary"}
            if runs:
                workflows[definition_id] = runs
            else:
                workflows.pop(definition_id, None)
            primary = next((run for runs_ in workflows.values() for run in runs_ if run.get("status") == "STARTED"), None)
            if primary:
                workflows["primary"] = primary
            entity["workflows"] = workflows
            for mapping in execution.get("updateEntityAttributes") or []:
                target = mapping.get("target") or {}
                if target.get("entitySchema") != entity["_schema"] or not target.get("entityAttribute"):
                    continue
                value = {"workflow_status": execution.get("status"),
                         "current_section": current[0]["name"] if current[0] else None,
                         "current_step": current[1]["name"] if current[1] else None}.get(mapping.get("source"))
                entity[target["entityAttribute"]] = value
            entity["_updated_at"] = later_than(entity["_updated_at"])
            self.store.put_entity(conn, entity)

    def startFlowExecution(self, request: Request) -> Response:
        data = json_object(request.json(), style="workflow")
        template_id = data.get("flow_template_id")
        if not isinstance(template_id, str) or not template_id:
            raise HTTPError(400, "flow_template_id is required", style="workflow")
        contexts = data.get("contexts")
        if not isinstance(contexts, list) or not contexts:
            raise HTTPError(400, "contexts must hold at least one entity", style="workflow")
        template = self.store.get_document("flow_template", template_id)
        if template is None:
            raise HTTPError(400, f"Invalid flow_template_id: template {template_id} not found", style="workflow")
        for ctx in contexts:
            if not isinstance(ctx, Mapping) or not ctx.get("entity_id") or not ctx.get("entity_schema"):
                raise HTTPError(400, "each context needs entity_id and entity_schema", style="workflow")
            entity = self.store.get_entity(str(ctx["entity_id"]))
            if entity is None or entity.get("_deleted_at"):
                raise HTTPError(400, f"Invalid entity context: {ctx['entity_id']} not found", style="workflow")
        trigger = data.get("trigger") if isinstance(data.get("trigger"), Mapping) else {"type": "MANUAL"}
        execution = _flow_execution_from_template(template, contexts, trigger, self.store.org_id)
        execution["closing_reason"] = {"configured_reasons": self._closing_reasons(template.get("closing_reasons"))}
        with self.store.write() as conn:
            self.store.put_document(conn, "flow_execution", execution["id"], execution,
                                    links=[(str(c["entity_id"]), str(c["entity_schema"])) for c in contexts])
            self._reflect_execution(conn, execution, contexts)
        return 201, execution

    def getFlowExecution(self, request: Request, execution_id: str) -> Response:
        execution = self.store.get_document("flow_execution", execution_id)
        if execution is None:
            raise HTTPError(404, "Not Found", style="workflow")
        return 200, execution

    def patchFlowExecution(self, request: Request, execution_id: str) -> Response:
        changes = json_object(request.json(), style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("flow_execution", execution_id)
            if execution is None:
                raise HTTPError(404, "Not Found", style="workflow")
            if "status" in changes and changes["status"] not in ("STARTED", "DONE", "CLOSED"):
                raise HTTPError(400, "status must be STARTED, DONE or CLOSED", style="workflow")
            closing = changes.get("closing_reason")
            if closing is not None:
                offered = {r["id"] for r in (execution.get("closing_reason") or {}).get("configured_reasons") or []}
                selected = closing.get("selected_reasons") if isinstance(closing, Mapping) else None
                if not isinstance(selected, list) or any(
                        not isinstance(r, Mapping) or r.get("id") not in offered or not r.get("title") for r in selected):
                    raise HTTPError(400, "closing_reason.selected_reasons must name configured reasons", style="workflow")
                changes = {**changes, "closing_reason": {**(execution.get("closing_reason") or {}), **closing}}
            execution.update(
                {k: v for k, v in changes.items() if k in ("status", "assigned_to", "closing_reason", "due_date", "contexts")}
            )
            execution["updated_at"] = now_ms()
            if changes.get("status") == "CLOSED":
                execution.setdefault("analytics", {})["closed_at"] = execution["updated_at"]
            self.store.put_document(conn, "flow_execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, execution

    def patchTask(self, request: Request, execution_id: str, task_id: str) -> Response:
        changes = json_object(request.json(), style="workflow")
        if "status" in changes and changes["status"] not in STEP_STATUSES:
            raise HTTPError(400, f"Invalid task status: {changes['status']!r}", style="workflow")
        if "assigned_to" in changes and not isinstance(changes["assigned_to"], list):
            raise HTTPError(400, "assigned_to must be a list", style="workflow")
        if "due_date" in changes and not isinstance(changes["due_date"], str):
            raise HTTPError(400, "due_date must be a string", style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("flow_execution", execution_id)
            if execution is None:
                raise HTTPError(404, "Not Found", style="workflow")
            tasks = execution.get("tasks", [])
            task = next((t for t in tasks if t["id"] == task_id), None)
            if task is None:
                raise HTTPError(404, "Not Found", style="workflow")
            stamp = now_ms()
            if "status" in changes and changes["status"] != task.get("status"):
                if execution.get("status") != "STARTED":
                    raise HTTPError(400, f"Flow execution is {execution.get('status')}", style="workflow")
                enabled = changes.get("enabled", task.get("enabled", True))
                if enabled is False:
                    raise HTTPError(400, "Task is disabled; enable it before changing its status", style="workflow")
                if task.get("status") in STEP_DONE and changes["status"] not in STEP_DONE:
                    if not changes.get("revert_execution"):
                        raise HTTPError(400, f"Invalid status transition from {task.get('status')} to {changes['status']}",
                                        style="workflow")
                    for later in tasks[tasks.index(task) + 1:]:
                        later["status"] = "PENDING"
                        (later.get("analytics") or {}).pop("completed_at", None)
                task["status"] = changes["status"]
                if changes["status"] in STEP_DONE:
                    task.setdefault("analytics", {})["completed_at"] = stamp
                else:
                    (task.get("analytics") or {}).pop("completed_at", None)
            for key in ("assigned_to", "enabled", "name"):
                if key in changes:
                    task[key] = changes[key]
            if "due_date" in changes:
                if changes["due_date"]:
                    task["due_date"] = changes["due_date"]
                else:
                    task.pop("due_date", None)
            task["updated_at"] = stamp
            remaining = [t for t in tasks if t.get("status") not in STEP_DONE]
            execution["crt_tasks"] = [{"id": remaining[0]["id"], "crt_since": stamp}] if remaining else []
            if not remaining:
                execution["status"] = "DONE"
                execution.setdefault("analytics", {})["completed_at"] = stamp
            elif execution.get("status") == "DONE":
                execution["status"] = "STARTED"
                (execution.get("analytics") or {}).pop("completed_at", None)
            execution["updated_at"] = stamp
            self.store.put_document(conn, "flow_execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, task

    def patchPhase(self, request: Request, execution_id: str, phase_id: str) -> Response:
        changes = json_object(request.json(), style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("flow_execution", execution_id)
            if execution is None:
                raise HTTPError(404, "Not Found", style="workflow")
            phase = next((p for p in execution.get("phases", []) if p["id"] == phase_id), None)
            if phase is None:
                raise HTTPError(404, "Not Found", style="workflow")
            phase.update({k: v for k, v in changes.items() if k in ("name", "due_date", "due_date_config", "assigned_to")})
            execution["updated_at"] = phase["updated_at"] = now_ms()
            self.store.put_document(conn, "flow_execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, phase

    def searchFlowExecutions(self, request: Request) -> Response:
        data = json_object(request.json(), style="workflow")
        if not data.get("entity_id") or not data.get("entity_schema"):
            raise HTTPError(400, "entity_id and entity_schema are required", style="workflow")
        return 200, {"results": self.store.list_documents("flow_execution", entity_id=str(data["entity_id"]),
                                                          schema=str(data["entity_schema"]))}


def _v1_steps(execution: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for item in execution.get("flow", []):
        if item.get("type") == "SECTION":
            steps.extend(item.get("steps", []))
        else:
            steps.append(item)
    return steps


def _current_v1(execution: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    for item in execution.get("flow", []):
        if item.get("type") == "SECTION":
            for step in item.get("steps", []):
                if step.get("status") not in STEP_DONE:
                    return item, step
        elif item.get("status") not in STEP_DONE:
            return None, item
    return None, None


def _current_v2(execution: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    task = next((t for t in execution.get("tasks", []) if t.get("status") not in STEP_DONE), None)
    if task is None:
        return None, None
    phase = next((p for p in execution.get("phases", []) if p.get("id") == task.get("phase_id")), None)
    return phase, task


def _advance_v1(execution: dict[str, Any], stamp: str) -> None:
    """Recompute section states and the execution status after a step changed."""
    for item in execution.get("flow", []):
        if item.get("type") != "SECTION":
            continue
        statuses = [step.get("status") for step in item.get("steps", [])]
        if statuses and all(status in STEP_DONE for status in statuses):
            item["status"] = "COMPLETED"
            item.setdefault("completedTime", stamp)
        elif any(status in STEP_DONE or status == "IN_PROGRESS" for status in statuses):
            item["status"] = "IN_PROGRESS"
            item.setdefault("startedTime", stamp)
    section, step = _current_v1(execution)
    if step is not None:
        execution["nextOpenStep"] = {"id": step["id"]}
    if step is None:
        execution.pop("nextOpenStep", None)
        execution["status"] = "DONE"
        execution["completedTime"] = stamp
    execution["lastUpdateTime"] = stamp


SLIM_KEYS = ("id", "definitionId", "name", "type")


def _slim(execution: Mapping[str, Any]) -> dict[str, Any]:
    """An execution as getExecutions lists it (the spec's WorkflowExecutionSlim): its sections and steps with their
    ids and names only, as in the spec's example; getExecution answers the whole execution."""
    flow = []
    for item in execution.get("flow", []):
        slim = {key: item[key] for key in SLIM_KEYS if key in item}
        if item.get("type") == "SECTION":
            slim["steps"] = [{key: step[key] for key in SLIM_KEYS if key in step} for step in item.get("steps", [])]
        flow.append(slim)
    return {**execution, "flow": flow}


def _execution_from_definition(definition: Mapping[str, Any], contexts: list[Any], trigger: str, org_id: str) -> dict[str, Any]:
    stamp = now_ms()
    execution_id = short_id(11)
    flow = []
    for item in copy.deepcopy(definition.get("flow", [])):
        if item.get("type") == "SECTION":
            section_id = short_id(8)
            steps = [
                {**{k: v for k, v in step.items() if k not in ("order",)}, "id": short_id(8), "definitionId": step.get("id", ""),
                 "type": "STEP", "status": "PENDING", "sectionId": section_id, "executionId": execution_id, "enabled": True,
                 "created": stamp, "lastUpdated": stamp, "executionType": step.get("executionType", "MANUAL")}
                for step in item.get("steps", [])
            ]
            flow.append({"id": section_id, "definitionId": item.get("id", ""), "name": item.get("name", ""), "type": "SECTION",
                         "status": "OPEN", "steps": steps})
        else:
            flow.append({**item, "id": short_id(8), "definitionId": item.get("id", ""), "type": "STEP", "status": "PENDING",
                         "executionId": execution_id, "enabled": True, "created": stamp, "lastUpdated": stamp})
    if flow and flow[0]["type"] == "SECTION":
        flow[0]["status"] = "IN_PROGRESS"
        flow[0]["startedTime"] = stamp
    execution = {
        "id": execution_id, "definitionId": definition["id"], "orgId": org_id, "name": definition.get("name", ""),
        "status": "STARTED", "trigger": trigger, "creationTime": stamp, "lastUpdateTime": stamp,
        "assignedTo": list(definition.get("assignedTo", [])),
        "contexts": [{"id": str(c["id"]), "schema": str(c["schema"]), "title": str(c.get("title", ""))} for c in contexts],
        "flow": flow, "updateEntityAttributes": copy.deepcopy(definition.get("updateEntityAttributes", [])),
        "enableECPWorkflow": bool(definition.get("enableECPWorkflow", False)),
    }
    _, step = _current_v1(execution)
    if step:
        execution["nextOpenStep"] = {"id": step["id"]}
    return execution


def _flow_execution_from_template(
    template: Mapping[str, Any], contexts: list[Any], trigger: Mapping[str, Any], org_id: str
) -> dict[str, Any]:
    stamp = now_ms()
    phase_ids = {phase["id"]: short_id(8) for phase in template.get("phases", [])}
    task_ids = {task["id"]: short_id(8) for task in template.get("tasks", [])}
    phases = [{"id": phase_ids[p["id"]], "template_id": p["id"], "name": p.get("name", ""), "status": "OPEN", "updated_at": stamp}
              for p in template.get("phases", [])]
    tasks = [
        {
            "id": task_ids[t["id"]],
            "template_id": t["id"],
            "name": t.get("name", ""),
            "task_type": t.get("task_type", "MANUAL"),
            "status": "PENDING",
            "analytics": {},
            "enabled": True,
            "created_at": stamp,
            "updated_at": stamp,
            **({"phase_id": phase_ids[t["phase_id"]]} if t.get("phase_id") in phase_ids else {}),
        }
        for t in template.get("tasks", [])
    ]
    edges = [
        {
            "id": e["id"],
            "from_id": task_ids.get(e["from_id"], e["from_id"]),
            "to_id": task_ids.get(e.get("to_id"), e.get("to_id")),
        }
        for e in template.get("edges", [])
        if e.get("to_id")
    ]
    return {
        "id": short_id(12),
        "flow_template_id": template["id"],
        "org_id": org_id,
        "name": template.get("name", ""),
        "created_at": stamp,
        "updated_at": stamp,
        "status": "STARTED",
        "trigger": {"type": trigger.get("type", "MANUAL")},
        "analytics": {"started_at": stamp},
        "contexts": [
            {
                "entity_id": str(c["entity_id"]),
                "entity_schema": str(c["entity_schema"]),
                "is_primary": bool(c.get("is_primary", False)),
            }
            for c in contexts
        ],
        "crt_tasks": [{"id": tasks[0]["id"], "crt_since": stamp}] if tasks else [],
        "phases": phases,
        "tasks": tasks,
        "edges": edges,
    }
