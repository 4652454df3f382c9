"""Training step of svdpi.torch.ZCAWhitening against BatchNorm2d and the paper's loop layer.

Everything is measured side by side in one run: ``nn.BatchNorm2d`` (the layer
ZCA whitening replaces), ``ZCAWhitening`` for ``num_groups`` 16, 8, 4, 1
(group size d = 4, 8, 16, 64 at C = 64), and the paper's layer written
literally (a Python loop over groups and over eigenvectors,
``tests/paper_layers.py``) at the same group sizes. Medians of
``torch.utils.benchmark`` timings; ratios are against BatchNorm2d and, for
the loop layer, of the loop over ZCAWhitening.

Run from the repository root: ``python benchmarks/bench_zca_layer.py``
(``--quick`` for a shorter run; ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import platform
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


def time_step(layer, x, min_run_time):
    """Median seconds of ``layer(x)`` forward + backward (with an input gradient)."""
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
    timer = benchmark.Timer("step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--no-loop", action="store_true", help="skip the paper's loop layer")
    args = parser.parse_args()
    device = torch.device(args.device)
    min_run_time = 0.3 if args.quick else 1.0
    paper_layers = _load_paper_layers()
    torch.manual_seed(0)
    channels = 64
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"ZCAWhitening training step (forward + backward), float32, device={device} "
        f"({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    header = f"{'shape':>18} {'layer':>24} {'d':>3} {'ms':>9} {'/ BN2d':>8} {'loop / ZCA':>11}"
    print(header)
    print("-" * len(header))
    for batch in (128, 16):
        shape = (batch, channels, 32, 32)
        x = torch.randn(shape, device=device)
        bn = torch.nn.BatchNorm2d(channels).to(device)
        t_bn = time_step(bn, x, min_run_time)
        label = "x".join(map(str, shape))
        print(f"{label:>18} {'BatchNorm2d':>24} {'':>3} {t_bn * 1e3:9.2f} {1.0:8.2f}")
        for groups in (16, 8, 4, 1):
            d = channels // groups
            zca = svdpi.torch.ZCAWhitening(channels, num_groups=groups).to(device)
            t_zca = time_step(zca, x, min_run_time)
            print(
                f"{'':>18} {f'ZCAWhitening(G={groups})':>24} {d:>3} "
                f"{t_zca * 1e3:9.2f} {t_zca / t_bn:8.2f}"
            )
            if args.no_loop:
                continue
            loop = paper_layers.PaperZCALayer(channels, num_groups=groups).to(device)
            t_loop = time_step(loop, x, min_run_time)
            print(
                f"{'':>18} {f'paper loop (G={groups})':>24} {d:>3} "
                f"{t_loop * 1e3:9.2f} {t_loop / t_bn:8.2f} {t_loop / t_zca:11.2f}"
            )


if __name__ == "__main__":
    main()
