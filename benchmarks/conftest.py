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
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

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


class TreeMemory:
    """Peak memory of this process's whole tree (sum of PSS over this process and all its
    descendants), sampled every ``interval`` s by ``_tree_memory.py`` in a process of its
    own. ``with TreeMemory() as m: ...`` then ``m.peak_mib``; None where psutil is missing."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_mib: float | None = None
        self.processes: int | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> TreeMemory:
        if importlib.util.find_spec("psutil") is None:
            return self
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "_tree_memory.py"), str(os.getpid()), str(self.interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # "ready": the first sample is being taken
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        out, _ = self._proc.communicate(timeout=120)
        result = json.loads(out.strip().splitlines()[-1])
        self.peak_mib, self.processes = result["peak_mib"], result["peak_processes"]


@pytest.fixture
def tree_memory():
    """``tree_memory()``: a :class:`TreeMemory` sampler to wrap one phase (e.g. a reference's
    run) in, so both sides of a row are measured the same way."""
    return TreeMemory


@pytest.fixture
def record_rss(benchmark):
    """Store the peak memory of the scenario in the benchmark's ``extra_info``:
    ``peak_rss_mib`` is the peak sum of PSS over this process's whole tree (the caller, the
    local Lambda service and moto's threads inside it, every Lambda environment, any child
    process: :class:`TreeMemory`), the one definition used for lambdarun and the references.
    A benchmark that runs a reference in its own phase measures it with ``tree_memory()`` and
    stores ``reference_peak_rss_mib``. ``caller_peak_rss_mib`` is this process's own peak RSS
    (Linux VmHWM, reset when the scenario starts)."""
    per_scenario = reset_peak_rss()
    with TreeMemory() as tree:
        yield
    benchmark.extra_info.setdefault("peak_rss_mib", tree.peak_mib)
    benchmark.extra_info["peak_rss_scope"] = "process tree PSS, sampled every 0.1 s"
    benchmark.extra_info["tree_processes_at_peak"] = tree.processes
    benchmark.extra_info["caller_peak_rss_mib"] = round(peak_rss_mib(), 1)
    benchmark.extra_info.setdefault("caller_rss_scope", "scenario" if per_scenario else "process lifetime")


@pytest.fixture(autouse=True)
def record_load(request: pytest.FixtureRequest):
    """Every benchmark records the load average (1/5/15 min) before and after it ran."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    before = _load()
    yield
    benchmark.extra_info.setdefault("load_before", before)
    benchmark.extra_info.setdefault("load_after", _load())


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
