"""Side-by-side timing: candidates are run round-robin so machine noise hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def _warm_up(
    candidates: dict[str, Callable[[], object]], min_seconds: float, sync: Callable[[], None]
) -> dict[str, int]:
    """Run each candidate twice (caches, compilation), then pick its repeat count.

    The count makes one timed batch last about ``min_seconds``.
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
    return repeats


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
    repeats = _warm_up(candidates, min_seconds, sync)
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


def cuda_events(library: str) -> tuple[Callable[[], Any], Callable[[Any, Any], float]]:
    """``(new_event, elapsed_seconds)`` for CUDA events of ``library`` ("torch" or "cupy").

    Events are recorded on the library's current stream. PyTorch's and CuPy's
    default streams are both CUDA's legacy default stream, which orders work
    across the two libraries, so either kind of event times either library's work.
    """
    if library == "torch":
        import torch

        def new_event():
            return torch.cuda.Event(enable_timing=True)

        def elapsed(start, end):
            return start.elapsed_time(end) * 1e-3

    elif library == "cupy":
        import cupy

        def new_event():
            return cupy.cuda.Event()

        def elapsed(start, end):
            return cupy.cuda.get_elapsed_time(start, end) * 1e-3

    else:
        raise ValueError(f"library must be 'torch' or 'cupy', got {library!r}")
    return new_event, elapsed


def time_side_by_side_cuda(
    candidates: dict[str, Callable[[], object]],
    *,
    library: str = "torch",
    rounds: int = 15,
    min_seconds: float = 0.02,
    sync: Callable[[], None],
) -> dict[str, float]:
    """Like :func:`time_side_by_side`, timed by CUDA events: median device seconds per call.

    Warm-up and repeat counts as there (``sync`` waits for the device, e.g.
    ``torch.cuda.synchronize``); each round then brackets ``count`` calls of
    each candidate, in turn, between two CUDA events, so host-side Python
    overhead counts only where it leaves the GPU idle.
    """
    new_event, elapsed = cuda_events(library)
    repeats = _warm_up(candidates, min_seconds, sync)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            count = repeats[name]
            begin, end = new_event(), new_event()
            sync()
            begin.record()
            for _ in range(count):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(elapsed(begin, end) / count)
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
