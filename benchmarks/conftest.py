"""Benchmark support.

The normal test suite runs every benchmark once, with tiny sizes and timing disabled (smoke
mode: ``--benchmark-disable`` is in the project's pytest options), so benchmarks never rot.
The full run measures for real:

    python -m pytest benchmarks --full-bench --benchmark-enable --benchmark-json=benchmarks/results.json

(`python benchmarks/report.py` does that and writes RESULTS.md and the charts.)
"""

from __future__ import annotations

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


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident set size of this process (or of its waited-for children), in MiB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return usage.ru_maxrss * scale / (1024 * 1024)


@pytest.fixture
def record_rss(benchmark):
    """Store this process's peak RSS in the benchmark's extra_info after the scenario."""
    yield
    benchmark.extra_info["peak_rss_mib"] = round(peak_rss_mib(), 1)
