"""The main job on the embedded local default: run one function on Lambda, then a map.

    python examples/demo.py

No AWS account or Docker needed: the first call starts lambdarun's local Lambda service
(real awslambdaric runtimes in worker processes) and moto's S3 in the background, and
stops them at exit.
"""

from __future__ import annotations

import os
import platform
import time

import lambdarun


def where_am_i(x: int) -> dict:
    print(f"computing {x} ** 2 inside Lambda")
    return {
        "result": x**2,
        "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "pid": os.getpid(),
        "python": platform.python_version(),
    }


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def main() -> None:
    started = time.perf_counter()
    future = lambdarun.submit(where_am_i, 12)
    info = future.result()
    print(f"run: {info} (stdout captured remotely: {future.stdout!r})")
    print(f"caller pid {os.getpid()} != Lambda pid {info['pid']}: {os.getpid() != info['pid']}")
    numbers = list(range(1, 201))
    steps = list(lambdarun.map(collatz_steps, numbers))
    best = max(zip(steps, numbers))
    print(f"map: {len(steps)} tasks; longest Collatz chain below 201 starts at {best[1]} ({best[0]} steps)")
    assert steps == [collatz_steps(n) for n in numbers]
    print(f"done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
