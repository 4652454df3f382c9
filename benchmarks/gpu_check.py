"""svdpi on a GPU: the GPU tests and timings side by side, in one Markdown report.

One prepared run for a machine with a CUDA device, which may be lent for
minutes only. Run it through ``make gpu-check`` or ``benchmarks/gpu_check.sh``
(which stage the package and give the run a hard time limit), or alone::

    python benchmarks/gpu_check.py --out runs/gpu_check             # CUDA
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/x  # the script, in seconds
    python benchmarks/gpu_check.py --dry-run                        # the plan only
    python benchmarks/gpu_check.py --list                           # the sections

The report, ``OUT/gpu_check_report.md``, is rewritten after every section, so
a run stopped by its time limit still leaves every section finished so far;
a section that fails or overruns its own budget is reported as such and the
next one runs. Sections, in report order (each one function below, registered
with :func:`section`):

``environment``
    The card, driver, CUDA, PyTorch, CuPy and NumPy versions.
``tests``
    pytest on every test that needs a GPU: those marked ``gpu``, every test
    run on the ``cupy`` backend of the ``xp`` fixture and the examples of
    ``svdpi.cupy``'s docstrings (the pytest plugin ``benchmarks/_gpu_tests.py``
    selects them); pass / fail / skip counts, each failure, the skip reasons.
    On a GPU, a run in which no test passed fails.
``eig``
    eig forward + VJP: svdpi on CuPy (fused kernel and generic array-API
    path), svdpi.torch on CUDA, torch.linalg.eigh with autograd; forward
    only: svdpi on CuPy, cupy.linalg.eigh, torch.linalg.eigh.
``vjp``
    eig_vjp alone: the fused CuPy kernel vs the generic path (target for
    512 × 32 on an H100-class GPU: under 0.5 ms).
``solvers``
    The eigensolvers behind svdpi.eig on CuPy, each timed on each shape, and
    whether ``svdpi.cupy.choose_eigh_solver`` picked the fastest: the data to
    tune its thresholds.
``sqrtm``
    svdpi.torch.sqrtm forward + backward (``method="exact"`` and ``"pi"``)
    against ``V diag(sqrt λ) Vᵀ`` through torch.linalg.eigh with autograd.
``spectral``
    Spectral maps (issue 15): svdpi.torch.spectral_map with ``Power(0.5)``,
    ``Log()``, ``Exp()``, ``Clamp(0.5)`` and a ``Custom`` tanh, forward +
    backward and double backward (``create_graph=True``, method
    ``"exact"``) against the same functions through torch.linalg.eigh with
    autograd; svdpi.spectral_map + spectral_map_vjp and spectral_map_hvp on
    CuPy arrays; and, in float64, the largest relative difference of the
    value, the VJP and the second derivative from the CPU's (PyTorch on
    CUDA against PyTorch on the CPU, CuPy against NumPy).
``zca``
    svdpi.torch.ZCAWhitening vs BatchNorm2d, forward + backward, training
    mode, on the ResNet-18 stem activation (128, 64, 32, 32).
``spd``
    An SPDNet training step, ``BiMap(n, n/2) → ReEig → LogEig``, forward +
    backward, with svdpi.torch.spd (exact gradient; with and without its
    host-read input checks) against the same layers through
    torch.linalg.eigh and autograd, and spd_learn's modules where installed
    (issue 16).

Timings: float32 by default, every eigenpair differentiated, num_iters = 19,
median of interleaved rounds after warm-up (``benchmarks/_timing.py``), by
CUDA events on a GPU. ``--device cpu`` runs every section on the CPU (svdpi
on NumPy in place of CuPy, PyTorch on the CPU; the tests section then finds
every GPU test skipped), so the script itself is checked without a GPU; its
numbers are not GPU numbers.

A section for GPU work not covered yet can be announced in
:data:`PENDING_SECTIONS` (listed at the end of the report) until it is
written; 0.3's sections are all written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import math
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _gpu_tests
import array_api_compat
import numpy as np
from _sections import Report, Section, SectionFailed, run_sections
from _timing import (
    format_time,
    machine_description,
    time_side_by_side,
    time_side_by_side_cuda,
)

import svdpi
from svdpi import functions
from svdpi._dispatch import native_paths

ROOT = Path(__file__).resolve().parents[1]
REPORT_NAME = "gpu_check_report.md"
PLAN_NAME = "gpu_check_plan.md"
JUNIT_NAME = "gpu_tests.xml"
TESTS_LOG_NAME = "gpu_tests.log"

SHAPES = [(512, 4), (512, 32), (64, 64), (1, 512)]
QUICK_SHAPES = [(8, 4), (2, 16)]
SQRTM_SHAPES = [(32, 64), (8, 256)]
QUICK_SQRTM_SHAPES = [(4, 8)]
SPECTRAL_SHAPES = [(32, 64), (8, 256)]  # issue 15's sqrtm shapes
QUICK_SPECTRAL_SHAPES = [(4, 8)]
SPECTRAL_CHECK_SHAPE = (4, 16)  # float64, for the device-vs-CPU comparison
SVD_SHAPES = [(64, 32, 16), (8, 256, 128), (1, 1024, 512)]  # issue 17's
QUICK_SVD_SHAPES = [(4, 8, 4)]
SPD_SHAPES = [(64, 16), (128, 32), (256, 64)]  # (batch, n) of issue 16's SPDNet step
QUICK_SPD_SHAPES = [(4, 6)]
ZCA_INPUT = (128, 64, 32, 32)  # ResNet-18 stem activation on CIFAR, batch 128
QUICK_ZCA_INPUT = (4, 16, 4, 4)
ZCA_GROUP_SIZES = (4, 16, 64)  # channels per group (the paper's d); capped at C
VJP_TARGET_SHAPE, VJP_TARGET_MS = (512, 32), 0.5
NOT_RUN = "–"
DEFAULT_TIME_LIMIT = 540.0  # seconds, for the whole run; the device lends 10 minutes a command

# --- hooks ----------------------------------------------------------------------------------
#
# Sections announced before they are written (name -> what they will time),
# listed at the end of the report. Each becomes one function decorated with
# @section(name, title, budget=...), placed in the file where its report
# position should be, and is removed from this table. Use the helpers the
# other sections use: _timer(ctx), _table, _ratio_lines, ctx.env.torch /
# ctx.env.cupy / ctx.env.torch_device, ctx.quick. (0.3's are all written.)
PENDING_SECTIONS: dict[str, str] = {}


@dataclass
class Environment:
    """What can run here, and why not where it cannot."""

    device: str
    cupy: Any = None
    torch: Any = None
    torch_device: str = "cpu"
    skipped: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass
class Context:
    """What every section gets: the environment and the run's options."""

    env: Environment
    dtype: str = "float32"
    rounds: int = 15
    quick: bool = False
    out: Path = Path("runs/gpu_check")
    test_paths: tuple[str, ...] = ("tests",)
    deadline: float = math.inf  # time.monotonic() at which the whole run must end

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return QUICK_SHAPES if self.quick else SHAPES

    @property
    def min_seconds(self) -> float:
        """How long one timed batch of calls lasts (shorter in quick mode)."""
        return 0.002 if self.quick else 0.02


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, *, budget: float, plan=None):
    """Register ``function(ctx) -> Markdown lines`` as the report section ``name``."""

    def register(function: Callable[[Context], list[str]]):
        SECTIONS[name] = Section(name, title, function, budget, plan)
        return function

    return register


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
            parts.insert(0, f"GPU: {_cupy_device_name(env.cupy)}")
    if device == "cpu":
        parts.insert(0, f"CPU only ({platform.machine()}), not GPU numbers")
    env.description = "; ".join(parts)
    return env


def _adapter(name: str):
    """``svdpi.<name>``, imported by name: an ``import svdpi.torch`` inside a function would
    make ``svdpi`` a local name there, unbound wherever the import is skipped."""
    return importlib.import_module(f"svdpi.{name}")


def _cupy_device_name(cupy) -> str:
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _timer(ctx: Context) -> Callable[[dict[str, Callable[[], object]]], dict]:
    env = ctx.env
    if env.device == "cuda":
        library = "torch" if env.torch is not None else "cupy"
        if library == "torch":
            sync = env.torch.cuda.synchronize
        else:
            sync = env.cupy.cuda.Device().synchronize

        def run(candidates):
            if not candidates:
                return {}
            return time_side_by_side_cuda(
                candidates,
                library=library,
                rounds=ctx.rounds,
                min_seconds=ctx.min_seconds,
                sync=sync,
            )

        return run

    def run_cpu(candidates):
        if not candidates:
            return {}
        return time_side_by_side(candidates, rounds=ctx.rounds, min_seconds=ctx.min_seconds)

    return run_cpu


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


def _explicit_library(env: Environment) -> str:
    return "CuPy" if env.device == "cuda" else "NumPy"


def _table(shape_label: str, rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    names = list(dict.fromkeys(name for _, times in rows for name in times))
    lines = [f"| {shape_label} | " + " | ".join(names) + " |"]
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


def _shape_label(shape) -> str:
    return " × ".join(map(str, shape))


# --- environment ----------------------------------------------------------------------------


def _nvidia_smi() -> list[tuple[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return [("nvidia-smi", "not found")]
    query = "name,driver_version,memory.total,compute_cap"
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return [("nvidia-smi", f"failed: {error}")]
    rows = result.stdout.strip().splitlines() or [result.stderr.strip() or "no output"]
    return [(f"nvidia-smi GPU {i}", row) for i, row in enumerate(rows)] + [
        ("nvidia-smi columns", query)
    ]


def _version_of(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except Exception as error:
        return f"not importable ({type(error).__name__})"
    return str(getattr(module, "__version__", "?"))


def _native_entry_points() -> str:
    """The adapters the core loads its fast paths from (svdpi's installed metadata)."""
    found = metadata.entry_points(group="svdpi.native")
    return ", ".join(sorted(f"{e.name} = {e.value}" for e in found)) or "none (generic paths only)"


def environment_rows(env: Environment) -> list[tuple[str, str]]:
    rows = [
        ("svdpi", f"{svdpi.__version__} ({Path(svdpi.__file__).parent})"),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("CPU", machine_description()),
        ("NumPy", np.__version__),
        ("array-api-compat", _version_of("array_api_compat")),
        ("svdpi.native entry points", _native_entry_points()),
    ]
    if env.device == "cuda":
        rows += _nvidia_smi()
    torch = env.torch
    if torch is not None:
        rows.append(("PyTorch", f"{torch.__version__} (CUDA {torch.version.cuda})"))
        if env.torch_device == "cuda":
            properties = torch.cuda.get_device_properties(0)
            rows += [
                ("PyTorch device", torch.cuda.get_device_name(0)),
                ("compute capability", "{}.{}".format(*torch.cuda.get_device_capability(0))),
                ("GPU memory", f"{properties.total_memory / 2**30:.1f} GiB"),
                ("cuDNN", str(torch.backends.cudnn.version())),
            ]
    cupy = env.cupy
    if cupy is not None:
        runtime = cupy.cuda.runtime
        rows += [
            ("CuPy", cupy.__version__),
            ("CuPy device", _cupy_device_name(cupy)),
            ("CUDA runtime (CuPy)", str(runtime.runtimeGetVersion())),
            ("CUDA driver API", str(runtime.driverGetVersion())),
        ]
        with contextlib.suppress(Exception):
            rows.append(("NVRTC (CuPy)", ".".join(map(str, cupy.cuda.nvrtc.getVersion()))))
    for name, why in env.skipped.items():
        rows.append((f"{name} skipped", why))
    return rows


@section("environment", "Environment", budget=60)
def section_environment(ctx: Context) -> list[str]:
    lines = ["| what | value |", "| --- | --- |"]
    lines += [
        f"| {what} | {value.replace('|', '/')} |" for what, value in environment_rows(ctx.env)
    ]
    return [*lines, ""]


# --- the GPU tests --------------------------------------------------------------------------


def _plan_tests(ctx: Context) -> list[str]:
    line = _gpu_tests.command(list(ctx.test_paths), ctx.out / JUNIT_NAME)
    return [f"- `{' '.join(line[1:])}` (in {ROOT})"]


@section("tests", "GPU tests", budget=270, plan=_plan_tests)
def section_tests(ctx: Context) -> list[str]:
    """pytest on every test that needs a GPU (``benchmarks/_gpu_tests.py`` selects them)."""
    left = min(SECTIONS["tests"].budget, ctx.deadline - time.monotonic())
    passed, counts, lines = _gpu_tests.run(
        list(ctx.test_paths),
        junit=ctx.out / JUNIT_NAME,
        log=ctx.out / TESTS_LOG_NAME,
        cwd=ROOT,
        timeout=max(10.0, left - 5),  # pytest stops before the section's alarm
    )
    if ctx.env.device == "cuda" and passed and counts["passed"] == 0:
        # On a GPU, every GPU test skipped is a check that checked nothing.
        lines = ["**No GPU test ran**: see the skip reasons.", "", *lines]
        passed = False
    if not passed:
        raise SectionFailed(lines)
    return lines


# --- timing sections ------------------------------------------------------------------------


def eig_candidates(env: Environment, batch: int, n: int, dtype: str) -> dict[str, Callable]:
    a_np, gw_np, gv_np = _problem(batch, n, dtype)
    candidates: dict[str, Callable] = {}
    xp, to_xp = _explicit_namespace(env)
    lib = _explicit_library(env)
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
        torch_adapter = _adapter("torch")

        a_t = torch.as_tensor(a_np, device=env.torch_device).requires_grad_()
        gw_t = torch.as_tensor(gw_np, device=env.torch_device)
        gv_t = torch.as_tensor(gv_np, device=env.torch_device)

        def svdpi_torch():
            w, v = torch_adapter.eig(a_t, check_finite=False)
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
    cupy_adapter = _adapter("cupy")

    a = env.cupy.asarray(_problem(batch, n, dtype)[0])
    candidates = {}
    for solver in cupy_adapter.SOLVERS:
        if solver == "syevd" and batch != 1:
            continue
        if solver == "syevd_loop" and batch == 1:
            continue  # the same call as syevd
        candidates[solver] = lambda solver=solver: cupy_adapter.solve_eigh(a, solver)
    return candidates


def sqrtm_candidates(env: Environment, batch: int, n: int, dtype: str) -> dict[str, Callable]:
    if env.torch is None:
        return {}
    torch = env.torch
    torch_adapter = _adapter("torch")

    a_np, _, g_np = _problem(batch, n, dtype)
    a = torch.as_tensor(a_np, device=env.torch_device).requires_grad_()
    g = torch.as_tensor(g_np + np.swapaxes(g_np, -1, -2), device=env.torch_device)

    def eigh_sqrtm(x):
        w, v = torch.linalg.eigh(x)
        return (v * w.clamp_min(0).sqrt()[..., None, :]) @ v.mT

    def step(function):
        return lambda: torch.autograd.grad(function(a), a, g)

    return {
        "svdpi exact": step(lambda x: torch_adapter.sqrtm(x, method="exact", check_finite=False)),
        "svdpi pi": step(lambda x: torch_adapter.sqrtm(x, method="pi", check_finite=False)),
        "eigh autograd": step(eigh_sqrtm),
    }


def zca_candidates(env: Environment, shape: tuple[int, ...], dtype: str) -> tuple[dict, str]:
    if env.torch is None:
        return {}, env.skipped.get("torch", "PyTorch unavailable")
    torch = env.torch
    torch_adapter = _adapter("torch")

    layer_class = torch_adapter.ZCAWhitening
    channels = shape[1]
    generator = torch.Generator().manual_seed(0)
    x_host = torch.randn(shape, generator=generator, dtype=getattr(torch, dtype))
    x = x_host.to(env.torch_device).requires_grad_()
    grad = torch.randn(shape, generator=generator, dtype=x.dtype).to(env.torch_device)
    layers = {"BatchNorm2d": torch.nn.BatchNorm2d(channels)}
    for group_size in ZCA_GROUP_SIZES:
        if group_size <= channels and channels % group_size == 0:
            layers[f"ZCA d={group_size}"] = layer_class(
                channels, num_groups=channels // group_size
            )
    candidates = {}
    for name, layer in layers.items():
        layer.to(device=env.torch_device, dtype=x.dtype).train()
        params = [x, *layer.parameters()]

        def step(layer=layer, params=params):
            return torch.autograd.grad(layer(x), params, grad)

        candidates[name] = step
    return candidates, ""


def _plan_shapes(candidates_for, shapes):
    def plan(ctx: Context) -> list[str]:
        lines = []
        for b, n in shapes(ctx):
            # The candidates depend on the shape only through the batch size (the
            # solvers): build them on tiny matrices so the plan is instant.
            names = list(candidates_for(ctx.env, min(b, 2), 2, ctx.dtype))
            lines.append(f"- {b} × {n}: " + (", ".join(names) or "nothing available"))
        return lines

    return plan


@section(
    "eig",
    "eig forward + VJP (and forward only)",
    budget=100,
    plan=_plan_shapes(eig_candidates, lambda ctx: ctx.shapes),
)
def section_eig(ctx: Context) -> list[str]:
    timer, lib = _timer(ctx), _explicit_library(ctx.env)
    rows = [(f"{b} × {n}", timer(eig_candidates(ctx.env, b, n, ctx.dtype))) for b, n in ctx.shapes]
    lines = _table("batch × n", rows)
    lines += _ratio_lines(
        rows, "torch eigh fwd+bwd", f"svdpi {lib} fwd+VJP", f"torch eigh autograd / svdpi {lib}:"
    )
    lines += _ratio_lines(
        rows, "torch eigh fwd", f"svdpi {lib} fwd", f"torch eigh fwd / svdpi {lib} fwd:"
    )
    lines += _ratio_lines(
        rows, "svdpi.torch generic fwd+bwd", "svdpi.torch fwd+bwd", "svdpi.torch generic / native:"
    )
    return [*lines, ""]


@section(
    "vjp",
    "eig_vjp alone",
    budget=60,
    plan=_plan_shapes(vjp_candidates, lambda ctx: ctx.shapes),
)
def section_vjp(ctx: Context) -> list[str]:
    lib, timer = _explicit_library(ctx.env), _timer(ctx)
    rows = [(f"{b} × {n}", timer(vjp_candidates(ctx.env, b, n, ctx.dtype))) for b, n in ctx.shapes]
    if not any(times for _, times in rows):
        return [f"Skipped: {ctx.env.skipped.get('cupy', 'no array library for the VJP')}", ""]
    lines = [f"The explicit VJP on {lib} arrays.", "", *_table("batch × n", rows)]
    lines += _ratio_lines(rows, "eig_vjp generic", "eig_vjp fused", "generic / fused:")
    for label, times in rows:
        if label == _shape_label(VJP_TARGET_SHAPE) and "eig_vjp fused" in times:
            ms = times["eig_vjp fused"] * 1e3
            verdict = "met" if ms < VJP_TARGET_MS else "NOT met"
            lines.append(f"- target eig_vjp {label} < {VJP_TARGET_MS} ms: {verdict}")
    return [*lines, ""]


@section(
    "solvers",
    "CuPy eigensolvers (forward only)",
    budget=60,
    plan=_plan_shapes(solver_candidates, lambda ctx: ctx.shapes),
)
def section_solvers(ctx: Context) -> list[str]:
    if ctx.env.cupy is None:
        return [f"Skipped: {ctx.env.skipped.get('cupy')}", ""]
    cupy_adapter = _adapter("cupy")

    timer = _timer(ctx)
    rows, verdicts = [], []
    for b, n in ctx.shapes:
        times = timer(solver_candidates(ctx.env, b, n, ctx.dtype))
        label = f"{b} × {n}"
        rows.append((label, times))
        fastest = min(times, key=times.get)
        chosen = cupy_adapter.choose_eigh_solver(b, n)
        ok = "yes" if chosen == fastest else f"no ({times[chosen] / times[fastest]:.2f}x)"
        verdicts.append(f"- {label}: fastest {fastest}, policy picks {chosen}: {ok}")
    return [
        *_table("batch × n", rows),
        *verdicts,
        f"- thresholds: SYEVJ_BATCHED_MAX_N = {cupy_adapter.SYEVJ_BATCHED_MAX_N}, "
        f"SYEVD_LOOP_MAX_BATCH = {cupy_adapter.SYEVD_LOOP_MAX_BATCH}",
        "",
    ]


def _sqrtm_shapes(ctx: Context) -> list[tuple[int, int]]:
    return QUICK_SQRTM_SHAPES if ctx.quick else SQRTM_SHAPES


@section(
    "sqrtm",
    "svdpi.torch.sqrtm vs eigh autograd, forward + backward",
    budget=60,
    plan=_plan_shapes(sqrtm_candidates, _sqrtm_shapes),
)
def section_sqrtm(ctx: Context) -> list[str]:
    if ctx.env.torch is None:
        return [f"Skipped: {ctx.env.skipped.get('torch', 'PyTorch unavailable')}", ""]
    timer = _timer(ctx)
    rows = [
        (f"{b} × {n}", timer(sqrtm_candidates(ctx.env, b, n, ctx.dtype)))
        for b, n in _sqrtm_shapes(ctx)
    ]
    lines = _table("batch × n", rows)
    for name in ("svdpi exact", "svdpi pi"):
        lines += _ratio_lines(rows, name, "eigh autograd", f"{name} / eigh autograd:")
    return [*lines, ""]


def _namespace_of(x):
    return array_api_compat.array_namespace(x)


# A tanh written against the array API: one Custom serves torch, CuPy and NumPy.
def _tanh(x):
    return _namespace_of(x).tanh(x)


def _tanh_derivative(x):
    t = _namespace_of(x).tanh(x)
    return 1 - t * t


def _tanh_second_derivative(x):
    t = _namespace_of(x).tanh(x)
    return -2 * t * (1 - t * t)


#: The functions of the spectral section (one instance each: a Custom is a new
#: graph constant per instance, as it hashes by its callables).
SPECTRAL_FUNCTIONS = {
    "sqrt": functions.Power(0.5),
    "log": functions.Log(),
    "exp": functions.Exp(),
    "clamp": functions.Clamp(0.5),
    "custom tanh": functions.Custom(_tanh, _tanh_derivative, _tanh_second_derivative),
}


def _torch_scalar(torch, name: str) -> Callable:
    """The function of the eigenvalues, with torch operations (for autograd through eigh)."""
    return {
        "sqrt": torch.sqrt,
        "log": torch.log,
        "exp": torch.exp,
        "clamp": lambda w: w.clamp_min(0.5),
        "custom tanh": torch.tanh,
    }[name]


def spectral_candidates(
    env: Environment, batch: int, n: int, dtype: str, name: str
) -> dict[str, Callable]:
    """One function's forward + backward and double backward, svdpi.torch against eigh autograd.

    And, on CuPy (NumPy on the CPU), ``svdpi.eig`` + ``spectral_map`` +
    ``spectral_map_vjp`` and ``spectral_map_hvp``.
    """
    a_np, _, g_np = _problem(batch, n, dtype)
    g_np = g_np + np.swapaxes(g_np, -1, -2)
    h_np = np.swapaxes(g_np, -2, -1)[..., ::-1, :].copy()  # another symmetric direction
    candidates: dict[str, Callable] = {}
    if env.torch is not None:
        torch = env.torch
        torch_adapter = _adapter("torch")
        fn, scalar = SPECTRAL_FUNCTIONS[name], _torch_scalar(torch, name)
        a = torch.as_tensor(a_np, device=env.torch_device).requires_grad_()
        g = torch.as_tensor(g_np, device=env.torch_device)
        h = torch.as_tensor(h_np + np.swapaxes(h_np, -1, -2), device=env.torch_device)

        def through_eigh(x):
            w, v = torch.linalg.eigh(x)
            return (v * scalar(w)[..., None, :]) @ v.mT

        def svdpi_map(x):
            return torch_adapter.spectral_map(x, fn, check_finite=False)

        def first(function):
            return lambda: torch.autograd.grad(function(a), a, g)

        def second(function):
            def run():
                (grad,) = torch.autograd.grad(function(a), a, g, create_graph=True)
                return torch.autograd.grad(grad, a, h)

            return run

        candidates["svdpi fwd+bwd"] = first(svdpi_map)
        candidates["eigh autograd fwd+bwd"] = first(through_eigh)
        candidates["svdpi double bwd"] = second(svdpi_map)
        candidates["eigh double bwd"] = second(through_eigh)
    xp, to_xp = _explicit_namespace(env)
    if xp is not None:
        fn = SPECTRAL_FUNCTIONS[name]
        lib = _explicit_library(env)
        a_x, g_x, h_x = to_xp(a_np), to_xp(g_np), to_xp(h_np)
        w, v = svdpi.eig(a_x, check_finite=False)

        def explicit():
            w_, v_ = svdpi.eig(a_x, check_finite=False)
            svdpi.spectral_map(w_, v_, fn)
            return svdpi.spectral_map_vjp(w_, v_, fn, g_x)

        candidates[f"svdpi {lib} fwd+VJP"] = explicit
        candidates[f"svdpi {lib} hvp"] = lambda: svdpi.spectral_map_hvp(w, v, fn, g_x, h_x)
    return candidates


def _relative(actual, expected) -> float:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if not np.all(np.isfinite(actual)):
        return math.inf
    return float(np.max(np.abs(actual - expected))) / (scale or 1.0)


def spectral_agreement(env: Environment, name: str) -> dict[str, float]:
    """Largest relative difference, float64, of value / VJP / HVP on the device from the CPU's."""
    batch, n = SPECTRAL_CHECK_SHAPE
    a_np, _, g_np = _problem(batch, n, "float64", seed=1)
    g_np = g_np + np.swapaxes(g_np, -1, -2)
    h_np = np.swapaxes(g_np, -2, -1)[..., ::-1, :].copy()
    result: dict[str, float] = {}
    if env.torch is not None:
        torch = env.torch
        torch_adapter = _adapter("torch")
        fn = SPECTRAL_FUNCTIONS[name]

        def outputs(device):
            a = torch.as_tensor(a_np, device=device).requires_grad_()
            g, h = (torch.as_tensor(x, device=device) for x in (g_np, h_np))
            value = torch_adapter.spectral_map(a, fn)
            (grad,) = torch.autograd.grad(value, a, g, create_graph=True)
            (hvp,) = torch.autograd.grad(grad, a, h)
            return [x.detach().cpu().numpy() for x in (value, grad, hvp)]

        device, host = outputs(env.torch_device), outputs("cpu")
        for part, x, y in zip(("value", "VJP", "HVP"), device, host, strict=True):
            result[f"torch {part}"] = _relative(x, y)
    xp, to_xp = _explicit_namespace(env)
    if xp is not None:
        fn = SPECTRAL_FUNCTIONS[name]

        def explicit(to_array, to_host):
            a, g, h = (to_array(x) for x in (a_np, g_np, h_np))
            w, v = svdpi.eig(a)
            parts = (
                svdpi.spectral_map(w, v, fn),
                svdpi.spectral_map_vjp(w, v, fn, g),
                svdpi.spectral_map_hvp(w, v, fn, g, h),
            )
            return [to_host(x) for x in parts]

        lib = _explicit_library(env)
        to_host = env.cupy.asnumpy if env.device == "cuda" else np.asarray
        device = explicit(to_xp, to_host)
        host = explicit(np.asarray, np.asarray)
        for part, x, y in zip(("value", "VJP", "HVP"), device, host, strict=True):
            result[f"{lib} {part}"] = _relative(x, y)
    return result


def _spectral_shapes(ctx: Context) -> list[tuple[int, int]]:
    return QUICK_SPECTRAL_SHAPES if ctx.quick else SPECTRAL_SHAPES


def _plan_spectral(ctx: Context) -> list[str]:
    names = list(SPECTRAL_FUNCTIONS)
    candidates = list(spectral_candidates(ctx.env, 1, 2, ctx.dtype, names[0]))
    shapes = ", ".join(_shape_label(shape) for shape in _spectral_shapes(ctx))
    return [
        f"- functions {', '.join(names)} at {shapes}: " + (", ".join(candidates) or "nothing"),
        f"- float64 agreement with the CPU at {_shape_label(SPECTRAL_CHECK_SHAPE)}",
    ]


@section(
    "spectral",
    "Spectral maps: forward + backward, double backward, agreement with the CPU (issue 15)",
    budget=120,
    plan=_plan_spectral,
)
def section_spectral(ctx: Context) -> list[str]:
    timer = _timer(ctx)
    names = list(SPECTRAL_FUNCTIONS)
    rows = [
        (
            f"{_shape_label(shape)} {name}",
            timer(spectral_candidates(ctx.env, *shape, ctx.dtype, name)),
        )
        for shape in _spectral_shapes(ctx)
        for name in names
    ]
    if not any(times for _, times in rows):
        return [f"Skipped: {'; '.join(ctx.env.skipped.values()) or 'nothing available'}", ""]
    lines = _table("batch × n function", rows)
    lines += _ratio_lines(rows, "svdpi fwd+bwd", "eigh autograd fwd+bwd", "svdpi / eigh autograd:")
    lines += _ratio_lines(
        rows, "svdpi double bwd", "eigh double bwd", "svdpi / eigh, double backward:"
    )
    agreement = [(name, spectral_agreement(ctx.env, name)) for name in names]
    columns = list(dict.fromkeys(key for _, parts in agreement for key in parts))
    lines += [
        "",
        f"Largest relative difference from the CPU, float64, {_shape_label(SPECTRAL_CHECK_SHAPE)} "
        "(on the CPU: the CPU against itself):",
        "",
        "| function | " + " | ".join(columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
    ]
    for name, parts in agreement:
        cells = [f"{parts[key]:.1e}" if key in parts else NOT_RUN for key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    worst = max((value for _, parts in agreement for value in parts.values()), default=0.0)
    lines += ["", f"- worst: {worst:.1e} (limit 1e-10)", ""]
    if worst > 1e-10:
        raise SectionFailed(lines)
    return lines


def _zca_input(ctx: Context) -> tuple[int, ...]:
    return QUICK_ZCA_INPUT if ctx.quick else ZCA_INPUT


def _plan_zca(ctx: Context) -> list[str]:
    zca_input = _zca_input(ctx)
    zca, reason = zca_candidates(ctx.env, (2, zca_input[1], 2, 2), ctx.dtype)
    return ["- ZCA input {}: {}".format(zca_input, ", ".join(zca) or f"skipped: {reason}")]


@section(
    "zca", "ZCA whitening layer vs BatchNorm2d, forward + backward", budget=60, plan=_plan_zca
)
def section_zca(ctx: Context) -> list[str]:
    zca_input = _zca_input(ctx)
    zca, reason = zca_candidates(ctx.env, zca_input, ctx.dtype)
    if not zca:
        return [f"Skipped: {reason}", ""]
    rows = [(_shape_label(zca_input), _timer(ctx)(zca))]
    lines = _table("input", rows)
    lines += [
        line
        for name in zca
        if name != "BatchNorm2d"
        for line in _ratio_lines(rows, name, "BatchNorm2d", f"{name} / BatchNorm2d:")
    ]
    return [*lines, ""]


def svd_candidates(env: Environment, shape: tuple[int, int, int], dtype: str) -> dict:
    """svdpi's SVD forward + backward (U, S, Vh all differentiated) against torch's."""
    batch, m, n = shape
    k = min(m, n)
    rng = np.random.default_rng(0)
    a_np, gu_np, gs_np, gvh_np = (
        rng.standard_normal(size).astype(dtype)
        for size in ((batch, m, n), (batch, m, k), (batch, k), (batch, k, n))
    )
    candidates: dict[str, Callable] = {}
    xp, to_xp = _explicit_namespace(env)
    if xp is not None:
        a, gu, gs, gvh = (to_xp(x) for x in (a_np, gu_np, gs_np, gvh_np))

        def explicit():
            u, s, vh = svdpi.svd(a, check_finite=False)
            return svdpi.svd_vjp(u, s, vh, gu, gs, gvh)

        candidates[f"svdpi {_explicit_library(env)} fwd+VJP"] = explicit
    if env.torch is not None:
        torch = env.torch
        torch_adapter = _adapter("torch")
        a_t, gu_t, gs_t, gvh_t = (
            torch.as_tensor(x, device=env.torch_device) for x in (a_np, gu_np, gs_np, gvh_np)
        )
        a_t.requires_grad_()

        def svdpi_torch():
            outputs = torch_adapter.svd(a_t, check_finite=False)
            return torch.autograd.grad(outputs, a_t, (gu_t, gs_t, gvh_t))

        def svd_autograd():
            outputs = torch.linalg.svd(a_t, full_matrices=False)
            return torch.autograd.grad(outputs, a_t, (gu_t, gs_t, gvh_t))

        candidates["svdpi.torch fwd+bwd"] = svdpi_torch
        candidates["torch svd fwd+bwd"] = svd_autograd
    return candidates


def _svd_shapes(ctx: Context) -> list[tuple[int, int, int]]:
    return QUICK_SVD_SHAPES if ctx.quick else SVD_SHAPES


def _plan_svd(ctx: Context) -> list[str]:
    names = list(svd_candidates(ctx.env, (1, 2, 2), ctx.dtype))
    return [
        f"- {_shape_label(shape)}: " + (", ".join(names) or "nothing available")
        for shape in _svd_shapes(ctx)
    ]


@section("svd", "SVD forward + backward (issue 17)", budget=60, plan=_plan_svd)
def section_svd(ctx: Context) -> list[str]:
    timer = _timer(ctx)
    rows = [
        (_shape_label(shape), timer(svd_candidates(ctx.env, shape, ctx.dtype)))
        for shape in _svd_shapes(ctx)
    ]
    lines = _table("batch × m × n", rows)
    lines += _ratio_lines(
        rows, "svdpi.torch fwd+bwd", "torch svd fwd+bwd", "svdpi.torch / torch svd (target 1.2):"
    )
    return [*lines, ""]


def spd_candidates(env: Environment, shape: tuple[int, int], dtype: str) -> dict:
    """An SPDNet step, BiMap → ReEig → LogEig, forward + backward to the BiMap weight."""
    if env.torch is None:
        return {}
    torch = env.torch
    spd = _adapter("torch").spd
    batch, n = shape
    k = max(n // 2, 1)
    a_np, _, _ = _problem(batch, n, dtype)
    x = torch.as_tensor(a_np, device=env.torch_device)
    generator = np.random.default_rng(1)
    cotangent = generator.standard_normal((batch, k * (k + 1) // 2)).astype(dtype)
    cotangent = torch.as_tensor(cotangent, device=env.torch_device)
    factory = {"device": env.torch_device, "dtype": x.dtype}

    def svdpi_model(checked: bool):
        checks = {} if checked else {"check_finite": False}
        return torch.nn.Sequential(
            spd.BiMap(n, k, **factory),
            spd.ReEig(1e-4, **checks),
            spd.LogEig(vectorize=True, check_spd=checked, **checks),
        )

    def eigh_map(a, f):
        w, v = torch.linalg.eigh(a)
        return (v * f(w).unsqueeze(-2)) @ v.mT

    class EighModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bimap = spd.BiMap(n, k, **factory)

        def forward(self, a):
            y = eigh_map(self.bimap(a), lambda w: w.clamp_min(1e-4))
            return spd.functional.vectorize(eigh_map(y, torch.log))

    models = {
        "svdpi.torch.spd": svdpi_model(checked=True),
        "svdpi.torch.spd unchecked": svdpi_model(checked=False),
        "eigh autograd": EighModel(),
    }
    try:
        from spd_learn.modules import BiMap, LogEig, ReEig
    except ImportError:
        pass
    else:
        models["spd_learn"] = torch.nn.Sequential(
            BiMap(n, k, **factory), ReEig(threshold=1e-4), LogEig(upper=True, flatten=True)
        )
    candidates = {}
    for name, model in models.items():
        parameters = list(model.parameters())

        def step(model=model, parameters=parameters):
            return torch.autograd.grad(model(x), parameters, cotangent)

        candidates[name] = step
    return candidates


def _spd_shapes(ctx: Context) -> list[tuple[int, int]]:
    return QUICK_SPD_SHAPES if ctx.quick else SPD_SHAPES


def _plan_spd(ctx: Context) -> list[str]:
    names = list(spd_candidates(ctx.env, (2, 2), ctx.dtype))
    if not names:
        return [f"- skipped: {ctx.env.skipped.get('torch', 'PyTorch unavailable')}"]
    return [f"- {b} × {n}: " + ", ".join(names) for b, n in _spd_shapes(ctx)]


@section("spd", "SPDNet training step (issue 16)", budget=60, plan=_plan_spd)
def section_spd(ctx: Context) -> list[str]:
    if ctx.env.torch is None:
        return [f"Skipped: {ctx.env.skipped.get('torch', 'PyTorch unavailable')}", ""]
    timer = _timer(ctx)
    rows = [
        (f"{b} × {n}", timer(spd_candidates(ctx.env, (b, n), ctx.dtype)))
        for b, n in _spd_shapes(ctx)
    ]
    lines = [
        "BiMap(n, n/2) → ReEig(1e-4) → LogEig, forward + backward to the BiMap weight; "
        "'unchecked': without the input checks that read values on the host.",
        "",
        *_table("batch × n", rows),
    ]
    for name in ("svdpi.torch.spd", "svdpi.torch.spd unchecked"):
        lines += _ratio_lines(rows, name, "eigh autograd", f"{name} / eigh autograd:")
        lines += _ratio_lines(rows, name, "spd_learn", f"{name} / spd_learn:")
    return [*lines, ""]


# New sections go above this line: see PENDING_SECTIONS.


# --- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds")
    parser.add_argument("--dry-run", action="store_true", help="write the plan, time nothing")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, in report order (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated sections to leave out, e.g. tests"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help="seconds for the whole run; sections that would start later are not run",
    )
    parser.add_argument(
        "--test-paths",
        nargs="+",
        default=["tests"],
        help="what the tests section hands pytest (relative to the repository root)",
    )
    arguments = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(arguments)
    if args.list:
        for spec in SECTIONS.values():
            print(f"{spec.name:12} {spec.title} (budget {spec.budget:.0f} s)")
        for name, what in PENDING_SECTIONS.items():
            print(f"{name:12} not yet: {what}")
        return 0
    names = [name for name in args.sections.split(",") if name]
    skip = {name for name in args.skip.split(",") if name}
    unknown = sorted((set(names) | skip) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; the sections are {', '.join(SECTIONS)}")
    names = [name for name in names if name not in skip]

    env = detect(args.device)
    if args.device == "cuda" and env.cupy is None and env.torch is None:
        print(
            "error: no CUDA device through CuPy or PyTorch "
            f"({'; '.join(env.skipped.values())}); use --device cpu to check the script",
            file=sys.stderr,
        )
        return 2
    ctx = Context(
        env=env,
        dtype=args.dtype,
        rounds=3 if args.quick else args.rounds,
        quick=args.quick,
        out=args.out,
        test_paths=tuple(args.test_paths),
        deadline=time.monotonic() + args.time_limit,
    )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "# svdpi GPU check" + (": plan (dry run, nothing timed)" if args.dry_run else ""),
        "",
        f"{env.description}. {now}.",
        "",
        f"Timings: {args.dtype}, num_iters = 19, all eigenpairs differentiated; median of "
        f"{ctx.rounds} interleaved rounds "
        f"({'CUDA events' if args.device == 'cuda' else 'wall clock'}), after warm-up. "
        f"Time limit {args.time_limit:.0f} s. Command: `gpu_check.py {' '.join(arguments)}`",
        "",
    ]
    footer = []
    if PENDING_SECTIONS:
        footer = [
            "Not covered yet (hooks in `benchmarks/gpu_check.py`, `PENDING_SECTIONS`):",
            "",
            *(f"- {name}: {what}" for name, what in PENDING_SECTIONS.items()),
            "",
        ]
    sections = [SECTIONS[name] for name in names]
    if args.dry_run:
        report = Report(args.out / PLAN_NAME, header, sections, footer)
        for spec in sections:
            report.bodies[spec.name] = [*(spec.plan(ctx) if spec.plan else ["- runs"]), ""]
            report.status[spec.name] = ("planned", None)
        report.write()
        print(report.text())
        print(f"written: {report.path}")
        return 0
    report = Report(args.out / REPORT_NAME, header, sections, footer)
    passed = run_sections(ctx, report, deadline=ctx.deadline)
    print(report.text())
    print(f"written: {report.path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
