"""The layers hold: every import of the project (also inside functions) is parsed and checked.

Rules (docs/architecture.md): no import cycle except through a tasks module; httpx only under
`integrations/`; the gateway (`integrations/epilot`) imports neither `projects`, `django.db` nor the
sandbox; no hand-written module over 600 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "integrations", "projects", "tools", "bench")
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if "migrations" in relative.parts:
                continue
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module name an import statement in `path` names, wherever the statement stands."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _project_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, imported in IMPORTS.items():
        graph[name] = {target for target in map(_project_module, imported) if target and target != name}
        # `from package import submodule` names the submodule; the package itself is not an edge then.
        graph[name] -= {target for target in graph[name] if any(other.startswith(target + ".") and other in graph[name]
                                                                 for other in graph[name])}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_except_through_a_tasks_module() -> None:
    graph = _graph()
    without_tasks = {name: {target for target in targets if not target.endswith(".tasks")}
                     for name, targets in graph.items() if not name.endswith(".tasks")}
    assert _cycles(without_tasks) == []


def test_httpx_only_under_integrations() -> None:
    users = [name for name, imported in IMPORTS.items() if any(i == "httpx" or i.startswith("httpx.") for i in imported)]
    assert users and all(name.startswith("integrations.") for name in users), users


@pytest.mark.parametrize("forbidden", ["projects", "django.db", "integrations.epilot_sandbox", "integrations.connection"])
def test_the_gateway_depends_on_nothing_of_ours(forbidden: str) -> None:
    gateway = {name: imported for name, imported in IMPORTS.items() if name == "integrations.epilot" or
               name.startswith("integrations.epilot.")}
    offenders = [name for name, imported in gateway.items()
                 if any(i == forbidden or i.startswith(forbidden + ".") for i in imported)]
    assert offenders == []


def test_services_do_not_import_adapters() -> None:
    adapters = ("projects.admin", "projects.api", "projects.management", "projects.views", "projects.forms")
    lower = ("projects.services", "projects.mirror", "projects.selectors", "projects.models")
    offenders = {name: sorted(i for i in imported if i.startswith(adapters))
                 for name, imported in IMPORTS.items() if name.startswith(lower)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_mirror_engine_does_not_depend_on_the_back_office() -> None:
    """The back-office domain listens to the mirror's change event; the mirror never calls into it."""
    offenders = {name: sorted(i for i in imported if i.startswith(("projects.services", "projects.tasks", "projects.selectors")))
                 for name, imported in IMPORTS.items() if name.startswith("projects.mirror")}
    assert {name: found for name, found in offenders.items() if found} == {}
    assert any(name.startswith("projects.mirror.") for name in IMPORTS)  # the engine is where this test looks


def test_no_module_is_longer_than_600_lines() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
