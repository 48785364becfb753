"""Benchmark support.

The normal test suite runs every benchmark once, with tiny sizes and timing disabled (smoke
mode: ``--benchmark-disable`` is in the project's pytest options), so benchmarks never rot.
The full run measures for real:

    python -m pytest benchmarks --full-bench --benchmark-enable --benchmark-json=benchmarks/results.json

(`python benchmarks/report.py` does that and writes RESULTS.md and the charts.)
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full-bench",
        action="store_true",
        default=False,
        help="run benchmarks at full size (default: smoke mode, tiny sizes)",
    )


@pytest.fixture(scope="session")
def full_bench(request: pytest.FixtureRequest) -> bool:
    """True for a real measurement run, False in the test suite's smoke mode."""
    return bool(request.config.getoption("--full-bench"))


@pytest.fixture(scope="session")
def bench_size(full_bench: bool):
    """``bench_size(full, smoke)``: the size to use in this mode."""
    return lambda full, smoke: full if full_bench else smoke


def _vm_hwm_mib() -> float | None:
    """VmHWM (peak resident set size since the last reset) of this process, Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Release freed memory (``gc``, glibc ``malloc_trim``), then reset this process's peak RSS
    to its current RSS (Linux ``clear_refs``); False if unsupported."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident set size of this process (since the last :func:`reset_peak_rss`), or of
    its largest waited-for child, in MiB."""
    if not children:
        hwm = _vm_hwm_mib()
        if hwm is not None:
            return hwm
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return usage.ru_maxrss * scale / (1024 * 1024)


@pytest.fixture
def record_rss(benchmark):
    """Store the peak RSS of this (the calling) process during the scenario in the benchmark's
    ``extra_info["peak_rss_mib"]``. On Linux the peak is reset when the scenario starts, so
    it is this scenario's own peak; elsewhere it is the process's lifetime peak. It covers
    the caller and whatever runs in-process (the local Lambda service, moto's server
    threads); the Lambda environments are separate processes. A reference run in a child
    process reports its own peak as ``extra_info["reference_peak_rss_mib"]``."""
    per_scenario = reset_peak_rss()
    yield
    benchmark.extra_info["peak_rss_mib"] = round(peak_rss_mib(), 1)
    benchmark.extra_info.setdefault("peak_rss_scope", "scenario" if per_scenario else "process lifetime")


class Headline:
    """Fills ``benchmark.extra_info`` with the keys ``report.py`` reads (see its docstring)."""

    def __init__(self, benchmark) -> None:
        self.benchmark = benchmark

    def _stats(self):
        stats = getattr(self.benchmark, "stats", None)  # None when timing is disabled (smoke mode)
        return getattr(stats, "stats", None)

    def median_s(self) -> float | None:
        stats = self._stats()
        return stats.median if stats is not None else None

    def mean_s(self) -> float | None:
        stats = self._stats()
        return stats.mean if stats is not None else None

    @staticmethod
    def _row(scenario: str, value, unit: str, reference, reference_name, target, target_op, note) -> dict:
        row = {"scenario": scenario, "unit": unit, "target_op": target_op}
        for key, val in (("value", value), ("reference", reference), ("reference_name", reference_name),
                         ("target", target), ("note", note)):
            if val is not None:
                row[key] = round(val, 4) if isinstance(val, float) else val
        return row

    def set(self, scenario: str, value: float | None = None, unit: str = "ms", *, reference: float | None = None,
            reference_name: str | None = None, target: float | None = None, target_op: str = "<=",
            note: str | None = None, **more) -> None:
        """The benchmark's headline row; ``value`` defaults to the median time in ms."""
        self.benchmark.extra_info.update(
            self._row(scenario, value, unit, reference, reference_name, target, target_op, note))
        self.benchmark.extra_info.update(more)

    def also(self, scenario: str, value: float | None, unit: str = "ms", *, reference: float | None = None,
             reference_name: str | None = None, target: float | None = None, target_op: str = "<=",
             note: str | None = None) -> None:
        """A further row measured by the same benchmark (``extra_info["also"]``)."""
        self.benchmark.extra_info.setdefault("also", []).append(
            self._row(scenario, value, unit, reference, reference_name, target, target_op, note))


@pytest.fixture
def headline(benchmark) -> Headline:
    """``headline.set(scenario, value, unit, reference=..., target=...)`` for report.py."""
    return Headline(benchmark)
