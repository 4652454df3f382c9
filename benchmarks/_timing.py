"""Side-by-side timing: candidates are run round-robin so machine noise hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_side_by_side(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 15,
    min_seconds: float = 0.02,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median seconds per call of each candidate.

    Each candidate is warmed up and given a repeat count that lasts about
    ``min_seconds``; then ``rounds`` rounds each time every candidate once, in
    turn, and the median per-call time over the rounds is reported.
    """
    repeats = {}
    for name, fn in candidates.items():
        fn()
        fn()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - start, 1e-7)
        repeats[name] = max(1, int(min_seconds / once))
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            count = repeats[name]
            sync()
            start = time.perf_counter()
            for _ in range(count):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in samples.items()}


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def machine_description() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
