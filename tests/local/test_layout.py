"""The layout of ``lambdarun.local``: modules by responsibility, none over ~500 lines, no
import cycles among them (type-only imports included), and the public names other code
imports still where they were before the split (issue 18)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lambdarun.local

PACKAGE = Path(lambdarun.local.__file__).parent
#: "~500 lines": a module past this needs splitting (or a stated reason and an entry here)
LINE_LIMIT = 520
LONGER_WITH_A_REASON: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def _local_imports(path: Path) -> set[str]:
    """Modules of this package ``path`` imports at module level, ``if TYPE_CHECKING:`` blocks
    included (function-level imports are deliberate late binding and not counted)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "lambdarun.local":
                    found.update(alias.name for alias in node.names)
                elif node.module.startswith("lambdarun.local."):
                    found.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[2] for a in node.names
                             if a.name.startswith("lambdarun.local."))

    visit(ast.parse(path.read_text()).body)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                walk(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_no_import_cycles_among_the_local_modules() -> None:
    modules = _modules()
    graph = {name: _local_imports(path) & set(modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_about_500_lines(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= LINE_LIMIT or name in LONGER_WITH_A_REASON, (
        f"lambdarun/local/{name}.py has {lines} lines: split it by responsibility")


def test_the_service_is_a_small_facade() -> None:
    assert len((PACKAGE / "service.py").read_text().splitlines()) <= 250


@pytest.mark.parametrize(("module", "names"), [
    ("lambdarun.local", ["Endpoints", "LOCAL_CODE_BUCKETS", "LambdaService", "LocalStack",
                         "LocalStackUnavailableError", "ServiceOptions", "StackCredentials",
                         "StackInfo", "default_state_dir", "read_stack_info"]),
    ("lambdarun.local.service", ["ACCOUNT_ID", "ASYNC_REQUEST_LIMIT", "LOCAL_CODE_BUCKETS",
                                 "LOCAL_ENDPOINTS_VAR", "LambdaService", "SYNC_REQUEST_LIMIT",
                                 "SYNC_RESPONSE_LIMIT", "ServiceOptions", "UNZIPPED_CODE_LIMIT"]),
    ("lambdarun.local.persist", ["EVENT_FILE_LIMIT", "EventStore", "FunctionStore",
                                 "JournalMiddleware", "MotoJournal", "PersistError", "ServiceState",
                                 "StateInUseError", "StoredEvent", "compact_entries",
                                 "forget_saved_state", "is_write", "open_trusted", "quarantine",
                                 "read_trusted", "remove_orphan_code", "saved_state_summary",
                                 "secure_dir", "sweep", "write_private"]),
    ("lambdarun.local.stack", ["Endpoints", "LocalStack", "LocalStackUnavailableError",
                               "NoDelayQuietHandler", "StackInfo", "default_state_dir",
                               "pid_running", "read_stack_info", "shared_credentials"]),
    ("lambdarun.local.auth", ["AuthFailure", "BROWSER_HEADERS", "CREDENTIALS_FILE",
                              "MAX_SKEW_SECONDS", "MotoFront", "SigV4Verifier", "StackCredentials",
                              "browser_marker", "content_length", "peer_held_by", "signed_request"]),
])
def test_names_imported_from_before_the_split_are_still_there(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []
    declared = getattr(mod, "__all__", None)
    if declared is not None:
        assert [n for n in names if n not in declared] == []
