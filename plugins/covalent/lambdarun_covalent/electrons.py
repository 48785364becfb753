"""What the executor reads from the callable Covalent hands it.

Covalent's dispatcher calls ``executor.run(partial(wrapper_fn, electron, call_before,
call_after), args, kwargs, task_metadata)``, where ``electron`` is a ``TransportableObject``
(its header carries the electron's name) and ``call_before`` holds the electron's deps as
``(fn, args, kwargs, retval_key)`` tuples of ``TransportableObject``. ``DepsPip`` is the
tuple whose function is Covalent's ``apply_pip_deps``; it is taken off here and installed
as a layer (:mod:`lambdarun_covalent.layers`) instead of running ``pip`` on Lambda.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs

from lambdarun_covalent.layers import requirement_set

__all__ = ["ElectronTask", "electron_task"]

#: the name of Covalent's DepsPip function (``covalent._workflow.depspip.apply_pip_deps``)
_PIP_DEPS_FUNCTION = "apply_pip_deps"


@attrs.frozen
class ElectronTask:
    #: the callable to ship (Covalent's, without its DepsPip step)
    function: Callable[..., Any]
    #: the electron's name, or the callable's
    name: str
    #: the DepsPip requirement set, normalized ("" when none)
    requirements: tuple[str, ...] = ()
    #: whether the callable is Covalent's electron wrapper (it needs Covalent on Lambda)
    covalent_wrapper: bool = False


def _attrs_name(transportable: Any) -> str:
    try:
        return str(transportable.attrs.get("name") or "")
    except Exception:
        return ""


def electron_task(function: Callable[..., Any]) -> ElectronTask:
    """Read the electron's name and DepsPip requirements off Covalent's callable."""
    if not (
        isinstance(function, functools.partial)
        and getattr(function.func, "__name__", "") == "wrapper_fn"
        and str(getattr(function.func, "__module__", "")).startswith("covalent.")
        and len(function.args) == 3
    ):
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
        return ElectronTask(function=function, name=str(name))
    electron, call_before, call_after = function.args
    requirements: list[str] = []
    kept = []
    for step in call_before or []:
        if isinstance(step, (tuple, list)) and step and _attrs_name(step[0]) == _PIP_DEPS_FUNCTION:
            args = step[1].get_deserialized() or []
            kwargs = step[2].get_deserialized() or {}
            packages = kwargs.get("pkgs", args[0] if len(args) > 0 else [])
            content = kwargs.get("requirements_content", args[1] if len(args) > 1 else "")
            requirements += requirement_set(packages, content)
        else:
            kept.append(step)
    name = _attrs_name(electron) or "electron"
    if requirements:
        function = functools.partial(function.func, electron, kept, call_after, **function.keywords)
    return ElectronTask(
        function=function, name=name, requirements=tuple(sorted(set(requirements))), covalent_wrapper=True
    )
