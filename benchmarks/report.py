"""Run the full benchmark suite and write benchmarks/RESULTS.md plus PNG charts.

    python benchmarks/report.py                # full run (about 6-10 minutes on 2 cores)
    python benchmarks/report.py -- -k covalent # a subset (pytest arguments after --)
    python benchmarks/report.py --from-json benchmarks/results.json   # re-render only

Each benchmark describes its headline figure in ``benchmark.extra_info``:

``scenario``  what is measured (default: the test name)
``value``     the headline figure for lambdarun (default: the median time in ms)
``unit``      its unit (default ``ms``); units ending in ``/s`` are higher-is-better
``reference`` the same figure for the reference implementation, measured in the same run
``reference_name``  which implementation that is
``target``    the figure to reach, with ``target_op`` ``<=`` (default) or ``>=``
``note``      a sentence shown under the table (how a figure was taken, why a target is missed)
``peak_rss_mib`` / ``reference_peak_rss_mib``  peak RSS during the scenario (``record_rss``
              fixture) and of the reference's own process where it ran in one
``also``      a list of further rows (dicts with the keys above) measured by the same benchmark

The ``headline`` fixture in ``conftest.py`` fills these keys.

The table shows lambdarun, reference, the ratio lambdarun / reference, the target and whether
it was met. A missed target is shown as missed, never hidden.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _failures(junit: Path) -> list[str]:
    """Test ids that failed or errored, from a pytest JUnit XML report."""
    if not junit.exists():
        return []
    out = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return out


def run_benchmarks(json_path: Path, extra: list[str]) -> int:
    """Run each benchmark module in its own pytest process (so one module's memory or crash
    does not colour the next), then merge their pytest-benchmark JSON into ``json_path``,
    with this run's wall time, load average and failures under ``"lambdarun_run"``."""
    run: dict = {"load_start": load_average(), "modules": {}, "failed": []}
    start = time.monotonic()
    merged: dict | None = None
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for module in sorted(HERE.glob("test_*.py")):
            part, junit = Path(tmp) / f"{module.stem}.json", Path(tmp) / f"{module.stem}.xml"
            cmd = [
                sys.executable, "-m", "pytest", str(module), "--full-bench", "--benchmark-enable",
                f"--benchmark-json={part}", f"--junitxml={junit}", "-q", *extra,
            ]
            print("running:", " ".join(cmd), flush=True)
            t0 = time.monotonic()
            code = subprocess.call(cmd, cwd=ROOT)
            run["modules"][module.name] = {"elapsed_s": round(time.monotonic() - t0, 1), "exit_code": code}
            if code not in (0, 5):  # 5: nothing collected (e.g. -k deselected the module)
                status = status or code
            run["failed"] += _failures(junit)
            if part.exists():
                data = json.loads(part.read_text())
                if merged is None:
                    merged = data
                else:
                    merged["benchmarks"] += data["benchmarks"]
    run.update(elapsed_s=round(time.monotonic() - start, 1), load_end=load_average())
    merged = merged or {"benchmarks": []}
    merged["lambdarun_run"] = run
    json_path.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"benchmarks ran in {run['elapsed_s']:.0f} s; load average {run['load_start']} -> {run['load_end']}")
    return status


def _row(name: str, info: dict, median_ms: float | None, parent: dict | None = None) -> dict:
    value = info.get("value", median_ms)
    unit = info.get("unit", "ms")
    reference = info.get("reference")
    target = info.get("target")
    op = info.get("target_op", "<=")
    met = None
    if target is not None and value is not None:
        met = value <= target if op == "<=" else value >= target
    inherited = parent or {}
    return {
        "name": name,
        "scenario": info.get("scenario", name),
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_name": info.get("reference_name", ""),
        "ratio": (value / reference) if reference not in (None, 0) and value is not None else None,
        "target": f"{op} {target:g} {unit}" if target is not None else "",
        "met": met,
        "note": info.get("note", ""),
        "peak_rss_mib": info.get("peak_rss_mib", inherited.get("peak_rss_mib")),
        "reference_peak_rss_mib": info.get("reference_peak_rss_mib", inherited.get("reference_peak_rss_mib")),
        "median_ms": median_ms,
    }


TEMPORAL_REFERENCE = "temporalio.contrib.aws.lambda_worker, its defaults"


def temporal_headlines(benchmarks: list[dict]) -> dict[str, dict]:
    """Headline keys for ``test_temporal.py`` benchmarks that do not state their own yet
    (they record ours and the reference as separate benchmarks, ``[ours]`` / ``[reference]``,
    with raw figures in extra_info). Pairs them into rows with the issue's targets; the
    ``[reference]`` half then becomes the ``reference`` column. Benchmarks that set
    ``scenario`` themselves are left alone, so this retires itself once the module does."""
    by_name = {b["name"]: b.get("extra_info", {}) for b in benchmarks if "temporal" in b.get("fullname", "")}
    out: dict[str, dict] = {}

    def pair(test: str) -> tuple[dict, dict] | None:
        ours, ref = by_name.get(f"{test}[ours]"), by_name.get(f"{test}[reference]")
        if ours is None or "scenario" in ours:
            return None
        out[f"{test}[reference]"] = {"skip": True}
        return ours, ref or {}

    if (p := pair("test_drain_queued_workflows")) and "completed_per_round" in p[0]:
        ours, ref = p
        out["test_drain_queued_workflows[ours]"] = {
            "scenario": f"temporal: workflows finished of {ours['queued']} queued, one "
                        f"{ours['lambda_timeout_s']:g} s invocation (worst round)",
            "value": min(ours["completed_per_round"]), "unit": "workflows",
            "reference": min(ref["completed_per_round"]) if ref.get("completed_per_round") else None,
            "reference_name": TEMPORAL_REFERENCE, "target": 190, "target_op": ">=",
            "note": f"per round: ours {ours['completed_per_round']}, reference {ref.get('completed_per_round')}; "
                    f"billed s ours {ours.get('billed_s_per_round')}, reference {ref.get('billed_s_per_round')}",
        }
    if (p := pair("test_billed_seconds_when_work_ends_early")) and "billed_after_work_s" in p[0]:
        ours, ref = p
        out["test_billed_seconds_when_work_ends_early[ours]"] = {
            "scenario": f"temporal: seconds billed after the work ended ({ours['lambda_timeout_s']:g} s Lambda, "
                        "worst round)",
            "value": max(ours["billed_after_work_s"]), "unit": "s",
            "reference": max(ref["billed_after_work_s"]) if ref.get("billed_after_work_s") else None,
            "reference_name": TEMPORAL_REFERENCE, "target": 2.0,
            "note": "target: at most 1 s after the 1 s idle period (idle_timeout default 1 s + 1 s); "
                    f"billed s ours {ours.get('billed_s')}, reference {ref.get('billed_s')}; work ended after "
                    f"ours {ours.get('work_s')}, reference {ref.get('work_s')} s",
        }
    if (p := pair("test_clean_exit")) and "exit_codes" in p[0]:
        ours, ref = p

        def clean_pct(info: dict) -> float | None:
            codes = info.get("exit_codes") or {}
            total = sum(codes.values())
            return 100 * codes.get("0", 0) / total if total else None

        out["test_clean_exit[ours]"] = {
            "scenario": f"temporal: worker processes exiting cleanly ({ours.get('processes')} runs)",
            "value": clean_pct(ours), "unit": "%", "reference": clean_pct(ref),
            "reference_name": TEMPORAL_REFERENCE, "target": 100, "target_op": ">=",
            "note": f"exit codes ours {ours['exit_codes']}, reference {ref.get('exit_codes')} "
                    "(-6: SIGABRT at interpreter exit)",
        }
    info = by_name.get("test_lambdarun_map_through_temporal")
    if info and "scenario" not in info and "calls_per_s" in info:
        out["test_lambdarun_map_through_temporal"] = {
            "scenario": f"temporal: lambdarun.map of {info.get('calls')} trivial calls on the local target",
            "value": info["calls_per_s"], "unit": "calls/s",
            "also": [{"scenario": "temporal: first call (cold worker function)", "value": info.get("first_call_s"),
                      "unit": "s"}],
        }
    return out


def rows_from(data: dict) -> list[dict]:
    """One row per benchmark, plus the further rows it lists in ``extra_info["also"]``."""
    rows = []
    derived = temporal_headlines(data["benchmarks"])
    for bench in data["benchmarks"]:
        info = {**bench.get("extra_info", {}), **derived.get(bench["name"], {})}
        if info.get("skip"):
            continue
        median_ms = bench["stats"]["median"] * 1000
        rows.append(_row(bench["name"], info, median_ms))
        for extra in info.get("also", []):
            rows.append(_row(bench["name"], {**extra}, None, parent=info))
    return rows


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if float(x).is_integer():
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _rss(r: dict) -> str:
    ours, ref = r["peak_rss_mib"], r["reference_peak_rss_mib"]
    return fmt(ours) if ref is None else f"{fmt(ours)} / {fmt(ref)}"


def write_markdown(rows: list[dict], out: Path, when: str, run: dict) -> None:
    lines = [
        "# lambdarun benchmark results",
        "",
        f"Machine: {machine()}. Date: {when} UTC. Produced by `python benchmarks/report.py` "
        "(pytest-benchmark, full mode); reference implementations measured in the same run, "
        "on the same machine.",
    ]
    if run:
        lines.append(
            f"Run: {run.get('elapsed_s', 0):.0f} s wall time; load average (1/5/15 min) "
            f"{run.get('load_start', '?')} at the start, {run.get('load_end', '?')} at the end "
            "(other work shared the machine: figures are conservative). Each module ran in its own "
            "pytest process: " + ", ".join(f"`{m}` {v['elapsed_s']:.0f} s" for m, v in run.get("modules", {}).items())
            + "."
        )
    lines += [
        "",
        "`ratio` is lambdarun / reference in the row's unit (below 1 is better for times, above 1 for "
        "rates). `peak RSS` is the benchmark process's peak during the scenario (it hosts the local "
        "Lambda service and moto's server; Lambda environments are separate processes), then the "
        "reference's own process where it ran in one.",
        "",
        "| scenario | lambdarun | reference | ratio | target | met | peak RSS MiB (lambdarun / reference) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ref = f"{fmt(r['reference'])} {r['unit']} ({r['reference_name']})" if r["reference"] is not None else "—"
        met = {True: "met", False: "**missed**", None: ""}[r["met"]]
        value = f"{fmt(r['value'])} {r['unit']}" if r["value"] is not None else "—"
        lines.append(
            f"| {r['scenario']} | {value} | {ref} | {fmt(r['ratio'])} | {r['target']} | {met} | {_rss(r)} |"
        )
    missed = [r for r in rows if r["met"] is False]
    if run.get("failed"):
        lines += ["", "## Failed benchmarks (no figure recorded)", ""]
        lines += [f"- **failed**: `{name}`" for name in run["failed"]]
    lines += ["", "## Targets", ""]
    targeted = [r for r in rows if r["met"] is not None]
    lines.append(f"{len(targeted) - len(missed)} of {len(targeted)} targets met.")
    for r in missed:
        lines.append(f"- **missed**: {r['scenario']}: {fmt(r['value'])} {r['unit']}, target {r['target']}.")
    notes = [r for r in rows if r["note"]]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {r['scenario']}: {r['note']}" for r in notes]
    lines += ["", "Charts: `throughput.png`, `latency.png` beside this file; raw data: `results.json`.", ""]
    out.write_text("\n".join(lines))


def write_charts(rows: list[dict], directory: Path) -> None:
    """``throughput.png`` (rates) and ``latency.png`` (times, cold starts included): lambdarun
    next to the reference where there is one, log scale, target as a vertical tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "throughput.png": ("throughput (higher is better)", [r for r in rows if r["unit"].endswith("/s")]),
        "latency.png": ("latency (lower is better)", [r for r in rows if r["unit"] in ("ms", "s")]),
    }
    for filename, (title, chosen) in groups.items():
        chosen = [r for r in chosen if r["value"]]
        if not chosen:
            continue
        fig, ax = plt.subplots(figsize=(12, 0.65 * len(chosen) + 1.8))
        labels = [textwrap.fill(f"{r['scenario']} ({r['unit']})", 60) for r in chosen]
        ys = list(range(len(chosen)))[::-1]
        ax.barh([y + 0.2 for y in ys], [r["value"] for r in chosen], height=0.4, label="lambdarun", color="tab:blue")
        refs = [(y, r) for y, r in zip(ys, chosen) if r["reference"]]
        ax.barh([y - 0.2 for y, _ in refs], [r["reference"] for _, r in refs], height=0.4,
                label="reference", color="tab:orange")
        for y, r in zip(ys, chosen):
            ax.text(r["value"], y + 0.2, f" {fmt(r['value'])}", va="center", fontsize=7)
            if r["target"]:
                target = float(r["target"].split()[1])
                ax.plot([target, target], [y - 0.45, y + 0.45], color="red" if r["met"] is False else "green", lw=1.5)
        for y, r in refs:
            ax.text(r["reference"], y - 0.2, f" {fmt(r['reference'])}", va="center", fontsize=7)
        ax.set_yticks(ys, labels, fontsize=7)
        ax.set_xscale("log")
        ax.plot([], [], color="green", label="target (met)")
        ax.plot([], [], color="red", label="target (missed)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"lambdarun benchmarks: {title}")
        fig.tight_layout()
        fig.savefig(directory / filename, dpi=110)
        plt.close(fig)


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-json", type=Path, help="render an existing pytest-benchmark JSON file")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k covalent)")
    args = parser.parse_args()
    json_path = args.from_json or HERE / "results.json"
    status = 0
    if not args.from_json:
        status = run_benchmarks(json_path, args.pytest_args)
    data = json.loads(json_path.read_text())
    run = data.get("lambdarun_run", {})
    when = data.get("datetime", datetime.datetime.now(datetime.timezone.utc).isoformat())[:19].replace("T", " ")
    rows = rows_from(data)
    write_markdown(rows, HERE / "RESULTS.md", when, run)
    write_charts(rows, HERE)
    print(f"wrote {HERE / 'RESULTS.md'} ({len(rows)} rows)")
    for r in rows:
        if r["met"] is False:
            print(f"MISSED: {r['scenario']}: {fmt(r['value'])} {r['unit']} (target {r['target']})")
    return status


if __name__ == "__main__":
    sys.exit(main())
