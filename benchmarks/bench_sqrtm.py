"""Matrix square root, forward + backward: svdpi.torch.sqrtm, eigh autograd, Newton–Schulz.

Run from the repository root: ``python benchmarks/bench_sqrtm.py`` (``--quick``
for a smoke test with small shapes and few rounds; ``--output FILE`` also
writes the table to a file; ``--device cuda`` on a GPU, timed by CUDA events).

Candidates, each timed as forward + backward of ``<G, A^{1/2}>`` on a batch
of ``N`` float32 covariances ``C × C`` of ``2C`` Gaussian samples plus
``1e-3 · I`` (the setting of covariance pooling):

- ``svdpi exact`` / ``svdpi pi``: :func:`svdpi.torch.sqrtm` with
  ``method="exact"`` (Daleckii–Krein) and ``method="pi"`` (the paper's
  power-iteration gradient, 19 steps);
- ``eigh autograd``: ``V diag(sqrt λ) Vᵀ`` from ``torch.linalg.eigh`` with
  PyTorch's own backward (the classical gradient);
- ``Newton–Schulz``: iSQRT-COV's coupled iteration, 5 steps, backward
  through autograd (``benchmarks/_reference_whitening.py``);
- the SPD-learning libraries users pick today, where installed (optional,
  ``pip install spd_learn==0.2.1 torchspd==0.1.2``; a missing one is left
  out): ``spd_learn`` (``spd_learn.functional.matrix_sqrt``, eigh forward and
  a thresholded Loewner-matrix backward) and ``torchspd``
  (``torchspd.sqrtm``, eigh forward and ``1 / (√λi + √λj)`` backward).

Targets of issue 15 at ``(N, C) = (32, 64)`` and ``(8, 256)``: ``svdpi
exact`` at most 1.1 times ``eigh autograd``, and no slower than the faster
of the two peers; each shape's summary line gives both ratios.

Candidates run round-robin (``benchmarks/_timing.py``) so machine noise hits
them alike; the medians are compared as ratios. Each candidate's error is
measured against the float64 eigendecomposition: the relative Frobenius
error of ``A^{1/2}`` and of the gradient (float64 autograd through ``eigh``,
exact on these well-separated spectra), worst sample of the batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _reference_whitening import newton_schulz_sqrtm
from _timing import format_time, machine_description, time_side_by_side, time_side_by_side_cuda

import svdpi.torch

SHAPES = [(32, 64), (8, 256), (32, 256), (8, 512)]
TARGET_SHAPES = {(32, 64), (8, 256)}
TARGET_EIGH, TARGET_PEER = 1.1, 1.0
PEERS = ("spd_learn", "torchspd")
QUICK_SHAPES = [(8, 16), (4, 32)]


def problem(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 covariances of ``2n`` samples + ``1e-3 · I``, and a symmetric cotangent."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, 2 * n, generator=generator, dtype=torch.float64)
    a = x @ x.mT / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)
    g = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    return a, (g + g.mT) / 2


def eigh_sqrtm(a: torch.Tensor) -> torch.Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh(a)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()[..., None, :]) @ eigenvectors.mT


def peer_square_roots() -> dict:
    """The installed peers' square roots (read to learn, called as their users call them)."""
    peers = {}
    try:
        from spd_learn.functional import matrix_sqrt

        peers["spd_learn"] = matrix_sqrt.apply
    except ImportError:
        pass
    try:
        import torchspd

        peers["torchspd"] = torchspd.sqrtm
    except ImportError:
        pass
    return peers


def square_roots() -> dict:
    return {
        "svdpi exact": lambda a: svdpi.torch.sqrtm(a, method="exact"),
        "svdpi pi": lambda a: svdpi.torch.sqrtm(a, method="pi"),
        "eigh autograd": eigh_sqrtm,
        "Newton–Schulz": lambda a: newton_schulz_sqrtm(a, 5),
        **peer_square_roots(),
    }


def _relative(x: torch.Tensor, reference: torch.Tensor) -> float:
    dims = (-2, -1)
    err = torch.linalg.matrix_norm(x.detach().double() - reference, dim=dims)
    return float((err / torch.linalg.matrix_norm(reference, dim=dims)).max())


def errors(functions: dict, a64: torch.Tensor, g64: torch.Tensor, device) -> dict:
    """Worst relative error over the batch of each candidate's value and gradient (float32 run).

    The float64 reference is computed on the CPU.
    """
    reference_a = a64.clone().requires_grad_(True)
    reference = eigh_sqrtm(reference_a)
    (reference_grad,) = torch.autograd.grad(reference, reference_a, g64)
    result = {}
    for name, fn in functions.items():
        a = a64.float().to(device).requires_grad_(True)
        value = fn(a)
        (grad,) = torch.autograd.grad(value, a, g64.float().to(device))
        result[name] = (
            _relative(value.cpu(), reference.detach()),
            _relative(grad.cpu(), reference_grad),
        )
    return result


def step(fn, a64: torch.Tensor, g64: torch.Tensor, device):
    a = a64.float().to(device).requires_grad_(True)
    g = g64.float().to(device)

    def run():
        a.grad = None
        fn(a).backward(g)

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes, rounds, min_seconds = (
        (QUICK_SHAPES, 3, 0.005)
        if args.quick
        else (
            SHAPES,
            args.rounds,
            0.05,
        )
    )
    functions = square_roots()
    names = list(functions)
    summaries: list[str] = []
    where = (
        f"CUDA ({torch.cuda.get_device_name(device)}, CUDA-event timing)"
        if device.type == "cuda"
        else f"CPU: {machine_description()}"
    )
    lines = [
        f"Matrix square root, forward + backward, float32, {where}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {rounds} round-robin rounds.",
        "",
        "Time as a ratio to autograd through torch.linalg.eigh, to the faster of the "
        "installed peers (spd_learn, torchspd) and to Newton–Schulz (5 steps); "
        "error = worst relative Frobenius error in the batch against float64 eigh "
        "(value / gradient). Peers installed: "
        + (", ".join(name for name in PEERS if name in functions) or "none")
        + ".",
        "",
        "| N × C | method | time | / eigh | / peer | / NS | error A^1/2 | error grad |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for batch, n in shapes:
        a64, g64 = problem(batch, n)
        errs = errors(functions, a64, g64, device)
        candidates = {name: step(functions[name], a64, g64, device) for name in names}
        if device.type == "cuda":
            times = time_side_by_side_cuda(
                candidates, rounds=rounds, min_seconds=min_seconds, sync=torch.cuda.synchronize
            )
        else:
            times = time_side_by_side(candidates, rounds=rounds, min_seconds=min_seconds)
        peer_times = [times[name] for name in PEERS if name in times]
        best_peer = min(peer_times) if peer_times else None
        for name in names:
            per_peer = "–" if best_peer is None else f"{times[name] / best_peer:.2f}"
            row = (
                f"| {batch} × {n} | {name} | {format_time(times[name])} "
                f"| {times[name] / times['eigh autograd']:.2f} | {per_peer} "
                f"| {times[name] / times['Newton–Schulz']:.2f} "
                f"| {errs[name][0]:.1e} | {errs[name][1]:.1e} |"
            )
            lines.append(row)
            print(row, flush=True)
        if (batch, n) in TARGET_SHAPES or args.quick:
            summaries.append(summary(batch, n, times, best_peer))
    lines += ["", *summaries]
    print("\n".join(["", *summaries]), flush=True)
    if args.output is not None:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


def summary(batch: int, n: int, times: dict, best_peer: float | None) -> str:
    """svdpi exact against its two targets at one shape, as one Markdown list item."""
    exact = times["svdpi exact"]
    eigh = exact / times["eigh autograd"]
    text = f"- {batch} × {n}: svdpi exact / eigh autograd {eigh:.2f} (target ≤ {TARGET_EIGH})"
    if best_peer is None:
        return text + "; no peer installed"
    peer = exact / best_peer
    return text + f", / faster peer {peer:.2f} (target ≤ {TARGET_PEER})"


if __name__ == "__main__":
    raise SystemExit(main())
