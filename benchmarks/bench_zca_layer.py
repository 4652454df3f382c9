"""Training step of svdpi.torch.ZCAWhitening against BatchNorm2d, the paper's layer, DBN, IterNorm.

Everything is measured side by side in one run: ``nn.BatchNorm2d`` (the layer
ZCA whitening replaces), ``ZCAWhitening`` for ``num_groups`` 16, 8, 4, 1
(group size d = 4, 8, 16, 64 at C = 64), the paper's layer written
literally (a Python loop over groups and over eigenvectors,
``tests/paper_layers.py``) at the same group sizes, and the whitening
layers a user would pick instead, written from their papers
(``benchmarks/_reference_whitening.py``): DBN (Huang et al., CVPR 2018;
autograd through ``torch.linalg.eigh``) and IterNorm (Huang et al., CVPR
2019; T = 5 Newton steps). The layers are timed round-robin with
``torch.utils.benchmark`` (medians), so that a load from other processes
hits them alike; ratios are per round, then the median: against
BatchNorm2d (``/ BN2d``), and against ZCAWhitening (``method="pi"``) with the
same number of groups (``/ ZCA``; ``ZCA exact`` is ZCAWhitening with
``method="exact"``, where the layer accepts it).

A second table gives each layer's whitening error against exact ZCA (the
float64 eigendecomposition, same ``eps``) on channels mixed so that their
covariance has condition number κ: the relative error of the output and
``max |cov(y) − I|`` within the groups. ``--plot FILE`` draws both tables.

Run from the repository root: ``python benchmarks/bench_zca_layer.py``
(``--quick`` for a smoke test on small inputs; ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import platform
import statistics
import sys

import torch
from _reference_whitening import DBN, IterNorm, exact_zca
from torch.utils import benchmark

import svdpi.torch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_paper_layers():
    # Loaded by path: tests/ is not a package on sys.path, and backends/ must
    # never be (its torch/ folder would shadow PyTorch).
    for name in ("paper_reference", "paper_layers"):
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def make_step(layer, x):
    """A closure running ``layer(x)`` forward + backward (with an input gradient)."""
    x = x.detach().clone().requires_grad_(True)
    grad = torch.randn_like(x)

    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad)
        if x.is_cuda:
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (allocator, LAPACK/MKL workspaces)
        step()
    return step


def measure(steps, rounds, min_run_time):
    """Median seconds per step of each closure, timed round-robin.

    Other processes share the machine: timing the layers in turns, round
    after round, exposes them to the same load, and the ratios are taken
    per round before the median.
    """
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            timer = benchmark.Timer("step()", globals={"step": step})
            times[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
    return times


def _median(values):
    return statistics.median(values)


GROUPS = (16, 8, 4, 1)
EPS = 1e-4  # ZCAWhitening's default; every layer gets the same for the error table


def make_layers(channels, *, with_loop, paper_layers):
    """The timed layers, by row label (``G=`` gives the number of groups)."""
    layers = {"BatchNorm2d": torch.nn.BatchNorm2d(channels)}
    for groups in GROUPS:
        layers[f"ZCAWhitening(G={groups})"] = svdpi.torch.ZCAWhitening(channels, num_groups=groups)
        try:
            exact = svdpi.torch.ZCAWhitening(channels, num_groups=groups, method="exact")
        except ValueError:  # a version of the layer without the exact gradient
            pass
        else:
            layers[f"ZCA exact(G={groups})"] = exact
        if with_loop:
            layers[f"paper loop(G={groups})"] = paper_layers.PaperZCALayer(channels, groups)
    for groups in GROUPS:
        layers[f"DBN(G={groups})"] = DBN(channels, groups, eps=EPS)
    for groups in GROUPS:
        layers[f"IterNorm(G={groups})"] = IterNorm(channels, groups, eps=EPS, iterations=5)
    return layers


def whitening_layers(channels, groups):
    """The layers of the error table, at one group count, with the same ``eps``."""
    return {
        "ZCAWhitening": svdpi.torch.ZCAWhitening(channels, num_groups=groups, eps=EPS),
        "DBN": DBN(channels, groups, eps=EPS),
        "IterNorm(T=5)": IterNorm(channels, groups, eps=EPS, iterations=5),
    }


def mixed_input(shape, condition, seed=0):
    """Gaussian channels mixed so that their covariance has condition number ``condition``."""
    generator = torch.Generator().manual_seed(seed)
    c = shape[1]
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
    scales = torch.logspace(0, -0.5 * math.log10(condition), c, dtype=torch.float64)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    return torch.einsum("dc,nc...->nd...", q * scales, x)


def whitening_error(y, reference, groups):
    """(relative output error, max |cov(y) − I| within the groups), in float64."""
    y = y.double()
    relative = float((y - reference).norm() / reference.norm())
    c = y.shape[1]
    columns = y.transpose(0, 1).reshape(groups, c // groups, -1)
    centred = columns - columns.mean(-1, keepdim=True)
    cov = centred @ centred.mT / centred.shape[-1]
    eye = torch.eye(c // groups, dtype=cov.dtype)
    return relative, float((cov - eye).abs().max())


def error_table(shape, conditions, device):
    """``{(groups, κ): {layer: (relative error, max |cov − I|)}}`` for float32 layers."""
    results = {}
    for groups in GROUPS:
        for condition in conditions:
            x64 = mixed_input(shape, condition)
            reference = exact_zca(x64, groups, EPS)
            x = x64.float().to(device)
            row = {}
            for name, layer in whitening_layers(shape[1], groups).items():
                with torch.no_grad():
                    y = layer.to(device).train()(x).cpu()
                row[name] = whitening_error(y, reference, groups)
            results[groups, condition] = row
    return results


def plot(path, timing, errors, channels, size):
    """Time / BatchNorm2d against d, and output error against κ, one line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    batch = max(timing)
    for family, marker in (("ZCAWhitening", "o"), ("DBN", "s"), ("IterNorm", "^")):
        ds = [channels // g for g in GROUPS]
        ratios = [timing[batch][f"{family}(G={g})"] for g in GROUPS]
        left.plot(ds, ratios, marker=marker, label=family)
    left.axhline(1.0, color="grey", lw=0.8, ls="--", label="BatchNorm2d")
    left.set(
        xscale="log",
        xlabel="group size d",
        ylabel="training-step time / BatchNorm2d",
        title=f"time, batch {batch} × {channels} × {size} × {size}, float32",
    )
    left.minorticks_off()
    left.set_xticks([channels // g for g in GROUPS], [str(channels // g) for g in GROUPS])
    left.legend()
    conditions = sorted({k for _, k in errors})
    for name, color in (("ZCAWhitening", "C0"), ("DBN", "C1"), ("IterNorm(T=5)", "C2")):
        for groups, style in ((4, "-o"), (1, "--^")):
            values = [max(errors[groups, k][name][0], 1e-8) for k in conditions]
            label = f"{name}, d = {channels // groups}"
            right.plot(conditions, values, style, color=color, label=label)
    right.set(
        xscale="log",
        yscale="log",
        xlabel="condition number κ of the channel covariance",
        ylabel="relative error of the output vs exact ZCA",
        title="whitening error, float32",
    )
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small inputs, short rounds")
    parser.add_argument("--no-loop", action="store_true", help="skip the paper's loop layer")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--plot", type=pathlib.Path, help="write a PNG of both tables here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        rounds, min_run_time, batches, size = 2, 0.02, (16, 4), 8
        error_shape, conditions = (16, 64, 8, 8), (1, 100)
    else:
        rounds, min_run_time, batches, size = 5, 0.4, (128, 16), 32
        error_shape, conditions = (64, 64, 16, 16), (1, 10, 100, 1000, 10000)
    paper_layers = _load_paper_layers()
    torch.manual_seed(0)
    channels = 64
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"Training step (forward + backward), float32, device={device} "
        f"({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {rounds} round-robin rounds"
    )
    header = f"{'shape':>14} {'layer':>22} {'d':>3} {'ms':>9} {'/ BN2d':>7} {'/ ZCA':>9}"
    print(header)
    print("-" * len(header))
    timing = {}
    for batch in batches:
        shape = (batch, channels, size, size)
        x = torch.randn(shape, device=device)
        layers = make_layers(channels, with_loop=not args.no_loop, paper_layers=paper_layers)
        steps = {k: make_step(layer.to(device), x) for k, layer in layers.items()}
        times = measure(steps, rounds, min_run_time)
        bn = times["BatchNorm2d"]
        label = "x".join(map(str, shape))
        timing[batch] = {}
        for key, values in times.items():
            d = "" if key == "BatchNorm2d" else channels // int(key.split("=")[1][:-1])
            ratio = _median([t / b for t, b in zip(values, bn, strict=True)])
            timing[batch][key] = ratio
            line = f"{label:>14} {key:>22} {d:>3} {_median(values) * 1e3:9.2f} {ratio:7.2f}"
            if key != "BatchNorm2d" and not key.startswith("ZCAWhitening"):
                zca = times["ZCAWhitening(" + key.split("(")[1]]
                zca_ratio = _median([t / z for t, z in zip(values, zca, strict=True)])
                line += f" {zca_ratio:9.2f}"
            print(line, flush=True)
            label = ""
    errors = error_table(error_shape, conditions, device)
    print(
        f"\nWhitening error against exact ZCA (float64 eigh, eps={EPS}), float32 layers in "
        f"training mode, input {'x'.join(map(str, error_shape))} with channels mixed to a "
        "covariance of condition number κ: relative error of the output / max |cov(y) − I| "
        "within the groups"
    )
    names = list(whitening_layers(channels, 1))
    header = f"{'d':>3} {'κ':>7} " + " ".join(f"{n:>22}" for n in names)
    print(header)
    print("-" * len(header))
    for (groups, condition), row in errors.items():
        cells = " ".join(f"{row[n][0]:>10.1e} / {row[n][1]:>9.1e}" for n in names)
        print(f"{channels // groups:>3} {condition:>7.0e} {cells}")
    if args.plot is not None:
        plot(args.plot, timing, errors, channels, size)
        print(f"\nplot written: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
