"""Run the full benchmark suite and write benchmarks/RESULTS.md plus PNG charts.

    python benchmarks/report.py                # full run (about 10-15 minutes on 2 cores)
    python benchmarks/report.py --from-json benchmarks/results.json   # re-render only

Each benchmark describes its headline figure in ``benchmark.extra_info``:

``scenario``  what is measured (default: the test name)
``value``     the headline figure for lambdarun (default: the median time in ms)
``unit``      its unit (default ``ms``); units ending in ``/s`` are higher-is-better
``reference`` the same figure for the reference implementation, measured in the same run
``reference_name``  which implementation that is
``target``    the figure to reach, with ``target_op`` ``<=`` (default) or ``>=``

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_benchmarks(json_path: Path, extra: list[str]) -> int:
    cmd = [
        sys.executable, "-m", "pytest", str(HERE), "--full-bench", "--benchmark-enable",
        f"--benchmark-json={json_path}", "-p", "no:randomly", "-q", *extra,
    ]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def rows_from(data: dict) -> list[dict]:
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        median_ms = bench["stats"]["median"] * 1000
        value = info.get("value", median_ms)
        unit = info.get("unit", "ms")
        reference = info.get("reference")
        target = info.get("target")
        op = info.get("target_op", "<=")
        met = None
        if target is not None and value is not None:
            met = value <= target if op == "<=" else value >= target
        rows.append({
            "name": bench["name"],
            "scenario": info.get("scenario", bench["name"]),
            "value": value,
            "unit": unit,
            "reference": reference,
            "reference_name": info.get("reference_name", ""),
            "ratio": (value / reference) if reference not in (None, 0) and value is not None else None,
            "target": f"{op} {target} {unit}" if target is not None else "",
            "met": met,
            "peak_rss_mib": info.get("peak_rss_mib"),
            "median_ms": median_ms,
        })
    return rows


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def write_markdown(rows: list[dict], out: Path, when: str) -> None:
    lines = [
        "# lambdarun benchmark results",
        "",
        f"Machine: {machine()}. Date: {when}. Produced by `python benchmarks/report.py` "
        "(pytest-benchmark, full mode); reference implementations measured in the same run.",
        "",
        "| scenario | lambdarun | reference | ratio (lambdarun / reference) | target | met | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ref = f"{fmt(r['reference'])} {r['unit']} ({r['reference_name']})" if r["reference"] is not None else "—"
        met = {True: "yes", False: "**missed**", None: ""}[r["met"]]
        lines.append(
            f"| {r['scenario']} | {fmt(r['value'])} {r['unit']} | {ref} | {fmt(r['ratio'])} | "
            f"{r['target']} | {met} | {fmt(r['peak_rss_mib'])} |"
        )
    lines += ["", "Charts: `throughput.png`, `latency.png` beside this file.", ""]
    out.write_text("\n".join(lines))


def write_charts(rows: list[dict], directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "throughput.png": [r for r in rows if r["unit"].endswith("/s")],
        "latency.png": [r for r in rows if r["unit"] in ("ms", "s")],
    }
    for filename, chosen in groups.items():
        if not chosen:
            continue
        fig, ax = plt.subplots(figsize=(10, 0.5 * len(chosen) + 1.5))
        labels = [f"{r['scenario']} ({r['unit']})" for r in chosen]
        ys = range(len(chosen))
        ax.barh([y + 0.2 for y in ys], [r["value"] or 0 for r in chosen], height=0.4, label="lambdarun")
        ax.barh([y - 0.2 for y in ys], [r["reference"] or 0 for r in chosen], height=0.4, label="reference")
        ax.set_yticks(list(ys), labels, fontsize=8)
        ax.set_xscale("log")
        ax.legend()
        ax.set_title(filename.removesuffix(".png"))
        fig.tight_layout()
        fig.savefig(directory / filename, dpi=110)
        plt.close(fig)


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
    when = data.get("datetime", datetime.datetime.now(datetime.timezone.utc).isoformat())[:19]
    rows = rows_from(data)
    write_markdown(rows, HERE / "RESULTS.md", when)
    write_charts(rows, HERE)
    print(f"wrote {HERE / 'RESULTS.md'} ({len(rows)} scenarios)")
    return status


if __name__ == "__main__":
    sys.exit(main())
