"""Benchmarks of the covalent backend on the local target (local Lambda service + moto S3),
side by side with the original executor, ``covalent-awslambda-plugin`` 0.22.0.

    pytest benchmarks/test_covalent.py --full-bench --benchmark-enable

Targets (issue 5): warm round trip of a tiny task <= 20 ms median (the original executor's
floor is 5 s: S3 upload, Event invoke, head_object every poll_freq); map of 1000 tiny tasks
>= 200 tasks/s on 2 cores; a 10 MB argument (spilled to S3 by reference).

The reference runs in the same run, on the same local stack: its own Lambda handler
(``covalent_awslambda_plugin/exec.py`` from the installed package, zipped with the
``cloudpickle`` it imports, as its deployment package) is created as a function on our local
Lambda service, its bucket on moto's S3, and its executor is driven the way Covalent's
dispatcher drives it (``_init_runtime`` then ``_execute``) in a child process; see
``_covalent_reference.py``. It needs ``covalent`` and, installed with ``--no-deps`` (it pins
an old boto3), ``covalent-awslambda-plugin==0.22.0`` and ``covalent-aws-plugins==0.19.0``
(``benchmarks/requirements-reference.txt``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdarun
import lambdarun_covalent.plugin
from lambdarun.local.testing import local_stack_fixture
from lambdarun.plugins import DEFAULT_PLUGINS, make_plugin_manager
from lambdarun.session import Session

local_stack = local_stack_fixture(scope="module")

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024
ROUND_TRIP_TARGET_MS = 20
MAP_TARGET_TASKS_PER_S = 200
# the original's defaults (covalent_awslambda_plugin.awslambda._EXECUTOR_PLUGIN_DEFAULTS)
REFERENCE_FUNCTION = "covalent-awslambda-executor"
REFERENCE_BUCKET = "covalent-lambda-job-resources"
REFERENCE_NAME = "covalent-awslambda-plugin 0.22.0"


def _plugins() -> list[Any]:
    out: list[Any] = [lambdarun_covalent.plugin]
    if not any(name.startswith("lambdarun.local") for name in DEFAULT_PLUGINS):  # until the core does
        from lambdarun.local import plugin as local_plugin

        out.append(local_plugin)
    return out


@pytest.fixture(scope="module")
def session(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    pm = make_plugin_manager(_plugins(), load_entrypoints=False, environ={})
    overrides = {
        "target": "local",
        "local": {"state_dir": str(local_stack.state_dir)},
        "progress": False,
        "log_level": "WARNING",
        "covalent": {"function_name": "lambdarun-covalent-bench"},
    }
    with Session(pm, overrides=overrides, environ={}, cwd=tmp_path_factory.mktemp("cfg")) as s:
        # warm: function created, environments started, clients connected
        list(lambdarun.map(abs, range(-64, 0), backend="covalent", session=s))
        yield s


def _reference_package() -> dict[str, bytes]:
    """The original's Lambda handler plus the one dependency it imports beyond boto3."""
    spec = importlib.util.find_spec("covalent_awslambda_plugin.exec")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "covalent-awslambda-plugin is not installed: "
            "pip install --no-deps -r benchmarks/requirements-reference.txt"
        )
    import cloudpickle

    files = {"exec.py": Path(spec.origin).read_bytes()}
    root = Path(cloudpickle.__file__).parent
    files.update({f"cloudpickle/{p.name}": p.read_bytes() for p in root.glob("*.py")})
    return files


@pytest.fixture(scope="module")
def reference_env(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The original's bucket and function (its default names) on the local stack, and the
    environment of a child process that points boto3 (and Covalent's config) at them."""
    from lambdarun.local.testing import create_function

    lam = local_stack.client("lambda")
    local_stack.client("s3").create_bucket(Bucket=REFERENCE_BUCKET)
    create_function(lam, REFERENCE_FUNCTION, _reference_package(), handler="exec.handler",
                    timeout=900, memory_size=512)
    scratch = tmp_path_factory.mktemp("covalent-ref")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COVALENT_"))}
    env.update(local_stack.environment())
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               COVALENT_CONFIG_DIR=str(scratch / "config"), XDG_CACHE_HOME=str(scratch / "cache"),
               COVALENT_LOGDIR=str(scratch / "logs"))
    yield env
    lam.delete_function(FunctionName=REFERENCE_FUNCTION)


def run_reference(env: dict[str, str], rounds: int, poll_freq: float | None, warmup: int = 1) -> dict:
    cmd = [sys.executable, str(HERE / "_covalent_reference.py"), "--function", REFERENCE_FUNCTION,
           "--bucket", REFERENCE_BUCKET, "--rounds", str(rounds), "--warmup", str(warmup)]
    if poll_freq is not None:
        cmd += ["--poll-freq", str(poll_freq)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"reference executor failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# reference configurations: (label, poll_freq in full mode); smoke mode polls every 0.1 s
REFERENCE_CONFIGS = {"defaults": None, "poll_freq=1": 1.0}
_reference_runs: dict[tuple, dict] = {}


@pytest.mark.parametrize("config", list(REFERENCE_CONFIGS))
def test_warm_round_trip_tiny_task(benchmark: Any, headline: Any, record_rss: None, session: Session,
                                   reference_env: dict[str, str], full_bench: bool, config: str) -> None:
    """Ours: ``lambdarun.run(abs, -1, backend="covalent")``, warm. Reference: the original
    executor's ``_execute`` of ``abs(-n)`` on its own handler, warm (one warm-up task first)."""
    result = benchmark(lambdarun.run, abs, -1, backend="covalent", session=session)
    assert result == 1
    poll_freq = REFERENCE_CONFIGS[config] if full_bench else 0.1
    key = (poll_freq, full_bench)
    if key not in _reference_runs:  # smoke mode: both configurations poll at 0.1 s, one run serves both
        _reference_runs[key] = run_reference(reference_env, rounds=5 if full_bench else 1, poll_freq=poll_freq,
                                             warmup=1 if full_bench else 0)
    ref = _reference_runs[key]
    median = headline.median_s()
    headline.set(
        f"covalent: warm round trip of a tiny task (reference: {config})",
        None if median is None else median * 1000,
        reference=statistics.median(ref["samples_s"]) * 1000,
        reference_name=f"{REFERENCE_NAME}, poll_freq={ref['poll_freq']:g} s",
        target=ROUND_TRIP_TARGET_MS,
        reference_peak_rss_mib=ref["peak_rss_mib"],
        reference_samples_ms=[round(x * 1000, 1) for x in ref["samples_s"]],
        reference_polls_per_task=ref["polls_per_task"],
        note=(
            "reference driven as Covalent's dispatcher does (executor._init_runtime + _execute) "
            "with its own handler on the same local Lambda service and moto S3; plain abs(-n) "
            "instead of the dispatcher's wrapper_fn; a fresh dispatch_id per task. "
            if config == "defaults" else ""
        ) + (
            f"Reference per task (ms): {[round(x * 1000) for x in ref['samples_s']]}, mean "
            f"{statistics.mean(ref['samples_s']) * 1000:,.0f} ms; head_object polls per task: "
            f"{ref['polls_per_task']} (it polls the result key then the exception key, sleeping poll_freq "
            "after each miss; 1 = the first poll found the result and no sleep was paid: each of its "
            "S3/Lambda calls opens a new boto3 Session, slow enough here for the warm local function "
            "to finish first)."
        ),
    )


def test_map_1000_tiny_tasks(benchmark: Any, headline: Any, record_rss: None, session: Session,
                             bench_size: Any, full_bench: bool) -> None:
    tasks = bench_size(1000, 20)

    def run_map() -> list[int]:
        return list(lambdarun.map(abs, range(-tasks, 0), backend="covalent", session=session))

    results = benchmark.pedantic(run_map, rounds=3 if full_bench else 1, iterations=1, warmup_rounds=0)
    assert results == list(range(tasks, 0, -1))
    median = headline.median_s()
    headline.set(f"covalent: map of {tasks} tiny tasks", None if median is None else tasks / median,
                 "tasks/s", target=MAP_TARGET_TASKS_PER_S, target_op=">=")


def test_10mb_argument(benchmark: Any, headline: Any, record_rss: None, session: Session,
                       bench_size: Any, full_bench: bool) -> None:
    size = bench_size(10 * MB, 300 * 1024)  # smoke: still over the 256 KiB inline limit (S3 path)
    blob = os.urandom(size)
    result = benchmark.pedantic(
        lambdarun.run, args=(len, blob), kwargs={"backend": "covalent", "session": session},
        rounds=5 if full_bench else 1, iterations=1,
    )
    assert result == size
    headline.set(f"covalent: round trip with a {size / MB:.3g} MiB argument (via S3)")
