"""Run the full benchmark suite and write benchmarks/RESULTS.md plus PNG charts.

    python benchmarks/report.py                  # every module, merged into results.json
    python benchmarks/report.py --only covalent  # the modules whose name contains "covalent"
    python benchmarks/report.py --fresh          # every module, results.json started afresh
    python benchmarks/report.py -- -k map        # pytest arguments after --
    python benchmarks/report.py --from-json benchmarks/results.json   # re-render only

Every ``benchmarks/test_*.py`` is a module (new ones are picked up by name); each runs in its
own pytest process. A run merges into ``results.json``: the modules that ran replace their own
earlier entries, the others keep theirs (with the date and load of their own run).

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
``load_before`` / ``load_after``  1/5/15-min load averages around the benchmark (``conftest.py``
              records them for every benchmark)

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


def modules(only: list[str] | None = None) -> list[Path]:
    """The benchmark modules (``benchmarks/test_*.py``, whoever added them), or those whose
    name contains one of ``only`` (``--only covalent`` picks ``test_covalent.py`` and
    ``test_covalent_lattice.py``; ``--only test_covalent.py`` just the one)."""
    found = sorted(HERE.glob("test_*.py"))
    if not only:
        return found
    chosen = [m for m in found if any(o == m.name or o == m.stem or o in m.stem for o in only)]
    if not chosen:
        raise SystemExit(f"no benchmark module matches {only}; there are: {', '.join(m.name for m in found)}")
    return chosen


def _failed_module(failure: str) -> str:
    """``test_x.py`` for a failure id ``benchmarks.test_x::test_name`` (JUnit classname)."""
    return failure.split("::", 1)[0].rsplit(".", 1)[-1] + ".py"


def module_of(bench: dict) -> str:
    """``test_x.py`` for a pytest-benchmark entry (its ``fullname`` is ``benchmarks/test_x.py::...``)."""
    return Path(bench.get("fullname", "").split("::", 1)[0]).name


def merge(previous: dict | None, fresh: dict, ran: list[str]) -> dict:
    """``previous`` results with the entries of the modules in ``ran`` replaced by ``fresh``
    ones (a module that ran and recorded nothing loses its old rows: they would be stale)."""
    if previous is None:
        return fresh
    out = dict(previous)
    kept = [b for b in previous.get("benchmarks", []) if module_of(b) not in ran]
    out["benchmarks"] = kept + fresh.get("benchmarks", [])
    for key in ("machine_info", "commit_info", "datetime", "version"):
        if key in fresh:
            out[key] = fresh[key]
    run = dict(previous.get("lambdarun_run", {}))
    new_run = fresh.get("lambdarun_run", {})
    run["modules"] = {**run.get("modules", {}), **new_run.get("modules", {})}
    run["failed"] = [f for f in run.get("failed", []) if _failed_module(f) not in ran] + new_run.get("failed", [])
    run["elapsed_s"] = round(sum(m.get("elapsed_s", 0) for m in run["modules"].values()), 1)
    out["lambdarun_run"] = run
    return out


def run_benchmarks(json_path: Path, extra: list[str], only: list[str] | None = None, *,
                   fresh_file: bool = False) -> int:
    """Run each benchmark module in its own pytest process (so one module's memory or crash
    does not colour the next), then merge their pytest-benchmark JSON into ``json_path``:
    the modules that ran replace their own earlier entries, the others' stay (unless
    ``fresh_file``). Each module's wall time, exit code, load average before and after, and
    time of the run go under ``"lambdarun_run"["modules"]``; failures under ``"failed"``."""
    run: dict = {"modules": {}, "failed": []}
    merged: dict | None = None
    status = 0
    chosen = modules(only)
    with tempfile.TemporaryDirectory() as tmp:
        for module in chosen:
            part, junit = Path(tmp) / f"{module.stem}.json", Path(tmp) / f"{module.stem}.xml"
            cmd = [
                sys.executable, "-m", "pytest", str(module), "--full-bench", "--benchmark-enable",
                f"--benchmark-json={part}", f"--junitxml={junit}", "-q", *extra,
            ]
            print("running:", " ".join(cmd), flush=True)
            load_start = load_average()
            t0 = time.monotonic()
            code = subprocess.call(cmd, cwd=ROOT)
            run["modules"][module.name] = {
                "elapsed_s": round(time.monotonic() - t0, 1), "exit_code": code, "load_start": load_start,
                "load_end": load_average(),
                "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            if code not in (0, 5):  # 5: nothing collected (e.g. -k deselected the module)
                status = status or code
            run["failed"] += _failures(junit)
            if part.exists():
                data = json.loads(part.read_text())
                if merged is None:
                    merged = data
                else:
                    merged["benchmarks"] += data["benchmarks"]
    merged = merged or {"benchmarks": []}
    run["elapsed_s"] = round(sum(m["elapsed_s"] for m in run["modules"].values()), 1)
    merged["lambdarun_run"] = run
    previous = None
    if json_path.exists() and not fresh_file:
        previous = json.loads(json_path.read_text())
    result = merge(previous, merged, [m.name for m in chosen])
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"benchmarks ran in {run['elapsed_s']:.0f} s ({len(chosen)} modules)")
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
        "load_before": info.get("load_before", inherited.get("load_before")),
        "load_after": info.get("load_after", inherited.get("load_after")),
        "module": info.get("module", inherited.get("module", "")),
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
        like = by_name.get("test_drain_queued_workflows[reference-like-ours]")
        if like and like.get("completed_per_round"):
            out["test_drain_queued_workflows[reference-like-ours]"] = {"skip": True}
            out["test_drain_queued_workflows[ours]"]["also"] = [{
                "scenario": f"temporal: workflows finished of {ours['queued']} queued, one "
                            f"{ours['lambda_timeout_s']:g} s invocation, the reference configured like ours "
                            "(worst round)",
                "value": min(ours["completed_per_round"]), "unit": "workflows",
                "reference": min(like["completed_per_round"]),
                "reference_name": "temporalio.contrib.aws.lambda_worker with our concurrency, pollers, cache",
                "note": f"per round: ours {ours['completed_per_round']}, reference configured like ours "
                        f"{like['completed_per_round']} (billed s {like.get('billed_s_per_round')}, stop reasons "
                        f"{like.get('stop_reasons')})",
            }]
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
        info.setdefault("module", module_of(bench))
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


def _load(r: dict) -> str:
    before, after = r.get("load_before"), r.get("load_after")
    if not before:
        return "—"
    return f"{before[0]:.1f} → {after[0]:.1f}" if after else f"{before[0]:.1f}"


def busy_rows(rows: list[dict], cores: int | None = None) -> list[dict]:
    """Rows whose 1-minute load average, before or after, was above the machine's core count."""
    cores = cores or os.cpu_count() or 1
    return [r for r in rows if any(x and x[0] > cores for x in (r.get("load_before"), r.get("load_after")))]


def load_summary(rows: list[dict], run: dict, cores: int | None = None) -> str:
    """What the recorded load says, computed from the figures (never a blanket claim)."""
    cores = cores or os.cpu_count() or 1
    recorded = [r for r in rows if r.get("load_before")]
    busy = busy_rows(rows, cores)
    if not recorded:
        return "No load average was recorded per row."
    if not busy:
        return (f"The 1-minute load average stayed at or below the {cores} cores before and after every row "
                "that recorded it (column `load`)."
                + (f" {len(rows) - len(recorded)} rows have no load recorded." if len(rows) > len(recorded) else ""))
    modules = sorted({r["module"] for r in busy if r.get("module")})
    return (f"**{len(busy)} of {len(recorded)} rows ran with a 1-minute load average above the {cores} cores** "
            f"(other work shared the machine; modules {', '.join(f'`{m}`' for m in modules)}): their absolute "
            "figures are lower than a quiet machine gives, by an amount not measured here; rerun them with "
            "`python benchmarks/report.py --only MODULE` on a quiet machine. Ratios are like for like only "
            "where a row's note says its two sides were interleaved."
            + (f" {len(rows) - len(recorded)} rows have no load recorded (measured before loads were recorded)."
               if len(rows) > len(recorded) else ""))


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
            f"Modules ran for {run.get('elapsed_s', 0):.0f} s in all, each in its own pytest process: "
            + ", ".join(
                f"`{m}` {v['elapsed_s']:.0f} s" + (f" (load {v['load_start']} → {v['load_end']}, {v['when']})"
                                                   if v.get("when") else "")
                for m, v in run.get("modules", {}).items()
            ) + "."
        )
    lines += [
        "",
        load_summary(rows, run),
        "",
        "`ratio` is lambdarun / reference in the row's unit (below 1 is better for times, above 1 for "
        "rates). `peak memory` is the peak sum of PSS over the benchmark process's whole tree during the "
        "scenario (the caller, the local Lambda service and moto inside it, every Lambda environment, a "
        "reference's own child process; sampled every 0.1 s from outside: `_tree_memory.py`), for "
        "lambdarun then for the reference where it ran in a phase of its own; older rows without it show "
        "the caller's RSS. `load` is the 1-minute load average before → after the row.",
        "",
        "| scenario | lambdarun | reference | ratio | target | met | peak memory MiB (lambdarun / reference) | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ref = f"{fmt(r['reference'])} {r['unit']} ({r['reference_name']})" if r["reference"] is not None else "—"
        met = {True: "met", False: "**missed**", None: ""}[r["met"]]
        value = f"{fmt(r['value'])} {r['unit']}" if r["value"] is not None else "—"
        lines.append(
            f"| {r['scenario']} | {value} | {ref} | {fmt(r['ratio'])} | {r['target']} | {met} | {_rss(r)} | {_load(r)} |"
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
    parser.add_argument("--only", action="append", metavar="MODULE",
                        help="run only the benchmark modules whose name contains MODULE (repeatable); "
                             "their rows replace their earlier ones in results.json, the others stay")
    parser.add_argument("--fresh", action="store_true", help="start results.json afresh instead of merging")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k covalent)")
    args = parser.parse_args()
    json_path = args.from_json or HERE / "results.json"
    status = 0
    if not args.from_json:
        status = run_benchmarks(json_path, args.pytest_args, args.only, fresh_file=args.fresh)
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
