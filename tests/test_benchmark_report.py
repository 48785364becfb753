"""benchmarks/report.py: one module at a time merges into results.json; the load statement is
computed from the recorded loads, never a blanket claim."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(module: str, name: str, value: float, **info) -> dict:
    return {"name": name, "fullname": f"benchmarks/{module}::{name}", "stats": {"median": 0.001},
            "extra_info": {"scenario": name, "value": value, **info}}


def test_a_module_rerun_replaces_only_its_own_rows(report) -> None:
    previous = {"benchmarks": [bench("test_core.py", "a", 1), bench("test_covalent.py", "b", 2)],
                "datetime": "old",
                "lambdarun_run": {"modules": {"test_core.py": {"elapsed_s": 10}, "test_covalent.py": {"elapsed_s": 20}},
                                  "failed": ["benchmarks.test_covalent::b_old", "benchmarks.test_core::x"]}}
    fresh = {"benchmarks": [bench("test_covalent.py", "b", 3)], "datetime": "new",
             "lambdarun_run": {"modules": {"test_covalent.py": {"elapsed_s": 5}}, "failed": []}}
    merged = report.merge(previous, fresh, ["test_covalent.py"])
    values = {b["name"]: b["extra_info"]["value"] for b in merged["benchmarks"]}
    assert values == {"a": 1, "b": 3}
    assert merged["lambdarun_run"]["modules"]["test_covalent.py"]["elapsed_s"] == 5
    assert merged["lambdarun_run"]["modules"]["test_core.py"]["elapsed_s"] == 10
    assert merged["lambdarun_run"]["failed"] == ["benchmarks.test_core::x"]
    assert merged["datetime"] == "new"


def test_only_selects_modules_by_name(report) -> None:
    names = [m.name for m in report.modules(["covalent"])]
    assert "test_covalent.py" in names and "test_core.py" not in names
    with pytest.raises(SystemExit, match="no benchmark module"):
        report.modules(["no-such-module"])


def test_load_statement_is_computed(report) -> None:
    quiet = report.rows_from({"benchmarks": [bench("test_core.py", "a", 1, load_before=[0.5, 0, 0],
                                                   load_after=[0.7, 0, 0])]})
    busy = report.rows_from({"benchmarks": [bench("test_core.py", "a", 1, load_before=[9.0, 0, 0],
                                                  load_after=[0.7, 0, 0])]})
    assert "stayed at or below the 2 cores" in report.load_summary(quiet, {}, cores=2)
    text = report.load_summary(busy, {}, cores=2)
    assert "1 of 1 rows ran with a 1-minute load average above the 2 cores" in text and "`test_core.py`" in text
    assert "conservative" not in text
    assert "conservative" not in report.load_summary(report.rows_from({"benchmarks": [bench("t.py", "a", 1)]}), {})


def test_temporal_reference_configured_like_ours_is_its_own_row(report) -> None:
    def t(name, done):
        return {"name": name, "fullname": f"benchmarks/test_temporal.py::{name}", "stats": {"median": 1.0},
                "extra_info": {"queued": 200, "lambda_timeout_s": 10.0, "completed_per_round": done}}

    rows = report.rows_from({"benchmarks": [t("test_drain_queued_workflows[ours]", [200, 199]),
                                            t("test_drain_queued_workflows[reference]", [30, 31]),
                                            t("test_drain_queued_workflows[reference-like-ours]", [150, 160])]})
    assert [(r["value"], r["reference"]) for r in rows] == [(199, 30), (199, 150)]
    assert "configured like ours" in rows[1]["scenario"]


def test_tree_memory_counts_child_processes() -> None:
    """benchmarks/conftest.py's TreeMemory: the peak PSS of this process and its children,
    sampled from outside; a child holding 64 MiB shows up in it."""
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("bench_conftest", ROOT / "benchmarks" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    hold = "import sys; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); sys.stdin.read()"
    with conftest.TreeMemory() as baseline:
        pass
    child = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with conftest.TreeMemory() as m:
            assert child.stdout.readline().strip() == "ready"
        # the last sample is taken on exit, while the child still holds its memory
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert m.processes >= 2
    assert m.peak_mib >= baseline.peak_mib + 60
