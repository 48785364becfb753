"""The test runners' errors (AWS testing package's ``exceptions`` names)."""

from __future__ import annotations


class DurableFunctionsTestError(Exception):
    """A test runner could not do what was asked (AWS testing package's name)."""


class RunnerClosedError(DurableFunctionsTestError):
    """The runner was closed while an execution still waited (for a callback, ...)."""
