"""Meta-tests keeping the hook surface honest (after datasette's test_plugin_hooks_are_documented)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import lambdarun.hookspecs as hookspecs

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(
    (fn for name, fn in vars(hookspecs).items() if name.startswith("lambdarun_") and inspect.isfunction(fn)),
    key=lambda fn: fn.__code__.co_firstlineno,
)


def signature(fn) -> str:
    return f"{fn.__name__}{inspect.signature(fn)}".replace("'", "")


def test_hook_families_are_all_there():
    names = {fn.__name__ for fn in SPECS}
    assert {
        "lambdarun_encode",
        "lambdarun_decode",
        "lambdarun_make_storage",
        "lambdarun_make_invoker",
        "lambdarun_make_poller",
        "lambdarun_make_checkpoint_store",
        "lambdarun_register_backends",
        "lambdarun_register_config",
    } <= names


@pytest.mark.parametrize("spec", SPECS, ids=lambda fn: fn.__name__)
def test_hook_is_documented_with_its_exact_signature(spec):
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "hooks.md").read_text()
    assert signature(spec) in docs, f"document {signature(spec)} in docs/hooks.md (python docs/make_hooks_md.py)"


@pytest.mark.parametrize("spec", SPECS, ids=lambda fn: fn.__name__)
def test_hook_has_a_full_docstring(spec):
    doc = inspect.getdoc(spec) or ""
    params = list(inspect.signature(spec).parameters)
    for param in params:
        assert f":param {param}:" in doc, f"{spec.__name__} does not document {param}"
    assert ":return:" in doc
    if getattr(spec, "lambdarun_spec", {}).get("firstresult"):
        assert "first non-None result" in doc


@pytest.mark.parametrize("spec", SPECS, ids=lambda fn: fn.__name__)
def test_hook_is_called_by_a_test(spec):
    pattern = re.compile(rf"\.hook\.{spec.__name__}\(")
    sources = [p for p in (ROOT / "tests").rglob("test_*.py")]
    sources += [p for p in (ROOT / "plugins").glob("*/tests/**/test_*.py")]
    callers = [p.name for p in sources if pattern.search(p.read_text())]
    assert callers, f"no test calls pm.hook.{spec.__name__}(...)"
