"""Regenerate docs/hooks.md from lambdarun/hookspecs.py: python docs/make_hooks_md.py"""

from __future__ import annotations

import inspect
from pathlib import Path

import lambdarun.hookspecs as hookspecs

HEADER = """# lambdarun hook reference

Every hook lambdarun calls, with its exact signature, in the order of `lambdarun/hookspecs.py`.
Implement any of them in a plugin (`from lambdarun import hookimpl`) and register it through the
`lambdarun` entry-point group (see the README's *Writing a plugin*). *firstresult* hooks stop at
the first implementation that returns something other than `None`; lambdarun's own defaults are
`trylast`, so your implementation runs before them.
"""


def hook_functions():
    specs = [
        fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("lambdarun_") and inspect.isfunction(fn)
    ]
    return sorted(specs, key=lambda fn: fn.__code__.co_firstlineno)


def signature(fn) -> str:
    return f"{fn.__name__}{inspect.signature(fn)}".replace("'", "")


def render() -> str:
    parts = [HEADER]
    for fn in hook_functions():
        opts = getattr(fn, f"{hookspecs.PROJECT}_spec", {}) or {}
        kind = "*firstresult*" if opts.get("firstresult") else "*every implementation is called*"
        parts.append(f"## `{fn.__name__}`\n\n```python\n{signature(fn)}\n```\n\n{kind}\n\n{inspect.cleandoc(fn.__doc__)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    Path(__file__).with_name("hooks.md").write_text(render())
