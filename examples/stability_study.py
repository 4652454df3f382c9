"""Stability study: does training with a ZCA whitening layer survive its eigendecomposition?

Reproduces, on a CPU, the central experiment of Wang et al. (NeurIPS 2019,
Table 1), on synthetic CIFAR-shaped images or (``--dataset digits``) on real
ones, scikit-learn's handwritten digits: the same small network with a group ZCA
whitening layer after its first convolution is trained with four ways of
differentiating the eigendecomposition of each group's covariance:

``eigh``
    The classical gradient: ``torch.linalg.eigh`` forward and its autograd
    backward, whose coefficients ``1 / (λ_i − λ_j)`` blow up for close
    eigenvalues (the paper's "SVD").
``pi-only``
    Power iteration with deflation in the forward pass (``--pi-iters`` steps
    per eigenvector from a fixed start), differentiated by autograd through
    every step (the paper's "PI").
``svd-pi``
    :func:`svdpi.torch.eig` with ``method="pi"``: exact eigenpairs forward,
    the closed-form power-iteration gradient backward (the paper's method).
``exact``
    The same eigenpairs forward; the whitening matrix is differentiated as a
    matrix function, by the Daleckii–Krein formula
    (:func:`svdpi.zca_whitening_matrix_vjp` with ``method="exact"``), instead
    of through the eigenvectors.

The first three differ only in the ``eig`` callable given to the whitening
layer; ``exact`` replaces the layer's ``W = V diag(λ^{-1/2}) Vᵀ`` by
:class:`ExactWhitening` (same forward, up to the eigenvalue clamp: svdpi's
floor ``n · eps · max|λ|`` there, ``λ >= eps`` here). All get the same
initial weights, the same data and batch order, the same learning rate (per
seed). A run *diverges* when its loss or any gradient is
NaN or infinite (or the eigensolver fails); the others report their test
accuracy at the end. Results go to ``OUTPUT/stability.md`` (a Markdown table),
``OUTPUT/stability.png`` (a plot) and ``OUTPUT/stability.json`` (every run).

Usage::

    python examples/stability_study.py --output docs/_static/stability
    python examples/stability_study.py --dataset digits --seeds 3 \\
        --output docs/_static/stability_digits
    python examples/stability_study.py --quick --output /tmp/stability   # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import svdpi
import svdpi.torch

# (covariances (G, d, d)) -> (eigenvalues (G, d) descending, eigenvectors (G, d, d))
EigFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

METHODS = ("eigh", "pi-only", "svd-pi", "exact")


# ------------------------------------------------------------- the eigs, the exact whitening


def eig_classical(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` with its own backward, reordered largest first."""
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    return eigenvalues.flip(-1), eigenvectors.flip(-1)


def eig_svdpi(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-PI: exact eigenpairs, power-iteration gradient in closed form."""
    return tuple(svdpi.torch.eig(cov, method="pi", num_iters=19, check_finite=False))


def make_power_iteration_eig(num_iters: int) -> EigFunction:
    """Eigenpairs by power iteration with deflation, every step recorded by autograd.

    For each eigenvector ``j`` (largest first): ``num_iters`` steps of
    ``v ← M_j v / ‖M_j v‖`` from a fixed start, the Rayleigh quotient
    ``λ_j = vᵀ M_j v`` and the paper's deflation ``M_{j+1} = M_j − M_j v vᵀ``.
    Batched over the groups; the loops over eigenvectors and steps are the
    algorithm being studied (the baseline), not a hot path of svdpi.
    """

    def eig_power_iteration(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = cov.shape[-1]
        # A fixed, generic start (not orthogonal to any eigenvector in practice).
        start = torch.linspace(1.0, 2.0, d, dtype=cov.dtype, device=cov.device)
        start = (start / torch.linalg.vector_norm(start)).expand(*cov.shape[:-2], d)
        deflated = cov
        values, vectors = [], []
        for _ in range(d):
            v = start.unsqueeze(-1)
            for _ in range(num_iters):
                v = deflated @ v
                v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True)
            values.append((v.mT @ deflated @ v)[..., 0, 0])
            vectors.append(v)
            deflated = deflated - deflated @ v @ v.mT
        return torch.stack(values, dim=-1), torch.cat(vectors, dim=-1)

    return eig_power_iteration


def eig_function(method: str, pi_iters: int) -> EigFunction:
    """The eigendecomposition of each method (``exact`` uses svdpi's eigenpairs)."""
    if method == "eigh":
        return eig_classical
    if method == "pi-only":
        return make_power_iteration_eig(pi_iters)
    if method in ("svd-pi", "exact"):
        return eig_svdpi
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def paper_truncation(eigenvalues: torch.Tensor, eps: float) -> torch.Tensor:
    """The paper's rule: keep ``λ > eps`` with inclusive cumulative energy below ``1 − eps``."""
    return svdpi.truncation_mask(
        eigenvalues.detach(),
        min_eigenvalue=eps,
        max_energy=1.0 - eps,
        energy_rule="inclusive",
    )


class ExactWhitening(torch.autograd.Function):
    """``W = V diag(λ^{-1/2}) Vᵀ`` of a covariance, differentiated by Daleckii–Krein.

    The core's :func:`svdpi.zca_whitening_matrix` forward and its VJP with
    ``method="exact"``, the mask held constant. :class:`svdpi.torch.ZCAWhitening`
    takes ``method="exact"`` too, but this study keeps its own layer (below) so
    that the four variants differ only in how ``W`` is differentiated, and
    :mod:`svdpi.torch` has no public function for a truncated whitening matrix.
    """

    @staticmethod
    def forward(ctx, cov: torch.Tensor, eps: float, truncate: bool) -> torch.Tensor:
        eigenvalues, eigenvectors = svdpi.eig(cov)
        mask = paper_truncation(eigenvalues, eps) if truncate else None
        ctx.save_for_backward(eigenvalues, eigenvectors, mask)
        return svdpi.zca_whitening_matrix(eigenvalues, eigenvectors, mask=mask)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        eigenvalues, eigenvectors, mask = ctx.saved_tensors
        grad_cov = svdpi.zca_whitening_matrix_vjp(
            eigenvalues, eigenvectors, grad.contiguous(), mask=mask, method="exact"
        )
        return grad_cov, None, None


# --------------------------------------------------------------------------- the network


class GroupZCA(nn.Module):
    """ZCA whitening of groups of ``group_size`` channels, as in the paper's layer.

    Per group: ``Σ = X Xᵀ / m + eps·I`` for the centred features ``X`` (d, m),
    eigenpairs from ``eig``, optionally the paper's truncation (``λ > eps`` and
    cumulative energy, inclusive, below ``1 − eps``), ``W = V diag(λ^{-1/2}) Vᵀ``
    on the kept pairs, ``y = W X``, then a per-channel affine map. Running averages of
    the mean and of ``W`` are used in eval mode.
    """

    def __init__(
        self,
        num_channels: int,
        group_size: int,
        eig: EigFunction,
        eps: float = 1e-5,
        momentum: float = 0.1,
        truncate: bool = True,
        exact: bool = False,
    ) -> None:
        super().__init__()
        if num_channels % group_size:
            raise ValueError(f"group_size must divide {num_channels}, got {group_size}")
        self.group_size = group_size
        self.groups = num_channels // group_size
        self.eig = eig
        self.eps = eps
        self.momentum = momentum
        self.truncate = truncate
        self.exact = exact
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        eye = torch.eye(group_size).expand(self.groups, group_size, group_size)
        self.register_buffer("running_mean", torch.zeros(self.groups, group_size, 1))
        self.register_buffer("running_whitening", eye.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        features = x.transpose(0, 1).reshape(self.groups, self.group_size, -1)
        if self.training:
            mean = features.mean(dim=-1, keepdim=True)
            centred = features - mean
            eye = torch.eye(self.group_size, dtype=x.dtype, device=x.device)
            cov = centred @ centred.mT / centred.shape[-1] + self.eps * eye
            if self.exact:
                whitening = ExactWhitening.apply(cov, self.eps, self.truncate)
            else:
                whitening = self._whitening_through_eig(cov)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_whitening.lerp_(whitening, self.momentum)
        else:
            centred = features - self.running_mean
            whitening = self.running_whitening
        out = (whitening @ centred).reshape(c, n, h, w).transpose(0, 1)
        return out * self.weight[:, None, None] + self.bias[:, None, None]

    def _whitening_through_eig(self, cov: torch.Tensor) -> torch.Tensor:
        """``W`` from the eigenpairs of ``self.eig``, differentiated through them."""
        eigenvalues, eigenvectors = self.eig(cov)
        # Clamping keeps the rsqrt finite for PI's inexact (even negative) eigenvalues.
        scale = eigenvalues.clamp_min(self.eps).rsqrt()
        if self.truncate:
            scale = torch.where(paper_truncation(eigenvalues, self.eps), scale, 0.0)
        return (eigenvectors * scale.unsqueeze(-2)) @ eigenvectors.mT


class SmallNet(nn.Module):
    """conv 3→64 → group ZCA → ReLU → conv 64→32 (stride 2) → ReLU → pool → linear.

    The whitening sits where the paper puts it, right after the first
    convolution (replacing its batch norm); like there, a 3×3 convolution of
    3 channels gives features in a 27-dimensional space, so for ``d > 27``
    each covariance has (nearly) repeated eigenvalues ``eps``.
    """

    def __init__(
        self,
        group_size: int,
        eig: EigFunction,
        truncate: bool = True,
        num_classes: int = 10,
        exact: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.zca = GroupZCA(64, group_size, eig, truncate=truncate, exact=exact)
        self.conv2 = nn.Conv2d(64, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.zca(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean(dim=(-2, -1)))


# --------------------------------------------------------------------------- the data


def synthetic_cifar(
    num_train: int, num_test: int, image_size: int, seed: int = 0, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-shaped images: a class template plus natural-image-like noise.

    Both templates and noise have a 1/f spatial spectrum and strongly
    correlated colour channels (as photographs do), which makes the
    first-layer feature covariances ill-conditioned; the per-image contrast
    varies. A fixed seed, so every run of the study sees the same images.
    """
    generator = torch.Generator().manual_seed(seed)
    frequency = torch.fft.fftfreq(image_size)
    radius = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    spectrum = 1.0 / torch.clamp(radius, min=1.0 / image_size)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.44, 0.0], [0.8, 0.4, 0.45]])

    def pink_noise(count: int) -> torch.Tensor:
        white = torch.randn(count, 3, image_size, image_size, generator=generator)
        coloured = torch.fft.ifft2(torch.fft.fft2(white) * spectrum).real
        coloured = coloured / coloured.std(dim=(-2, -1), keepdim=True)
        return torch.einsum("ij,njhw->nihw", mixing, coloured)

    templates = pink_noise(num_classes)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(num_classes, (count,), generator=generator)
        contrast = 0.5 + torch.rand(count, 1, 1, 1, generator=generator)
        images = contrast * templates[labels] + 1.5 * pink_noise(count)
        return images, labels

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    return x_train.contiguous(), y_train, x_test.contiguous(), y_test


def digits_images(
    image_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real images: scikit-learn's handwritten digits, upsampled, as three-channel images.

    The 1797 8×8 grey images bundled with scikit-learn
    (:func:`sklearn.datasets.load_digits`, nothing is downloaded), scaled to
    [0, 1], upsampled bilinearly to ``image_size``, standardised with the
    training set's mean and standard deviation and repeated over three
    channels (the network's input is RGB-shaped). The split is fixed: every
    fourth image (index ``3 mod 4``) is held out, 449 test and 1348
    training images with every class in both.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - scikit-learn is in the examples extra
        raise ImportError(
            "--dataset digits needs scikit-learn (pip install scikit-learn, or the "
            "'examples' extra of svdpi)"
        ) from error
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    test = torch.arange(len(labels)) % 4 == 3
    mean, std = images[~test].mean(), images[~test].std()
    images = ((images - mean) / std).expand(-1, 3, -1, -1)
    return (
        images[~test].contiguous(),
        labels[~test],
        images[test].contiguous(),
        labels[test],
    )


DIGITS_SPLIT = (1348, 449)  # training and test images of digits_images


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """The images and labels the study trains and tests on, as the settings ask."""
    if args.dataset == "digits":
        x_train, y_train, x_test, y_test = digits_images(args.image_size)
        # Fixed subsets (the first images of each part) when fewer are asked for.
        return (
            x_train[: args.train_size],
            y_train[: args.train_size],
            x_test[: args.test_size],
            y_test[: args.test_size],
        )
    return synthetic_cifar(args.train_size, args.test_size, args.image_size)


# --------------------------------------------------------------------------- training


@dataclass
class RunResult:
    method: str
    group_size: int
    seed: int
    diverged: bool
    diverged_at_step: int | None
    reason: str
    test_accuracy: float | None
    max_gradient_norm: float
    seconds: float


def _finite_gradients(model: nn.Module) -> tuple[bool, float]:
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(norms)).item()
    return math.isfinite(total), total


def train_one(
    method: str,
    group_size: int,
    seed: int,
    data: tuple[torch.Tensor, ...],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pi_iters: int,
    truncate: bool = True,
) -> RunResult:
    """Train one network; same seed ⇒ same initial weights and batch order for every method."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = SmallNet(
        group_size, eig_function(method, pi_iters), truncate=truncate, exact=method == "exact"
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    order = torch.Generator().manual_seed(1000 + seed)
    start = time.perf_counter()
    max_norm = 0.0
    model.train()
    step = 0
    while step < steps:
        for batch in torch.randperm(len(x_train), generator=order).split(batch_size):
            if step == steps:
                break
            if len(batch) < batch_size:
                continue
            optimizer.zero_grad(set_to_none=True)
            try:
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                if not torch.isfinite(loss):
                    return _diverged(method, group_size, seed, step, "loss", max_norm, start)
                loss.backward()
            except (RuntimeError, ValueError) as error:  # e.g. eigh failing on NaN input
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                return _diverged(method, group_size, seed, step, reason, max_norm, start)
            finite, norm = _finite_gradients(model)
            if not finite:
                return _diverged(method, group_size, seed, step, "gradient", max_norm, start)
            max_norm = max(max_norm, norm)
            optimizer.step()
            step += 1
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(-1) for x in x_test.split(500)])
    accuracy = (predictions == y_test).float().mean().item()
    if not math.isfinite(accuracy):  # pragma: no cover - eval after finite training
        accuracy = None
    return RunResult(
        method,
        group_size,
        seed,
        False,
        None,
        "",
        accuracy,
        max_norm,
        time.perf_counter() - start,
    )


def _diverged(method, group_size, seed, step, reason, max_norm, start) -> RunResult:
    return RunResult(
        method, group_size, seed, True, step, reason, None, max_norm, time.perf_counter() - start
    )


# --------------------------------------------------------------------------- reporting


def summarize(results: Sequence[RunResult]) -> list[dict]:
    """One row per (group size, method): divergence rate and accuracy of the finished runs."""
    rows = []
    for d in sorted({r.group_size for r in results}):
        for method in METHODS:
            runs = [r for r in results if r.group_size == d and r.method == method]
            if not runs:
                continue
            diverged = [r for r in runs if r.diverged]
            accuracies = [r.test_accuracy for r in runs if not r.diverged]
            rows.append(
                {
                    "d": d,
                    "method": method,
                    "runs": len(runs),
                    "diverged": len(diverged),
                    "diverged_fraction": len(diverged) / len(runs),
                    "accuracy_mean": float(np.mean(accuracies)) if accuracies else None,
                    "accuracy_std": float(np.std(accuracies)) if accuracies else None,
                    "median_divergence_step": (
                        float(np.median([r.diverged_at_step for r in diverged]))
                        if diverged
                        else None
                    ),
                    # Over every run, the diverged ones up to their last finite step.
                    "max_gradient_norm": max(r.max_gradient_norm for r in runs),
                }
            )
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    lines = [
        "| d | method | runs | diverged | diverged % | test accuracy of the others "
        "| median step of divergence | largest gradient norm |",
        "|---:|:---|---:|---:|---:|:---|---:|---:|",
    ]
    for row in rows:
        if row["accuracy_mean"] is None:
            accuracy = "–"
        else:
            accuracy = f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f} %"
        step = row["median_divergence_step"]
        lines.append(
            f"| {row['d']} | {row['method']} | {row['runs']} | {row['diverged']} "
            f"| {100 * row['diverged_fraction']:.0f} % | {accuracy} "
            f"| {'–' if step is None else f'{step:.0f}'} | {row['max_gradient_norm']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[dict]) -> str:
    """The summary as CSV (for Sphinx's ``csv-table``), the same columns as the Markdown."""
    lines = [
        "d,method,runs,diverged,diverged %,test accuracy of the others (%),largest gradient norm"
    ]
    for row in rows:
        if row["accuracy_mean"] is None:
            accuracy = "–"
        else:
            accuracy = f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f}"
        lines.append(
            f"{row['d']},{row['method']},{row['runs']},{row['diverged']},"
            f"{100 * row['diverged_fraction']:.0f},{accuracy},{row['max_gradient_norm']:.3g}"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({row["d"] for row in rows})
    methods = [m for m in METHODS if any(row["method"] == m for row in rows)]
    fig, (ax_div, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        by_d = {row["d"]: row for row in rows if row["method"] == method}
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(sizes))]
        fractions = [100 * by_d[d]["diverged_fraction"] if d in by_d else 0 for d in sizes]
        ax_div.bar(xs, fractions, width, label=method)
        means = [by_d.get(d, {}).get("accuracy_mean") for d in sizes]
        stds = [by_d.get(d, {}).get("accuracy_std") for d in sizes]
        ax_acc.bar(
            xs,
            [0 if m is None else 100 * m for m in means],
            width,
            yerr=[0 if s is None else 100 * s for s in stds],
            label=method,
        )
    for ax in (ax_div, ax_acc):
        ax.set_xticks(range(len(sizes)), [f"d = {d}" for d in sizes])
    ax_div.set_ylabel("runs diverged (%)")
    ax_div.set_ylim(0, 105)
    ax_div.set_title("NaN/inf loss or gradient")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("runs that finished (no bar: none did)")
    ax_div.legend(loc="upper left", fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(record: dict, output: Path) -> list[dict]:
    """``stability.md``, ``stability.csv`` and ``stability.png`` from the record of a run."""
    results = [RunResult(**run) for run in record["runs"]]
    rows = summarize(results)
    args = record["settings"]
    size = f"{args['image_size']}×{args['image_size']}"
    if args.get("dataset", "synthetic") == "digits":  # records of 0.2 have no "dataset"
        images = f"{args['train_size']} real {size} images (scikit-learn's digits, upsampled)"
    else:
        images = f"{args['train_size']} synthetic {size} images"
    header = (
        f"Stability study: {args['seeds']} seeds × {args['steps']} SGD steps (batch "
        f"{args['batch_size']}, lr {args['lr']}, momentum 0.9, weight decay 5e-4) on "
        f"{images}, truncation: {args['truncation']}; float32. Machine: {record['machine']}. "
        f"Wall time {record['seconds']:.0f} s.\n"
    )
    (output / "stability.md").write_text(header + "\n" + markdown_table(rows))
    (output / "stability.csv").write_text(csv_table(rows))
    (output / "machine.txt").write_text(header)
    plot(rows, output / "stability.png")
    print(header + "\n" + markdown_table(rows))
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    return (
        f"{_cpu_name()} ({os.cpu_count()} cores), {torch.get_num_threads()} torch "
        f"threads, {platform.system()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, svdpi {svdpi.__version__}"
    )


# --------------------------------------------------------------------------- entry point


# What --quick changes, and the defaults otherwise: an option given on the
# command line always wins over both.
DEFAULTS = {
    "group_sizes": [4, 16, 64],
    "seeds": 5,
    "steps": 150,
    "batch_size": 128,
    "image_size": 16,
    "train_size": 4096,
    "test_size": 1000,
}
QUICK = {
    "group_sizes": [4, 16],
    "seeds": 1,
    "steps": 3,
    "batch_size": 16,
    "image_size": 8,
    "train_size": 64,
    "test_size": 32,
}
CHANNELS = 64  # of the whitened layer: every group size must divide it


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer ``>= low`` (and ``<= high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}; got {text!r}")
        return value

    return parse


def _group_size(text: str) -> int:
    value = _int_in(1)(text)
    if CHANNELS % value:
        divisors = [d for d in range(1, CHANNELS + 1) if CHANNELS % d == 0]
        raise argparse.ArgumentTypeError(
            f"must divide the {CHANNELS} whitened channels ({', '.join(map(str, divisors))}); "
            f"got {text!r}"
        )
    return value


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    def default(name: str) -> str:
        return f"(default: {DEFAULTS[name]}; --quick: {QUICK[name]})"

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/stability"))
    parser.add_argument(
        "--dataset",
        choices=["synthetic", "digits"],
        default="synthetic",
        help="synthetic CIFAR-shaped images, or scikit-learn's handwritten digits (real "
        "images, upsampled to --image-size, three channels, a fixed split of 1348 training "
        "and 449 test images; needs scikit-learn)",
    )
    parser.add_argument(
        "--group-sizes",
        type=_group_size,
        nargs="+",
        help=f"d, channels per whitened group; each must divide {CHANNELS} "
        + default("group_sizes"),
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--seeds", type=_int_in(1), help="runs per (d, method) " + default("seeds")
    )
    parser.add_argument("--steps", type=_int_in(1), help="SGD steps per run " + default("steps"))
    parser.add_argument("--batch-size", type=_int_in(2), help=default("batch_size"))
    parser.add_argument(
        "--lr", type=_learning_rate, default=0.1, help="the paper's learning rate (default: 0.1)"
    )
    parser.add_argument(
        "--pi-iters",
        type=_int_in(1),
        default=19,
        help="steps per eigenvector, pi-only (default: 19)",
    )
    parser.add_argument(
        "--truncation",
        choices=["paper", "none"],
        default="paper",
        help="'paper': keep eigenpairs with λ > eps and inclusive energy < 1 − eps; "
        "'none': whiten with every eigenpair",
    )
    parser.add_argument(
        "--image-size", type=_int_in(1), help="pixels per side " + default("image_size")
    )
    parser.add_argument(
        "--train-size",
        type=_int_in(2),
        help=f"{default('train_size')}; with --dataset digits at most {DIGITS_SPLIT[0]}, all "
        "of them by default",
    )
    parser.add_argument(
        "--test-size",
        type=_int_in(1),
        help=f"{default('test_size')}; with --dataset digits at most {DIGITS_SPLIT[1]}, all "
        "of them by default",
    )
    parser.add_argument(
        "--threads",
        type=_int_in(1),
        default=1,
        help="torch CPU threads (1: the small kernels here gain little from more, and "
        "a busy machine makes multi-threaded runs slow and erratic)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the table and plot from OUTPUT/stability.json of an earlier run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny configuration that runs in seconds; options given explicitly keep "
        "their values",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The settings: explicit options, else ``--quick``'s values, else the defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    fallback = QUICK if args.quick else DEFAULTS
    digits = args.dataset == "digits"
    for name, value in fallback.items():
        if getattr(args, name) is not None:
            continue
        if digits and name in ("train_size", "test_size") and not args.quick:
            value = DIGITS_SPLIT[name == "test_size"]  # the whole split
        setattr(args, name, value)
    if len(set(args.group_sizes)) != len(args.group_sizes):
        parser.error(f"--group-sizes has repeated values: {args.group_sizes}")
    if len(set(args.methods)) != len(args.methods):
        parser.error(f"--methods has repeated values: {args.methods}")
    if digits:
        for name, most in zip(("train_size", "test_size"), DIGITS_SPLIT, strict=True):
            if getattr(args, name) > most:
                parser.error(
                    f"--{name.replace('_', '-')} {getattr(args, name)}: the digits data set "
                    f"has {most} {name.split('_')[0]} images"
                )
    if args.batch_size > args.train_size:
        # No full batch: the training loop would never take a step.
        parser.error(
            f"--batch-size {args.batch_size} is larger than the {args.train_size} training images"
        )
    output = args.output
    if output.exists() and not output.is_dir():
        parser.error(f"--output {output} is a file, not a folder")
    existing = next(p for p in (output, *output.parents) if p.exists())
    if not existing.is_dir():
        parser.error(f"--output {output}: {existing} is a file, so no folder can be made under it")
    if args.report_only and not (output / "stability.json").is_file():
        parser.error(
            f"--report-only: no earlier run in {output} (it has no stability.json); run the "
            "study without --report-only first"
        )
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.report_only:
        path = args.output / "stability.json"
        try:
            record = json.loads(path.read_text())
            return write_reports(record, args.output)
        except (ValueError, KeyError, TypeError) as error:
            build_parser().error(f"--report-only: {path} is not a record of this study ({error})")
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    data = load_data(args)
    began = time.perf_counter()
    results = []
    for d in args.group_sizes:
        for seed in range(args.seeds):
            for method in args.methods:
                result = train_one(
                    method,
                    d,
                    seed,
                    data,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    pi_iters=args.pi_iters,
                    truncate=args.truncation == "paper",
                )
                results.append(result)
                status = (
                    f"diverged at step {result.diverged_at_step} ({result.reason})"
                    if result.diverged
                    else f"test accuracy {100 * result.test_accuracy:.1f} %"
                )
                print(
                    f"d={d:3d} seed={seed} {method:8s} {status}, max |grad| "
                    f"{result.max_gradient_norm:.3g}, {result.seconds:.1f} s",
                    flush=True,
                )
    elapsed = time.perf_counter() - began
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
    }
    record = {
        "settings": settings,
        "machine": machine_description(),
        "seconds": elapsed,
        "runs": [asdict(r) for r in results],
    }
    (args.output / "stability.json").write_text(json.dumps(record, indent=1))
    rows = write_reports(record, args.output)
    return rows


if __name__ == "__main__":
    main()
