"""Tools for testing lambdarun and code built on it.

* :mod:`lambdarun.testing.conformance`: the public conformance suites a storage, target or
  backend plugin runs against itself (``StorageConformance``, ``TargetConformance``,
  ``BackendConformance``; imports pytest, so it is not imported here),
* :mod:`lambdarun.testing.tasks`: the functions those suites run remotely,
* :mod:`lambdarun.testing.wire`: forged, unsigned and replayed envelopes to attack a surface,
* :class:`FaultProxy`: a loopback TCP proxy adding latency and dropping connections,
* :func:`wait_for`: poll a condition until it holds (instead of sleeping a fixed time).
* :class:`LatencyLambda`: a Lambda-API endpoint in its own process that answers ``Invoke``
  after a configured duration, with Lambda's concurrency limit and 429, running no code
  (:mod:`lambdarun.testing.latency`; for measuring callers, ``benchmarks/test_latency_endpoint.py``).
"""

from lambdarun.testing.latency import LatencyLambda
from lambdarun.testing.proxy import DropRule, FaultProxy
from lambdarun.testing.waiting import wait_for

__all__ = ["FaultProxy", "DropRule", "LatencyLambda", "wait_for"]
