"""Tools for testing lambdarun and code built on it (fault injection; more to come)."""

from lambdarun.testing.proxy import DropRule, FaultProxy

__all__ = ["FaultProxy", "DropRule"]
