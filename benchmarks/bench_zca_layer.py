"""Training step of svdpi.torch.ZCAWhitening against BatchNorm2d and the paper's loop layer.

Everything is measured side by side in one run: ``nn.BatchNorm2d`` (the layer
ZCA whitening replaces), ``ZCAWhitening`` for ``num_groups`` 16, 8, 4, 1
(group size d = 4, 8, 16, 64 at C = 64), and the paper's layer written
literally (a Python loop over groups and over eigenvectors,
``tests/paper_layers.py``) at the same group sizes. The layers are timed
round-robin with ``torch.utils.benchmark`` (medians), so that a load from
other processes hits them alike; ratios are per round, then the median:
against BatchNorm2d, and of the loop layer over ZCAWhitening.

Run from the repository root: ``python benchmarks/bench_zca_layer.py``
(``--quick`` for a shorter run; ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import platform
import statistics
import sys

import torch
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--no-loop", action="store_true", help="skip the paper's loop layer")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rounds, min_run_time = (2, 0.2) if args.quick else (5, 0.4)
    paper_layers = _load_paper_layers()
    torch.manual_seed(0)
    channels = 64
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"Training step (forward + backward), float32, device={device} "
        f"({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {rounds} round-robin rounds"
    )
    header = f"{'shape':>14} {'layer':>22} {'d':>3} {'ms':>9} {'/ BN2d':>7} {'loop/ZCA':>9}"
    print(header)
    print("-" * len(header))
    for batch in (128, 16):
        shape = (batch, channels, 32, 32)
        x = torch.randn(shape, device=device)
        layers = {"BatchNorm2d": torch.nn.BatchNorm2d(channels)}
        for groups in (16, 8, 4, 1):
            layers[f"ZCAWhitening(G={groups})"] = svdpi.torch.ZCAWhitening(
                channels, num_groups=groups
            )
            if not args.no_loop:
                layers[f"paper loop(G={groups})"] = paper_layers.PaperZCALayer(channels, groups)
        steps = {k: make_step(layer.to(device), x) for k, layer in layers.items()}
        times = measure(steps, rounds, min_run_time)
        bn = times["BatchNorm2d"]
        label = "x".join(map(str, shape))
        for key, values in times.items():
            d = "" if key == "BatchNorm2d" else channels // int(key.split("=")[1][:-1])
            ratio = _median([t / b for t, b in zip(values, bn, strict=True)])
            line = f"{label:>14} {key:>22} {d:>3} {_median(values) * 1e3:9.2f} {ratio:7.2f}"
            if key.startswith("paper"):
                zca = times[key.replace("paper loop", "ZCAWhitening")]
                loop_ratio = _median([t / z for t, z in zip(values, zca, strict=True)])
                line += f" {loop_ratio:9.2f}"
            print(line)
            label = ""


if __name__ == "__main__":
    main()
