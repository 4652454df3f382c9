"""Divided differences of svdpi.functions against the 0.2 matrix functions' kernel, side by side.

The Daleckii–Krein kernel ``G_ij = f[λ_i, λ_j]`` is formed in every exact
backward pass of a spectral map, on ``(batch, n, n)`` pairs from the
``(batch, n, 1)`` and ``(batch, 1, n)`` eigenvalue vectors. This times
``Power(p).divided_difference`` and ``Log().divided_difference`` against
``svdpi._matrix_functions._Function.divided_differences`` (the 0.2 code they
replace), and ``torch.linalg.eigh`` of the same batch for scale, in one run,
round-robin (``_timing.time_side_by_side``), on PyTorch's CPU with one thread
by default. Also the second divided differences (``(batch, n, n, n)``
triples), which only second derivatives need.

Usage::

    python benchmarks/bench_divided_differences.py [--batch 32] [--n 64] [--dtype float32]
    python benchmarks/bench_divided_differences.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse

import torch
from _timing import time_side_by_side
from array_api_compat import torch as xp

from svdpi import functions
from svdpi._matrix_functions import _Function


def _eigenvalues(batch: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n, 2 * n, generator=generator, dtype=torch.float64)
    cov = x @ x.mT / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)
    return torch.linalg.eigvalsh(cov).flip(-1).to(dtype)


def run(batch: int, n: int, dtype: torch.dtype, rounds: int, min_seconds: float) -> list[str]:
    w = _eigenvalues(batch, n, dtype)
    a = torch.randn(batch, n, n, dtype=dtype)
    a = a @ a.mT
    x, y = w[..., :, None], w[..., None, :]
    rows = []
    cases = [
        ("Power(0.5)", functions.Power(0.5), _Function("power", 0.5)),
        ("Power(-0.5)", functions.Power(-0.5), _Function("power", -0.5)),
        ("Power(0.3)", functions.Power(0.3), _Function("power", 0.3)),
        ("Log()", functions.Log(), _Function("log")),
    ]
    for name, new, old in cases:
        times = time_side_by_side(
            {
                "new": lambda new=new: new.divided_difference(x, y, xp=xp),
                "0.2": lambda old=old: old.divided_differences(x, y, xp),
                "eigh": lambda: torch.linalg.eigh(a),
            },
            rounds=rounds,
            min_seconds=min_seconds,
        )
        rows.append(
            f"| {name} | {times['new'] * 1e6:.0f} µs | {times['0.2'] * 1e6:.0f} µs | "
            f"{times['new'] / times['0.2']:.2f} | {times['eigh'] * 1e6:.0f} µs |"
        )
    second = []
    t3 = w[..., :, None, None], w[..., None, :, None], w[..., None, None, :]
    for name, fn in [
        ("Power(0.5)", functions.Power(0.5)),
        ("Power(0.3)", functions.Power(0.3)),
        ("Log()", functions.Log()),
        ("Exp()", functions.Exp()),
    ]:
        times = time_side_by_side(
            {"second": lambda fn=fn: fn.second_divided_difference(*t3, xp=xp)},
            rounds=max(3, rounds // 3),
            min_seconds=min_seconds,
        )
        second.append(f"| {name} | {times['second'] * 1e3:.2f} ms |")
    return [
        f"batch × n = {batch} × {n}, {dtype}, {torch.get_num_threads()} thread(s)",
        "",
        "| function | divided_difference | 0.2 kernel | new / 0.2 | eigh (same batch) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| function | second_divided_difference (batch × n³) |",
        "|---|---|",
        *second,
    ]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny, few rounds)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        lines = run(2, 8, getattr(torch, args.dtype), rounds=3, min_seconds=0.001)
    else:
        lines = run(args.batch, args.n, getattr(torch, args.dtype), rounds=15, min_seconds=0.02)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
