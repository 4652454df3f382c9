"""SPDNet on region covariances of handwritten digits, against a tangent-space baseline.

Each of scikit-learn's bundled 8 × 8 digit images (1797, no download) is
upsampled to 16 × 16 and described by the covariance of per-pixel features:
position ``x, y``, intensity ``I``, the derivatives ``Ix, Iy, Ixx, Iyy, Ixy``
and the intensity-weighted positions ``I·x, I·y``, each standardised over
the training images. That is one 10 × 10 SPD matrix per image (a region
covariance descriptor, Tuzel, Porikli & Meer, ECCV 2006), plus a small
ridge.

Two classifiers on the same split, trained in the same run:

* **SPDNet** (Huang & Van Gool, AAAI 2017) with :mod:`svdpi.torch.spd`:
  ``BiMap → ReEig → LogEig → BatchNorm1d → Linear``, Adam; the eigenvalue
  layers' gradient is ``--method`` (``exact`` by default, the derivative;
  ``pi`` the paper's power-iteration gradient; ``analytic`` the classical
  ``1/(λi − λj)`` one).
* **Baseline**: log-Euclidean tangent-space logistic regression
  (scikit-learn): ``vectorize(log X)``, standardised.

Writes ``OUT_DIR/summary.json`` (``spdnet_test_accuracy``,
``baseline_test_accuracy``, the training history, how far the ``--method``
gradient is from the exact one) and ``OUT_DIR/training_curves.png``.

Run: ``python examples/spdnet_digits.py --out-dir runs/spdnet_digits``
(about a minute on one CPU core); ``--quick`` for a seconds-long check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from svdpi.torch import spd
from svdpi.torch.spd import functional as F

METHODS = ("exact", "pi", "analytic")
FEATURE_SETS = {
    # Position, intensity, first and second derivatives, intensity-weighted position.
    "full": ("x", "y", "I", "Ix", "Iy", "Ixx", "Iyy", "Ixy", "I·x", "I·y"),
    # The classic region covariance of Tuzel, Porikli & Meer (ECCV 2006).
    "basic": ("x", "y", "I", "|Ix|", "|Iy|"),
}
DEFAULTS = {"epochs": 60, "train_size": None, "hidden": [8]}
QUICK = {"epochs": 5, "train_size": 300, "hidden": [8]}


# -- data ---------------------------------------------------------------------------------


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as float64 images in [0, 1], shape (1797, 8, 8), and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float64) / 16.0
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def pixel_features(images: torch.Tensor, upsample: int, feature_set: str = "full") -> torch.Tensor:
    """Per-pixel features ``(N, d, H·W)`` of (bilinearly upsampled) images.

    ``d = len(FEATURE_SETS[feature_set])``, in that order.
    """
    if upsample > 1:
        images = nn.functional.interpolate(
            images[:, None], scale_factor=upsample, mode="bilinear", align_corners=True
        )[:, 0]
    _, height, width = images.shape
    y, x = torch.meshgrid(
        torch.linspace(0, 1, height, dtype=images.dtype),
        torch.linspace(0, 1, width, dtype=images.dtype),
        indexing="ij",
    )
    x, y = x.expand_as(images), y.expand_as(images)
    iy, ix = torch.gradient(images, dim=(1, 2))
    ixy, ixx = torch.gradient(ix, dim=(1, 2))
    iyy = torch.gradient(iy, dim=1)[0]
    if feature_set == "basic":
        features = [x, y, images, ix.abs(), iy.abs()]
    else:
        features = [x, y, images, ix, iy, ixx, iyy, ixy, images * x, images * y]
    return torch.stack(features, 1).flatten(2)


def region_covariances(features: torch.Tensor, train: torch.Tensor, ridge: float) -> torch.Tensor:
    """One covariance per image of its standardised features, plus ``ridge · I``.

    Each feature is divided by its standard deviation over the training
    images' pixels, so that no feature's scale dominates the spectrum.
    """
    scale = features[train].transpose(0, 1).flatten(1).std(dim=1)
    centred = features / scale[:, None]
    centred = centred - centred.mean(-1, keepdim=True)
    cov = centred @ centred.mT / centred.shape[-1]
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    return cov + ridge * eye


def split(labels: torch.Tensor, test_fraction: float, seed: int):
    """A stratified split: ``test_fraction`` of every class, drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label)[:, 0]
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


# -- models -------------------------------------------------------------------------------


def make_spdnet(
    size: int,
    hidden: list[int],
    threshold: float,
    method: str,
    *,
    spd_batchnorm: bool = False,
    tangent_batchnorm: bool = True,
) -> nn.Module:
    """``[SPDBatchNorm →] [BiMap → ReEig]* → LogEig [→ BatchNorm1d] → Linear``, float64."""
    layers: list[nn.Module] = []
    if spd_batchnorm:
        layers.append(spd.SPDBatchNorm(size, method=method, dtype=torch.float64))
    for n, k in zip([size, *hidden[:-1]], hidden, strict=True):
        layers += [spd.BiMap(n, k, dtype=torch.float64), spd.ReEig(threshold, method=method)]
    k = hidden[-1] if hidden else size
    dimension = k * (k + 1) // 2
    # check_spd=False: after ReEig every eigenvalue is >= threshold > 0.
    layers.append(spd.LogEig(vectorize=True, method=method, check_spd=not hidden))
    if tangent_batchnorm:
        layers.append(nn.BatchNorm1d(dimension, dtype=torch.float64))
    layers.append(nn.Linear(dimension, 10))
    return nn.Sequential(*layers).to(torch.float64)


def gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss gradient with respect to every parameter, concatenated."""
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def set_method(model: nn.Module, method: str) -> None:
    for layer in model.modules():
        if isinstance(layer, (spd.ReEig, spd.LogEig, spd.SPDBatchNorm)):
            layer.method = method


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def train_spdnet(args, x_train, y_train, x_test, y_test) -> dict:
    torch.manual_seed(args.seed)
    model = make_spdnet(
        x_train.shape[-1],
        args.hidden,
        args.threshold,
        args.method,
        spd_batchnorm=args.spd_batchnorm,
        tangent_batchnorm=not args.no_tangent_batchnorm,
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs)
    generator = torch.Generator().manual_seed(args.seed + 1)
    history = {"epoch": [], "train_loss": [], "train_accuracy": [], "test_accuracy": []}
    skipped = 0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total, count = 0.0, 0
        for batch in order.split(args.batch_size):
            if len(batch) < 2:
                continue  # BatchNorm1d needs two samples
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            finite = all(torch.isfinite(p.grad).all() for p in model.parameters())
            if not finite:
                skipped += 1  # the classical gradient at equal eigenvalues: no step
                continue
            optimiser.step()
            total += loss.item() * len(batch)
            count += len(batch)
        schedule.step()
        history["epoch"].append(epoch)
        history["train_loss"].append(total / max(count, 1) if count else math.nan)
        history["train_accuracy"].append(accuracy(model, x_train, y_train))
        history["test_accuracy"].append(accuracy(model, x_test, y_test))
        print(
            f"epoch {epoch:3d}  loss {history['train_loss'][-1]:.4f}  "
            f"train {history['train_accuracy'][-1]:.4f}  test {history['test_accuracy'][-1]:.4f}"
        )
    seconds = time.perf_counter() - start
    # How far the --method gradient is from the derivative, at the trained weights.
    model.train()
    probe = x_test[: args.batch_size], y_test[: args.batch_size]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    used = gradients(model, *probe)
    model.load_state_dict(state)  # BatchNorm1d's running statistics moved
    set_method(model, "exact")
    exact = gradients(model, *probe)
    set_method(model, args.method)
    difference = (used - exact).norm() / exact.norm()
    return {
        "clamped_eigenvalue_fraction": clamped_fraction(model, x_test, args.threshold),
        "test_accuracy": history["test_accuracy"][-1],
        "history": history,
        "seconds": seconds,
        "skipped_nonfinite_steps": skipped,
        "gradient_relative_difference_to_exact": difference.item(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def clamped_fraction(model: nn.Module, x: torch.Tensor, threshold: float) -> float:
    """The fraction of eigenvalues the first ReEig raises to its threshold, on ``x``."""
    model.eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, spd.ReEig):
                return (torch.linalg.eigvalsh(x) < threshold).double().mean().item()
            x = layer(x)
    return 0.0


def tangent_baseline(x_train, y_train, x_test, y_test, seed: int) -> dict:
    """Logistic regression on standardised log-Euclidean tangent vectors (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    with torch.no_grad():
        v_train = F.vectorize(F.logeig(x_train)).numpy()
        v_test = F.vectorize(F.logeig(x_test)).numpy()
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed)
    )
    classifier.fit(v_train, y_train.numpy())
    return {
        "test_accuracy": float(classifier.score(v_test, y_test.numpy())),
        "train_accuracy": float(classifier.score(v_train, y_train.numpy())),
        "seconds": time.perf_counter() - start,
    }


# -- outputs ------------------------------------------------------------------------------


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = summary["spdnet"]["history"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(history["epoch"], history["train_loss"], color="C0")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (cross-entropy)")
    left.set_yscale("log")
    left.grid(alpha=0.3)
    right.plot(history["epoch"], history["train_accuracy"], color="C0", label="SPDNet, train")
    right.plot(history["epoch"], history["test_accuracy"], color="C1", label="SPDNet, test")
    right.axhline(
        summary["baseline_test_accuracy"],
        color="C2",
        linestyle="--",
        label="tangent-space logistic regression, test",
    )
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.set_ylim(max(0.0, min(history["test_accuracy"]) - 0.05), 1.0)
    right.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    figure.suptitle(
        f"SPDNet on digit region covariances (method={summary['config']['method']!r})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- command line -------------------------------------------------------------------------


def _int_in(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {text!r}")
        return value

    return parse


def _real_in(low: float, high: float = math.inf, *, open_low: bool = True, open_high=False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (math.isfinite(value) and above and below):
            left = "(" if open_low else "["
            right = ")" if open_high or math.isinf(high) else "]"
            raise argparse.ArgumentTypeError(
                f"must be a finite number in {left}{low:g}, {high:g}{right}; got {text!r}"
            )
        return value

    return parse


def _sizes(text: str) -> list[int]:
    if text.strip() == "":
        return []
    sizes = [_int_in(1)(part.strip()) for part in text.split(",")]
    if any(b > a for a, b in itertools.pairwise(sizes)):
        raise argparse.ArgumentTypeError(f"BiMap sizes must not increase; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/spdnet_digits"))
    parser.add_argument("--method", choices=METHODS, default="exact")
    parser.add_argument(
        "--epochs",
        type=_int_in(1),
        help=f"(default {DEFAULTS['epochs']}; --quick {QUICK['epochs']})",
    )
    parser.add_argument("--batch-size", type=_int_in(2), default=64)
    parser.add_argument("--lr", type=_real_in(0.0), default=1e-2)
    parser.add_argument(
        "--hidden",
        type=_sizes,
        help="comma-separated BiMap output sizes, e.g. 8 or 8,6; '' for none "
        f"(default {','.join(map(str, DEFAULTS['hidden']))})",
    )
    parser.add_argument("--threshold", type=_real_in(0.0), default=0.1, help="ReEig's floor")
    parser.add_argument("--features", choices=tuple(FEATURE_SETS), default="full")
    parser.add_argument(
        "--spd-batchnorm", action="store_true", help="SPDBatchNorm before the first BiMap"
    )
    parser.add_argument(
        "--no-tangent-batchnorm", action="store_true", help="no BatchNorm1d after LogEig"
    )
    parser.add_argument("--ridge", type=_real_in(0.0, open_low=False), default=1e-3)
    parser.add_argument("--upsample", type=_int_in(1), default=2, help="image scale factor")
    parser.add_argument("--test-fraction", type=_real_in(0.0, 1.0, open_high=True), default=0.3)
    parser.add_argument(
        "--train-size", type=_int_in(20), help="use only this many training images"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=_int_in(1), default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a tiny run, seconds")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:  # an explicit flag wins over --quick
            setattr(args, name, QUICK[name] if args.quick else default)
    size = len(FEATURE_SETS[args.features])
    if args.hidden and args.hidden[0] > size:
        parser.error(
            f"--hidden {args.hidden[0]} is larger than the {size} features of "
            f"--features {args.features}: BiMap sizes must not increase"
        )
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"--out-dir {args.out_dir} is a file, not a folder")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    images, labels = load_images()
    train, test = split(labels, args.test_fraction, args.seed)
    if args.train_size is not None:
        if args.train_size > len(train):
            build_parser().error(
                f"--train-size {args.train_size}: the training split has {len(train)} images"
            )
        generator = torch.Generator().manual_seed(args.seed + 2)
        train = train[torch.randperm(len(train), generator=generator)[: args.train_size]]
    features = pixel_features(images, args.upsample, args.features)
    cov = region_covariances(features, train, args.ridge)
    x_train, y_train, x_test, y_test = cov[train], labels[train], cov[test], labels[test]
    print(
        f"{len(train)} training and {len(test)} test images, {cov.shape[-1]} × {cov.shape[-1]} "
        f"region covariances; SPDNet BiMap sizes {args.hidden}, method={args.method!r}"
    )
    baseline = tangent_baseline(x_train, y_train, x_test, y_test, args.seed)
    print(f"baseline (tangent-space logistic regression): test {baseline['test_accuracy']:.4f}")
    spdnet = train_spdnet(args, x_train, y_train, x_test, y_test)
    summary = {
        "spdnet_test_accuracy": spdnet["test_accuracy"],
        "baseline_test_accuracy": baseline["test_accuracy"],
        "config": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "data": {
            "train_images": len(train),
            "test_images": len(test),
            "features": list(FEATURE_SETS[args.features]),
            "matrix_size": cov.shape[-1],
        },
        "spdnet": spdnet,
        "baseline": baseline,
        "torch_threads": torch.get_num_threads(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out_dir / "training_curves.png")
    print(
        f"SPDNet test accuracy {spdnet['test_accuracy']:.4f} ({spdnet['seconds']:.0f} s), "
        f"baseline {baseline['test_accuracy']:.4f}; gradient vs exact: relative difference "
        f"{spdnet['gradient_relative_difference_to_exact']:.2e}; written to {args.out_dir}"
    )
    return summary


if __name__ == "__main__":
    main()
