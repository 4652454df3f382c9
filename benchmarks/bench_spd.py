"""An SPDNet training step with svdpi.torch.spd against spd_learn's modules, side by side.

Run: ``python benchmarks/bench_spd.py`` (``--output FILE`` also writes the
tables to a file; ``--quick`` for tiny shapes). Two parts:

**Training step** (default): ``BiMap(n, n/2) → ReEig(1e-4) → LogEig →
vectorise``, forward and backward to the BiMap weight, on a batch of SPD
matrices, for

* ``svdpi exact``: :mod:`svdpi.torch.spd` with its defaults (exact
  gradient, a finiteness check in ReEig and LogEig, LogEig's positive
  definiteness check: two host reads and one Cholesky factorisation);
* ``svdpi exact, unchecked``: ``check_finite=False, check_spd=False``;
* ``svdpi pi, unchecked``: the power-iteration gradient;
* ``spd_learn``: ``spd_learn.modules`` ``BiMap``, ``ReEig``, ``LogEig``
  (version 0.2.1 measured; a column only where it is installed);
* ``eigh autograd``: the same layers written with ``torch.linalg.eigh``
  and autograd (the classical gradient, NaN at repeated eigenvalues).

All in interleaved rounds (``_timing.py``): the ratios are measured side by
side. BiMap's weight is kept orthonormal by each library's own
parametrization (svdpi's QR, spd_learn's Cayley map).

**Stiefel** (``--stiefel``): how each way of keeping BiMap's weight
orthonormal holds up over many optimiser steps (SGD with momentum, Adam):
the worst ``‖WᵀW − I‖_max`` seen, and the cost of a step (BiMap forward and
backward on a batch, optimiser step, retraction if any), relative to the
QR parametrization. This is the measurement behind ``BiMap``'s default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _timing import format_time, machine_description, time_side_by_side
from torch import nn
from torch.nn.utils import parametrizations

from svdpi.torch import spd
from svdpi.torch.spd._bimap import stiefel_qr

SHAPES = [(64, 16), (128, 32), (256, 64)]  # (batch, n), issue 16's ranges
QUICK_SHAPES = [(8, 6), (4, 10)]
THRESHOLD = 1e-4


def _spd_batch(batch: int, n: int, dtype, seed: int = 0) -> torch.Tensor:
    """Sample covariances of 2n observations plus 1e-3·I (eigenvalues ~ 1e-3 … 4)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, 2 * n, generator=generator, dtype=torch.float64)
    a = x @ x.mT / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)
    return a.to(dtype)


def _eigh_map(a, f):
    w, v = torch.linalg.eigh(a)
    return (v * f(w).unsqueeze(-2)) @ v.mT


class _EighSPDNet(nn.Module):
    """The same layers through torch.linalg.eigh and autograd (the classical gradient)."""

    def __init__(self, n, k, dtype):
        super().__init__()
        self.bimap = spd.BiMap(n, k, dtype=dtype)

    def forward(self, x):
        y = self.bimap(x)
        y = _eigh_map(y, lambda w: w.clamp_min(THRESHOLD))
        return spd.functional.vectorize(_eigh_map(y, torch.log))


def svdpi_model(n, k, dtype, *, method="exact", checked=True) -> nn.Module:
    checks = {} if checked else {"check_finite": False}
    return nn.Sequential(
        spd.BiMap(n, k, dtype=dtype),
        spd.ReEig(THRESHOLD, method=method, **checks),
        spd.LogEig(vectorize=True, method=method, **checks, check_spd=checked),
    )


def spd_learn_model(n, k, dtype):
    try:
        from spd_learn.modules import BiMap, LogEig, ReEig
    except ImportError:
        return None
    return nn.Sequential(
        BiMap(n, k, dtype=dtype), ReEig(threshold=THRESHOLD), LogEig(upper=True, flatten=True)
    )


def step_candidates(batch: int, n: int, dtype) -> dict:
    k = max(n // 2, 1)
    x = _spd_batch(batch, n, dtype)
    torch.manual_seed(0)
    models = {
        "svdpi exact": svdpi_model(n, k, dtype),
        "svdpi exact, unchecked": svdpi_model(n, k, dtype, checked=False),
        "svdpi pi, unchecked": svdpi_model(n, k, dtype, method="pi", checked=False),
    }
    peer = spd_learn_model(n, k, dtype)
    if peer is not None:
        models["spd_learn"] = peer
    models["eigh autograd"] = _EighSPDNet(n, k, dtype)
    generator = torch.Generator().manual_seed(1)
    cotangent = torch.randn(batch, k * (k + 1) // 2, generator=generator, dtype=torch.float64)
    cotangent = cotangent.to(dtype)
    candidates = {}
    for name, model in models.items():
        parameters = list(model.parameters())

        def step(model=model, parameters=parameters):
            return torch.autograd.grad(model(x), parameters, cotangent)

        candidates[name] = step
    return candidates


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def training_step_part(shapes, dtype, rounds, min_seconds) -> list[str]:
    results = []
    for batch, n in shapes:
        times = time_side_by_side(
            step_candidates(batch, n, dtype), rounds=rounds, min_seconds=min_seconds
        )
        results.append(((batch, n), times))
        print(f"  {batch} × {n}: " + ", ".join(f"{k} {format_time(v)}" for k, v in times.items()))
    names = list(dict.fromkeys(name for _, times in results for name in times))
    ratios = [("svdpi exact", "spd_learn"), ("svdpi exact, unchecked", "spd_learn")]
    ratios += [("svdpi exact, unchecked", "eigh autograd")]
    header = ["batch × n → n/2", *names, *(f"{a} / {b}" for a, b in ratios)]
    rows = []
    for (batch, n), times in results:
        cells = [f"{batch} × {n} → {max(n // 2, 1)}"]
        cells += [format_time(times[name]) if name in times else "–" for name in names]
        for a, b in ratios:
            cells.append(f"{times[a] / times[b]:.2f}" if a in times and b in times else "–")
        rows.append(cells)
    title = f"**SPDNet training step** (BiMap → ReEig → LogEig, forward + backward), {dtype}."
    note = (
        "spd_learn is not installed: its columns are left out (pip install spd_learn)."
        if "spd_learn" not in names
        else "spd_learn: BiMap (Cayley parametrization), ReEig, LogEig(upper=True)."
    )
    return [title, "", *_table(header, rows), note, ""]


# -- Stiefel --------------------------------------------------------------------------------


def _polar(w: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    return u @ vh


# BiMap's QR parametrization; PyTorch's orthogonal parametrizations; a QR or polar
# retraction after each optimiser step; no constraint at all.
TORCH_MAPS = ("cayley", "matrix_exp", "householder")
STIEFEL_KINDS = ("qr", *TORCH_MAPS, "QR retraction", "polar retraction", "none")


def _stiefel_layer(kind: str, n: int, k: int, dtype) -> nn.Module:
    if kind == "qr":
        return spd.BiMap(n, k, dtype=dtype)
    layer = nn.Module()
    w = torch.empty(n, k, dtype=dtype)
    nn.init.orthogonal_(w)
    layer.weight = nn.Parameter(w)
    if kind in TORCH_MAPS:
        parametrizations.orthogonal(layer, "weight", orthogonal_map=kind)
    return layer


class _StiefelRun:
    """One way of keeping the weight orthonormal, trained step by step on one problem."""

    def __init__(self, kind, optimiser_name, n, k, batch, dtype, seed=0):
        torch.manual_seed(seed)
        self.kind = kind
        self.layer = _stiefel_layer(kind, n, k, dtype)
        self.x = _spd_batch(batch, n, dtype, seed)
        # A reachable target: the congruence by another orthonormal frame.
        generator = torch.Generator().manual_seed(seed + 1)
        frame = torch.randn(n, k, generator=generator, dtype=torch.float64)
        frame = torch.linalg.qr(frame)[0].to(dtype)
        self.target = frame.mT @ self.x @ frame
        parameters = list(self.layer.parameters())
        if optimiser_name == "SGD":
            self.optimiser = torch.optim.SGD(parameters, lr=0.05, momentum=0.9)
        else:
            self.optimiser = torch.optim.Adam(parameters, lr=1e-2)
        self.eye = torch.eye(k, dtype=dtype)
        self.worst, self.seconds, self.loss = 0.0, 0.0, None

    def step(self) -> None:
        start = time.perf_counter()
        loss = (spd.functional.bimap(self.x, self.layer.weight) - self.target).pow(2).mean()
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        if self.kind.endswith("retraction"):
            with torch.no_grad():
                retract = stiefel_qr if self.kind.startswith("QR") else _polar
                self.layer.weight.copy_(retract(self.layer.weight))
        self.seconds += time.perf_counter() - start
        with torch.no_grad():
            w = self.layer.weight
            self.worst = max(self.worst, (w.mT @ w - self.eye).abs().max().item())
        self.loss = loss.item()


def stiefel_runs(optimiser_name, n, k, batch, steps, dtype) -> dict:
    """Every kind trained side by side, one step of each in turn (noise hits all alike)."""
    runs = {kind: _StiefelRun(kind, optimiser_name, n, k, batch, dtype) for kind in STIEFEL_KINDS}
    for _ in range(steps):
        for run in runs.values():
            run.step()
    return runs


def stiefel_part(n, k, batch, steps, dtypes) -> list[str]:
    lines = [
        f"**Keeping BiMap's weight orthonormal**: {n} × {k}, batch {batch}, {steps} steps.",
        "",
        "Worst ‖WᵀW − I‖_max over the run; time per step (forward, backward, optimiser step, "
        "retraction) relative to the QR parametrization, the runs stepped in turn.",
        "",
    ]
    header = ["orthogonality", "needs a call after step()"]
    rows = {kind: [kind, "yes" if kind.endswith("retraction") else "no"] for kind in STIEFEL_KINDS}
    for dtype in dtypes:
        for optimiser_name in ("SGD", "Adam"):
            header += [f"{optimiser_name} {dtype} drift", f"{optimiser_name} {dtype} time"]
            runs = stiefel_runs(optimiser_name, n, k, batch, steps, getattr(torch, dtype))
            base = runs["qr"].seconds
            for kind, run in runs.items():
                rows[kind] += [f"{run.worst:.1e}", f"{run.seconds / base:.2f}"]
            per_step = format_time(base / steps)
            print(f"  stiefel {optimiser_name} {dtype}: qr {per_step} per step")
    return [*lines, *_table(header, list(rows.values()))]


# -- command line ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text!r}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=_positive_int, default=9)
    parser.add_argument("--threads", type=_positive_int, default=1)
    parser.add_argument("--stiefel", action="store_true", help="also the orthogonality part")
    parser.add_argument(
        "--stiefel-steps", type=_positive_int, default=1000, help="optimiser steps per run"
    )
    parser.add_argument("--skip-step", action="store_true", help="only the Stiefel part")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if args.skip_step and not args.stiefel:
        parser.error("--skip-step leaves nothing to run without --stiefel")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rounds = 3 if args.quick else args.rounds
    min_seconds = 0.002 if args.quick else 0.05
    lines = [
        "**svdpi.torch.spd benchmark.**",
        "",
        f"{machine_description()}, torch {torch.__version__}, {args.threads} thread(s); "
        f"median of {rounds} interleaved rounds.",
        "",
    ]
    if not args.skip_step:
        shapes = QUICK_SHAPES if args.quick else SHAPES
        lines += training_step_part(shapes, dtype, rounds, min_seconds)
    if args.stiefel:
        steps = min(args.stiefel_steps, 20) if args.quick else args.stiefel_steps
        n, k, batch = (6, 3, 4) if args.quick else (64, 32, 128)
        lines += stiefel_part(n, k, batch, steps, ["float32", "float64"])
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
