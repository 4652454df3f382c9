"""Forward + backward of svdpi's eig against the obvious alternatives, side by side.

Run: ``python benchmarks/bench_eig.py`` (or ``make bench``). Prints Markdown
tables; ``--output FILE`` also writes them to a file.

Table 1 (torch, CPU, float32 by default): svdpi.torch.eig (method="pi",
num_iters=19) forward+backward vs torch.linalg.eigh with autograd (the
classical gradient, unstable for close eigenvalues) vs the paper's literal
power-iteration-with-deflation loop (tests/paper_reference.py; the loop runs
over the batch and the eigenvectors, as the paper's layers do).

Table 2 (NumPy, float64): numpy.linalg.eigh vs scipy.linalg.eigh(driver="evd")
on single matrices: why svdpi calls numpy.linalg.eigh for NumPy input (scipy's
driver was no faster on the reference machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from _timing import format_time, machine_description, time_side_by_side

import svdpi
import svdpi.torch

# The literal loop lives with the tests, where it is the gradient oracle.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from paper_reference import paper_eig

SHAPES = [(16, 4), (8, 8), (4, 16), (1, 64), (4, 128), (1, 512)]


def _problem(batch, n, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, 2 * n, generator=generator, dtype=torch.float64)
    a = (x @ x.mT / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)).to(dtype)
    grad_w = torch.randn(batch, n, generator=generator, dtype=torch.float64).to(dtype)
    grad_v = torch.randn(batch, n, n, generator=generator, dtype=torch.float64).to(dtype)
    return a, grad_w, grad_v


def _candidates(a, grad_w, grad_v, *, with_loop):
    """The three ways to get eigenpairs and back-propagate the same loss."""

    def svdpi_step():
        w, v = svdpi.torch.eig(a)
        torch.autograd.backward((w, v), (grad_w, grad_v))

    def eigh_step():
        w, v = torch.linalg.eigh(a)
        # Same loss as svdpi's: torch's order is ascending.
        torch.autograd.backward((w, v), (grad_w.flip(-1), grad_v.flip(-1)))

    def loop_step():
        for i in range(a.shape[0]):
            m = a[i].detach().requires_grad_(True)
            w, v = paper_eig(m, num_iters=19)
            torch.autograd.backward((w, v), (grad_w[i], grad_v[i]))

    candidates = {"svdpi": svdpi_step, "eigh": eigh_step}
    if with_loop:
        candidates["loop"] = loop_step
    return candidates


def torch_table(shapes, dtype, loop_max_n, rounds):
    rows = [
        "| batch × n | svdpi fwd+bwd | torch.linalg.eigh fwd+bwd | paper's PI loop | "
        "svdpi / eigh | loop / svdpi |",
        "|---|---|---|---|---|---|",
    ]
    for batch, n in shapes:
        a, grad_w, grad_v = _problem(batch, n, dtype)
        candidates = _candidates(a.requires_grad_(True), grad_w, grad_v, with_loop=n <= loop_max_n)
        times = time_side_by_side(candidates, rounds=rounds)
        loop = times.get("loop")
        loop_ratio = f"{loop / times['svdpi']:.0f}" if loop else "–"
        rows.append(
            f"| {batch} × {n} | {format_time(times['svdpi'])} | {format_time(times['eigh'])} | "
            f"{format_time(loop) if loop else 'not run'} | "
            f"{times['svdpi'] / times['eigh']:.2f} | "
            f"{loop_ratio} |"
        )
    return rows


def numpy_table(sizes, rounds):
    from scipy.linalg import eigh as scipy_eigh

    rows = [
        "| n | numpy.linalg.eigh | scipy.linalg.eigh (evd) | numpy / scipy |",
        "|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for n in sizes:
        x = rng.standard_normal((n, 2 * n))
        a = x @ x.T / (2 * n)
        times = time_side_by_side(
            {
                "numpy": lambda a=a: np.linalg.eigh(a),
                "scipy": lambda a=a: scipy_eigh(a, driver="evd", check_finite=False),
            },
            rounds=rounds,
        )
        rows.append(
            f"| {n} | {format_time(times['numpy'])} | {format_time(times['scipy'])} | "
            f"{times['numpy'] / times['scipy']:.2f} |"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--loop-max-n", type=int, default=128, help="skip the slow literal loop above this n"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    shapes = SHAPES[:3] if args.quick else SHAPES
    rounds = 3 if args.quick else args.rounds
    dtype = getattr(torch, args.dtype)

    lines = [
        f"Machine: {machine_description()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; svdpi {svdpi.__version__}.",
        "",
        f"Forward + backward, CPU, {args.dtype}, num_iters = 19, all eigenpairs "
        "differentiated (median of interleaved rounds):",
        "",
        *torch_table(shapes, dtype, args.loop_max_n, rounds),
    ]
    try:
        numpy_rows = numpy_table([128, 256, 512, 1024] if not args.quick else [64], rounds)
    except ImportError:
        numpy_rows = ["(scipy not installed: NumPy vs scipy table skipped)"]
    lines += ["", "NumPy forward only, float64, one matrix:", "", *numpy_rows]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
