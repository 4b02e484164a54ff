"""The import direction, read from the source: every import of every module (top-level, under
`if TYPE_CHECKING:`, inside functions), parsed with `ast`, checked against the layering the
package docstrings state."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"daemon": "quotapilot.daemon", "forecasting": "quotapilot.forecasting", "alerts": "quotapilot.alerts"}


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    """The imported module (for `from pkg import name`: `pkg.name` when that is a module, else `pkg`)."""
    line: int


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if modules()[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    tree = ast.parse(modules()[module].read_text(), filename=str(modules()[module]))
    found: list[Import] = []
    for node in ast.walk(tree):  # every node: TYPE_CHECKING blocks and function bodies included
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.append(Import(candidate if candidate in modules() else source, node.lineno))
    return tuple(found)


def names_used(module: str) -> set[str]:
    tree = ast.parse(modules()[module].read_text())
    return ({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)})


def internal_graph() -> dict[str, set[str]]:
    return {module: {i.module for i in imports_of(module) if i.module in modules() and i.module != module}
            for module in modules()}


def strongly_connected(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iteratively (the graph has a few hundred nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                yield sorted(component)


def importers(prefix: str) -> dict[str, list[int]]:
    """Modules importing `prefix` (or a submodule of it), with the lines."""
    out: dict[str, list[int]] = {}
    for module in modules():
        lines = [i.line for i in imports_of(module) if i.module == prefix or i.module.startswith(prefix + ".")]
        if lines:
            out[module] = lines
    return out


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class TestTheParserSeesEveryImport:
    """The checks below are only as good as the graph: it must see every kind of import."""

    def test_type_checking_function_local_and_relative_imports_are_found(self, tmp_path: Path) -> None:
        assert "quotapilot.daemon.runtime.daemon" in modules()
        assert "quotapilot.alerts.sinks" in modules()
        # demo.py imports the daemon inside a function and CycleContext under TYPE_CHECKING
        demo = {i.module for i in imports_of("quotapilot.daemon.commands.demo")}
        assert {"quotapilot.daemon.runtime.daemon", "quotapilot.daemon.runtime.cycle"} <= demo
        assert "vastpy" in {i.module for i in imports_of("quotapilot.daemon.vms.transport")}

    def test_a_cycle_is_found(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert sorted(c for c in strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]


class TestImportDirection:
    def test_no_import_cycle_even_under_type_checking(self) -> None:
        cycles = [c for c in strongly_connected(internal_graph()) if len(c) > 1]
        assert cycles == []

    def test_forecasting_and_alerts_never_import_the_daemon(self) -> None:
        offenders = {m: lines for m, lines in importers("quotapilot.daemon").items()
                     if within(m, "quotapilot.forecasting") or within(m, "quotapilot.alerts")}
        assert offenders == {}

    def test_only_the_vms_package_imports_vastpy(self) -> None:
        assert [m for m in importers("vastpy") if not within(m, "quotapilot.daemon.vms")] == []

    def test_only_the_alert_sinks_talk_to_brokers_and_webhooks(self) -> None:
        assert [m for m in importers("aiomqtt") if not within(m, "quotapilot.alerts.sinks")] == []
        assert [m for m in importers("aiohttp") if within(m, "quotapilot.alerts")
                and not within(m, "quotapilot.alerts.sinks")] == []
        # an HTTP client session: the webhook sinks, the pipeline SDK calling our own API, and the
        # Prometheus history client (a read-only query API, not an alert channel)
        sessions = {m for m in modules() if "ClientSession" in names_used(m)}
        assert sessions <= {"quotapilot.alerts.sinks.webhook", "quotapilot.daemon.pipeline_client",
                            "quotapilot.daemon.history.prometheus"}

    def test_stages_and_http_never_import_the_daemon_or_its_wiring(self) -> None:
        for composition_root in ("quotapilot.daemon.runtime.daemon", "quotapilot.daemon.runtime.wiring"):
            offenders = [m for m in importers(composition_root)
                         if within(m, "quotapilot.daemon.stages") or within(m, "quotapilot.daemon.http")]
            assert offenders == [], composition_root

    def test_every_package_says_what_it_owns(self) -> None:
        packages = [m for m, path in modules().items() if path.name == "__init__.py"]
        undocumented = [p for p in packages if not ast.get_docstring(ast.parse(modules()[p].read_text()))]
        assert undocumented == []
