"""The plugin's modules import each other without cycles.

Every import counts: module level, inside functions and under ``TYPE_CHECKING`` (a cycle
hidden in a function or a type annotation is still a knot a reader has to untie). The
graph is read from the source with :mod:`ast`, so nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lambdarun_durable

PACKAGE = "lambdarun_durable"
ROOT = Path(lambdarun_durable.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` refers to (longest known prefix), or None if external."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                # ``from pkg import submodule`` imports the submodule
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_the_plugins_modules_and_their_imports():
    graph = import_graph()
    assert {"lambdarun_durable", "lambdarun_durable.context", "lambdarun_durable.concurrency.models"} <= set(graph)
    # a function-level import counts (the plugin loads its backend lazily)
    assert "lambdarun_durable.backend" in graph["lambdarun_durable.plugin"]


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function_or_type_checking_block(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_plugin_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles among the plugin's modules: {cycles}"


#: the engine: replay (context and its operations), state and records, stores, the service
#: and its history. It runs inside Lambda and behind a Lambda service's durable-execution API.
ENGINE = {
    "lambdarun_durable.context",
    "lambdarun_durable.execution",
    "lambdarun_durable.state",
    "lambdarun_durable.records",
    "lambdarun_durable.stores",
    "lambdarun_durable.service",
    "lambdarun_durable.history",
}
#: the driver side and the lambdarun integration, which use the engine and never the reverse
DRIVER = {
    "lambdarun_durable.orchestrator",
    "lambdarun_durable.backend",
    "lambdarun_durable.lambda_handler",
    "lambdarun_durable.plugin",
    "lambdarun_durable.cli",
    "lambdarun_durable.dashboard",
    "lambdarun_durable.testing",
    "lambdarun_durable.config",
    "lambdarun_durable.lease",
}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def _in(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def test_the_engine_does_not_depend_on_the_driver_or_the_integration():
    graph = import_graph()
    engine = [m for m in graph if _in(m, ENGINE) or m.startswith("lambdarun_durable.operations")]
    assert "lambdarun_durable.stores.sqlite" in engine and "lambdarun_durable.operations.step" in engine
    leaks = {m: sorted(d for d in _reachable(graph, m) if _in(d, DRIVER)) for m in engine}
    assert {m: d for m, d in leaks.items() if d} == {}
