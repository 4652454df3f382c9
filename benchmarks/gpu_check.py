"""svdpi on a GPU: timings side by side, CuPy and PyTorch, written as Markdown.

Run through ``benchmarks/gpu_check.sh`` (which also runs the GPU tests and
the DLPack parity test), or alone::

    python benchmarks/gpu_check.py --out runs/gpu_check          # CUDA
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/x
    python benchmarks/gpu_check.py --dry-run                     # the plan only

Tables (float32 by default, every eigenpair differentiated, num_iters = 19):

1. eig forward + VJP: svdpi on CuPy (fused kernel and generic array-API
   path), svdpi.torch on CUDA, torch.linalg.eigh with autograd; forward only:
   svdpi on CuPy, cupy.linalg.eigh, torch.linalg.eigh.
2. eig_vjp alone: the fused CuPy kernel vs the generic path (target for
   512 × 32 on an H100-class GPU: under 0.5 ms).
3. The eigensolvers behind svdpi.eig on CuPy, each timed on each shape, and
   whether ``svdpi.cupy.choose_eigh_solver`` picked the fastest: the data to
   tune its thresholds.
4. svdpi.torch.ZCAWhitening vs BatchNorm2d, forward + backward, training mode,
   on the ResNet-18 stem activation (128, 64, 32, 32).

``--device cpu`` runs the same tables where they make sense on the CPU
(svdpi on NumPy in place of CuPy, PyTorch on the CPU), so the script is
checked without a GPU; its numbers are not GPU numbers.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _timing import format_time, time_side_by_side, time_side_by_side_cuda

import svdpi
from svdpi._dispatch import native_paths

SHAPES = [(512, 4), (512, 32), (64, 64), (1, 512)]
QUICK_SHAPES = [(8, 4), (2, 16)]
ZCA_INPUT = (128, 64, 32, 32)  # ResNet-18 stem activation on CIFAR, batch 128
QUICK_ZCA_INPUT = (4, 16, 4, 4)
ZCA_GROUP_SIZES = (4, 16, 64)  # channels per group (the paper's d); capped at C
VJP_TARGET_SHAPE, VJP_TARGET_MS = (512, 32), 0.5
NOT_RUN = "–"


@dataclass
class Environment:
    """What can run here, and why not where it cannot."""

    device: str
    cupy: Any = None
    torch: Any = None
    torch_device: str = "cpu"
    skipped: dict[str, str] = field(default_factory=dict)
    description: str = ""


def detect(device: str) -> Environment:
    env = Environment(device=device)
    try:
        import torch

        env.torch = torch
    except ImportError as error:
        env.skipped["torch"] = f"PyTorch is not installed ({error})"
    if device == "cuda":
        if env.torch is not None and env.torch.cuda.is_available():
            env.torch_device = "cuda"
        elif env.torch is not None:
            env.skipped["torch"] = "PyTorch has no CUDA device"
            env.torch = None
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device")
            env.cupy = cupy
        except Exception as error:
            env.skipped["cupy"] = f"CuPy unavailable ({type(error).__name__}: {error})"
    else:
        env.skipped["cupy"] = "--device cpu"
    parts = [f"svdpi {svdpi.__version__}", f"Python {platform.python_version()}"]
    parts.append(f"NumPy {np.__version__}")
    if env.torch is not None:
        parts.append(f"PyTorch {env.torch.__version__}")
        if env.torch_device == "cuda":
            parts.insert(0, f"GPU: {env.torch.cuda.get_device_name(0)}")
    if env.cupy is not None:
        parts.append(f"CuPy {env.cupy.__version__}")
        if env.torch_device != "cuda":
            name = env.cupy.cuda.runtime.getDeviceProperties(0)["name"]
            parts.insert(0, f"GPU: {name.decode() if isinstance(name, bytes) else name}")
    if device == "cpu":
        parts.insert(0, f"CPU only ({platform.machine()}), not GPU numbers")
    env.description = "; ".join(parts)
    return env


def _timer(env: Environment, rounds: int) -> Callable[[dict[str, Callable[[], object]]], dict]:
    if env.device == "cuda":
        library = "torch" if env.torch is not None else "cupy"
        if library == "torch":
            sync = env.torch.cuda.synchronize
        else:
            sync = env.cupy.cuda.Device().synchronize

        def run(candidates):
            return time_side_by_side_cuda(candidates, library=library, rounds=rounds, sync=sync)

        return run
    return lambda candidates: time_side_by_side(candidates, rounds=rounds)


def _problem(batch: int, n: int, dtype: str, seed: int = 0):
    """SPD covariances (eigenvalues ~ 0.1 … 4) and cotangents, in NumPy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n, 2 * n))
    a = x @ np.swapaxes(x, -1, -2) / (2 * n) + 1e-2 * np.eye(n)
    gw = rng.standard_normal((batch, n))
    gv = rng.standard_normal((batch, n, n))
    return a.astype(dtype), gw.astype(dtype), gv.astype(dtype)


def _explicit_namespace(env: Environment):
    """The array library for svdpi's explicit VJPs: CuPy on CUDA, NumPy on the CPU."""
    if env.device == "cuda":
        if env.cupy is None:
            return None, None
        import array_api_compat.cupy as xp

        return xp, env.cupy.asarray
    import array_api_compat.numpy as xp

    return xp, np.asarray


def eig_candidates(env: Environment, batch: int, n: int, dtype: str) -> dict[str, Callable]:
    a_np, gw_np, gv_np = _problem(batch, n, dtype)
    candidates: dict[str, Callable] = {}
    xp, to_xp = _explicit_namespace(env)
    lib = "CuPy" if env.device == "cuda" else "NumPy"
    if xp is not None:
        a, gw, gv = to_xp(a_np), to_xp(gw_np), to_xp(gv_np)

        def explicit():
            w, v = svdpi.eig(a, check_finite=False)
            return svdpi.eig_vjp(w, v, gw, gv)

        def explicit_generic():
            with native_paths(False):
                w, v = svdpi.eig(a, check_finite=False)
                return svdpi.eig_vjp(w, v, gw, gv)

        candidates[f"svdpi {lib} fwd+VJP"] = explicit
        if env.device == "cuda":
            candidates[f"svdpi {lib} generic fwd+VJP"] = explicit_generic
    if env.torch is not None:
        torch = env.torch
        import svdpi.torch

        a_t = torch.as_tensor(a_np, device=env.torch_device).requires_grad_()
        gw_t = torch.as_tensor(gw_np, device=env.torch_device)
        gv_t = torch.as_tensor(gv_np, device=env.torch_device)

        def svdpi_torch():
            w, v = svdpi.torch.eig(a_t, check_finite=False)
            return torch.autograd.grad((w, v), a_t, (gw_t, gv_t))

        def eigh_autograd():
            w, v = torch.linalg.eigh(a_t)
            return torch.autograd.grad((w, v), a_t, (gw_t.flip(-1), gv_t.flip(-1)))

        def svdpi_torch_generic():
            with native_paths(False):
                return svdpi_torch()

        candidates["svdpi.torch fwd+bwd"] = svdpi_torch
        if env.device == "cuda":  # does svdpi.torch._native pay off on a GPU too?
            candidates["svdpi.torch generic fwd+bwd"] = svdpi_torch_generic
        candidates["torch eigh fwd+bwd"] = eigh_autograd
    if xp is not None:
        candidates[f"svdpi {lib} fwd"] = lambda: svdpi.eig(a, check_finite=False)
        if env.device == "cuda":
            candidates["cupy.linalg.eigh fwd"] = lambda: env.cupy.linalg.eigh(a)
        else:
            candidates["numpy eigh fwd"] = lambda: np.linalg.eigh(a)
    if env.torch is not None:
        a_plain = a_t.detach()
        candidates["torch eigh fwd"] = lambda: env.torch.linalg.eigh(a_plain)
    return candidates


def vjp_candidates(env: Environment, batch: int, n: int, dtype: str) -> dict[str, Callable]:
    xp, to_xp = _explicit_namespace(env)
    if xp is None:
        return {}
    a_np, gw_np, gv_np = _problem(batch, n, dtype)
    w, v = svdpi.eig(to_xp(a_np), check_finite=False)
    gw, gv = to_xp(gw_np), to_xp(gv_np)

    def generic():
        with native_paths(False):
            return svdpi.eig_vjp(w, v, gw, gv)

    candidates = {"eig_vjp": lambda: svdpi.eig_vjp(w, v, gw, gv)}
    if env.device == "cuda":
        candidates = {"eig_vjp fused": candidates["eig_vjp"], "eig_vjp generic": generic}
    return candidates


def solver_candidates(env: Environment, batch: int, n: int, dtype: str) -> dict[str, Callable]:
    if env.cupy is None:
        return {}
    import svdpi.cupy

    a = env.cupy.asarray(_problem(batch, n, dtype)[0])
    candidates = {}
    for solver in svdpi.cupy.SOLVERS:
        if solver == "syevd" and batch != 1:
            continue
        if solver == "syevd_loop" and batch == 1:
            continue  # the same call as syevd
        candidates[solver] = lambda solver=solver: svdpi.cupy.solve_eigh(a, solver)
    return candidates


def zca_candidates(env: Environment, shape: tuple[int, ...], dtype: str) -> tuple[dict, str]:
    if env.torch is None:
        return {}, env.skipped.get("torch", "PyTorch unavailable")
    torch = env.torch
    import svdpi.torch

    layer_class = getattr(svdpi.torch, "ZCAWhitening", None)
    if layer_class is None:
        return {}, "svdpi.torch.ZCAWhitening not found (torch-adapter layers not merged)"
    channels = shape[1]
    generator = torch.Generator().manual_seed(0)
    x_host = torch.randn(shape, generator=generator, dtype=getattr(torch, dtype))
    x = x_host.to(env.torch_device).requires_grad_()
    grad = torch.randn(shape, generator=generator, dtype=x.dtype).to(env.torch_device)
    layers = {"BatchNorm2d": torch.nn.BatchNorm2d(channels)}
    for group_size in ZCA_GROUP_SIZES:
        if group_size <= channels and channels % group_size == 0:
            try:
                layer = layer_class(channels, num_groups=channels // group_size)
            except TypeError as error:
                return {}, f"svdpi.torch.ZCAWhitening(...) signature not as expected: {error}"
            layers[f"ZCA d={group_size}"] = layer
    candidates = {}
    for name, layer in layers.items():
        layer.to(device=env.torch_device, dtype=x.dtype).train()
        params = [x, *layer.parameters()]

        def step(layer=layer, params=params):
            return torch.autograd.grad(layer(x), params, grad)

        candidates[name] = step
    return candidates, ""


def _table(title: str, shape_label: str, rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    names = list(dict.fromkeys(name for _, times in rows for name in times))
    lines = [f"### {title}", "", f"| {shape_label} | " + " | ".join(names) + " |"]
    lines.append("|" + " --- |" * (len(names) + 1))
    for label, times in rows:
        cells = [format_time(times[name]) if name in times else NOT_RUN for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _ratio_lines(rows, numerator, denominator, text) -> list[str]:
    out = []
    for label, times in rows:
        if numerator in times and denominator in times:
            out.append(f"- {label}: {text} {times[numerator] / times[denominator]:.2f}x")
    return out


def run_tables(env: Environment, shapes, zca_input, dtype: str, rounds: int) -> list[str]:
    timer = _timer(env, rounds)
    lines = []
    lib = "CuPy" if env.device == "cuda" else "NumPy"

    eig_rows = [(f"{b} × {n}", timer(eig_candidates(env, b, n, dtype))) for b, n in shapes]
    lines += _table("eig forward + VJP (and forward only)", "batch × n", eig_rows)
    lines += _ratio_lines(
        eig_rows,
        "torch eigh fwd+bwd",
        f"svdpi {lib} fwd+VJP",
        f"torch eigh autograd / svdpi {lib}:",
    )
    lines += _ratio_lines(
        eig_rows, "torch eigh fwd", f"svdpi {lib} fwd", f"torch eigh fwd / svdpi {lib} fwd:"
    )
    lines += _ratio_lines(
        eig_rows,
        "svdpi.torch generic fwd+bwd",
        "svdpi.torch fwd+bwd",
        "svdpi.torch generic / native:",
    )
    lines.append("")

    vjp_rows = [(f"{b} × {n}", timer(vjp_candidates(env, b, n, dtype))) for b, n in shapes]
    if any(times for _, times in vjp_rows):
        lines += _table(f"eig_vjp alone ({lib})", "batch × n", vjp_rows)
        lines += _ratio_lines(vjp_rows, "eig_vjp generic", "eig_vjp fused", "generic / fused:")
        for label, times in vjp_rows:
            if label == "{} × {}".format(*VJP_TARGET_SHAPE) and "eig_vjp fused" in times:
                ms = times["eig_vjp fused"] * 1e3
                verdict = "met" if ms < VJP_TARGET_MS else "NOT met"
                lines.append(f"- target eig_vjp {label} < {VJP_TARGET_MS} ms: {verdict}")
        lines.append("")

    if env.cupy is not None:
        import svdpi.cupy

        solver_rows = []
        verdicts = []
        for b, n in shapes:
            times = timer(solver_candidates(env, b, n, dtype))
            label = f"{b} × {n}"
            solver_rows.append((label, times))
            fastest = min(times, key=times.get)
            chosen = svdpi.cupy.choose_eigh_solver(b, n)
            ok = "yes" if chosen == fastest else f"no ({times[chosen] / times[fastest]:.2f}x)"
            verdicts.append(f"- {label}: fastest {fastest}, policy picks {chosen}: {ok}")
        lines += _table("CuPy eigensolvers (forward only)", "batch × n", solver_rows)
        lines += [
            *verdicts,
            f"- thresholds: SYEVJ_BATCHED_MAX_N = {svdpi.cupy.SYEVJ_BATCHED_MAX_N}, "
            f"SYEVD_LOOP_MAX_BATCH = {svdpi.cupy.SYEVD_LOOP_MAX_BATCH}",
            "",
        ]
    else:
        lines += [f"CuPy eigensolver table skipped: {env.skipped.get('cupy')}", ""]

    zca, reason = zca_candidates(env, zca_input, dtype)
    if zca:
        label = " × ".join(map(str, zca_input))
        zca_rows = [(label, timer(zca))]
        title = "ZCA whitening layer vs BatchNorm2d, forward + backward"
        lines += _table(title, "input", zca_rows)
        lines += [
            line
            for name in zca
            if name != "BatchNorm2d"
            for line in _ratio_lines(zca_rows, name, "BatchNorm2d", f"{name} / BatchNorm2d:")
        ]
        lines.append("")
    else:
        lines += [f"ZCA vs BatchNorm2d skipped: {reason}", ""]
    return lines


def plan(env: Environment, shapes, zca_input, dtype: str) -> list[str]:
    """The candidates each table would time, without timing anything."""
    lines = ["### Plan (dry run: nothing timed)", ""]
    for b, n in shapes:
        # The candidates depend on the shape only through the batch size (the
        # solvers): build them on tiny matrices so the plan is instant.
        tiny = (min(b, 2), 2)
        names = list(eig_candidates(env, *tiny, dtype)) + list(vjp_candidates(env, *tiny, dtype))
        names += [f"solver {s}" for s in solver_candidates(env, *tiny, dtype)]
        lines.append(f"- {b} × {n}: " + (", ".join(names) or "nothing available"))
    zca, reason = zca_candidates(env, (2, zca_input[1], 2, 2), dtype)
    lines.append("- ZCA input {}: {}".format(zca_input, ", ".join(zca) or f"skipped: {reason}"))
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds")
    parser.add_argument("--dry-run", action="store_true", help="list what would be timed")
    args = parser.parse_args(argv)
    env = detect(args.device)
    if args.device == "cuda" and env.cupy is None and env.torch is None:
        print(
            "error: no CUDA device through CuPy or PyTorch "
            f"({'; '.join(env.skipped.values())}); use --device cpu to check the script",
            file=sys.stderr,
        )
        return 2
    shapes = QUICK_SHAPES if args.quick else SHAPES
    zca_input = QUICK_ZCA_INPUT if args.quick else ZCA_INPUT
    rounds = 3 if args.quick else args.rounds
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "## svdpi GPU check: timings",
        "",
        f"{env.description}. {now}. {args.dtype}, num_iters = 19, all eigenpairs "
        f"differentiated; median of {rounds} interleaved rounds "
        f"({'CUDA events' if args.device == 'cuda' else 'wall clock'}), after warm-up.",
        "",
    ]
    header += [f"Skipped: {what}: {why}" for what, why in env.skipped.items()]
    header.append("")
    body = (
        plan(env, shapes, zca_input, args.dtype)
        if args.dry_run
        else run_tables(env, shapes, zca_input, args.dtype, rounds)
    )
    text = "\n".join(header + body)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_plan.md" if args.dry_run else "gpu_check.md"
    (args.out / name).write_text(text + "\n")
    print(f"written: {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
