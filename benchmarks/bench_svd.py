"""Forward + backward of svdpi.torch.svd against autograd through torch.linalg.svd, side by side.

Run: ``python benchmarks/bench_svd.py`` (``--output FILE`` also writes the
table to a file). Both candidates compute the reduced SVD of the same
matrices and back-propagate the same cotangents of ``U``, ``S`` and ``Vh``
(all factors differentiated), in interleaved rounds (``_timing.py``); the
table reports the median time per call and the ratio svdpi / torch
(the target is at most 1.2). ``--backward-only`` adds a row per shape timing
the backward pass alone (svdpi's VJP against torch's ``svd_backward``), to
see which part a ratio comes from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _timing import format_time, machine_description, time_side_by_side

import svdpi
import svdpi.torch

# (batch, m, n) of issue 17.
SHAPES = [(64, 32, 16), (8, 256, 128), (1, 1024, 512)]
QUICK_SHAPES = [(8, 8, 4), (2, 16, 24)]


def _problem(batch, m, n, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    k = min(m, n)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    return randn(batch, m, n), randn(batch, m, k), randn(batch, k), randn(batch, k, n)


def _candidates(a, grad_u, grad_s, grad_vh, method):
    def svdpi_step():
        u, s, vh = svdpi.torch.svd(a, method=method)
        torch.autograd.backward((u, s, vh), (grad_u, grad_s, grad_vh))

    def torch_step():
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        torch.autograd.backward((u, s, vh), (grad_u, grad_s, grad_vh))

    return {"svdpi": svdpi_step, "torch": torch_step}


def _backward_candidates(a, grad_u, grad_s, grad_vh, method):
    """The backward passes alone, from saved forward results."""
    x1 = a.detach().clone().requires_grad_(True)
    x2 = a.detach().clone().requires_grad_(True)

    def svdpi_backward():
        outputs = svdpi.torch.svd(x1, method=method)
        return lambda: torch.autograd.grad(
            outputs, x1, (grad_u, grad_s, grad_vh), retain_graph=True
        )

    def torch_backward():
        outputs = torch.linalg.svd(x2, full_matrices=False)
        return lambda: torch.autograd.grad(
            outputs, x2, (grad_u, grad_s, grad_vh), retain_graph=True
        )

    return {"svdpi": svdpi_backward(), "torch": torch_backward()}


def table(shapes, dtype, rounds, method, backward_only):
    rows = [
        "| batch × m × n | part | svdpi.torch.svd | torch.linalg.svd | svdpi / torch |",
        "|---|---|---|---|---|",
    ]
    for batch, m, n in shapes:
        a, grad_u, grad_s, grad_vh = _problem(batch, m, n, dtype)
        parts = [("fwd+bwd", _candidates(a.requires_grad_(True), grad_u, grad_s, grad_vh, method))]
        if backward_only:
            parts.append(("bwd", _backward_candidates(a, grad_u, grad_s, grad_vh, method)))
        for part, candidates in parts:
            times = time_side_by_side(candidates, rounds=rounds)
            rows.append(
                f"| {batch} × {m} × {n} | {part} | {format_time(times['svdpi'])} | "
                f"{format_time(times['torch'])} | {times['svdpi'] / times['torch']:.2f} |"
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--method", choices=["pi", "taylor", "analytic"], default="pi")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--backward-only", action="store_true", help="also time the backward alone"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = 3 if args.quick else args.rounds
    lines = [
        f"Machine: {machine_description()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; svdpi {svdpi.__version__}.",
        "",
        f"Reduced SVD forward + backward of U, S and Vh, CPU, {args.dtype}, "
        f"method={args.method!r}, num_iters = 19 (median of interleaved rounds):",
        "",
        *table(shapes, getattr(torch, args.dtype), rounds, args.method, args.backward_only),
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
