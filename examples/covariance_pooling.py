"""A CNN head with global covariance pooling (MPN-COV / iSQRT-COV), trained on CPU.

The classes of the synthetic images differ only in how their channels are
correlated: every class has its own random mixing of Gaussian noise, so all
classes have the same mean (zero) and the same per-channel variance on
average. Global *average* pooling sees nothing to classify; the covariance
of the feature maps, pooled and square-rooted by
:class:`svdpi.torch.CovariancePooling`, does. The same network, from the
same initial weights and on the same batches, is trained once per gradient
``method`` of the matrix square root ("exact", "pi", "taylor"), and the
script prints the loss at the start and end of each run.

Run: ``python examples/covariance_pooling.py`` (about 30 s on a CPU;
``--steps 60`` for a quick look).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import nn

import svdpi.torch

METHODS = ("exact", "pi", "taylor")


@dataclass(frozen=True)
class Config:
    steps: int = 300
    batch: int = 32
    in_channels: int = 4
    channels: int = 8
    size: int = 8
    classes: int = 4
    lr: float = 0.05
    seed: int = 0


def make_mixings(config: Config) -> torch.Tensor:
    """One random channel-mixing matrix per class, normalised to unit average gain."""
    generator = torch.Generator().manual_seed(config.seed)
    c = config.in_channels
    mixings = torch.randn(config.classes, c, c, generator=generator)
    return mixings / mixings.pow(2).sum((-2, -1), keepdim=True).div(c).sqrt()


def make_batch(config: Config, mixings: torch.Tensor, generator: torch.Generator):
    """Images ``mixing[label] @ noise``: the label is in the channels' correlations only."""
    labels = torch.randint(config.classes, (config.batch,), generator=generator)
    noise = torch.randn(
        config.batch, config.in_channels, config.size, config.size, generator=generator
    )
    return torch.einsum("ndc,nchw->ndhw", mixings[labels], noise), labels


def make_model(config: Config, method: str) -> nn.Module:
    """conv 3×3 → BatchNorm → ReLU → covariance pooling (square root) → linear."""
    c = config.channels
    return nn.Sequential(
        nn.Conv2d(config.in_channels, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        svdpi.torch.CovariancePooling(0.5, eps=1e-4, normalize_trace=True, method=method),
        nn.Linear(c * (c + 1) // 2, config.classes),
    )


def train(config: Config, method: str) -> list[float]:
    """Train from the seed's initial weights on the seed's batches; the loss of every step."""
    torch.manual_seed(config.seed)
    model = make_model(config, method)
    optimiser = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    mixings = make_mixings(config)
    generator = torch.Generator().manual_seed(config.seed + 1)
    losses = []
    for _ in range(config.steps):
        x, labels = make_batch(config, mixings, generator)
        loss = nn.functional.cross_entropy(model(x), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def mean_loss(losses: list[float], first: bool, window: int = 20) -> float:
    part = losses[:window] if first else losses[-window:]
    return sum(part) / len(part)


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer ``>= low`` (and ``<= high``), else argparse's error."""

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


def main(argv=None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=_int_in(1), default=Config.steps)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args(argv)
    config = Config(steps=args.steps)
    print(f"Cross-entropy ({config.classes} classes, chance = {math.log(config.classes):.3f})")
    print(f"{'method':>8} | {'first 20 steps':>14} | {'last 20 steps':>13}")
    results = {}
    for method in args.methods:
        losses = train(config, method)
        results[method] = losses
        first, last = mean_loss(losses, True), mean_loss(losses, False)
        print(f"{method:>8} | {first:>14.3f} | {last:>13.3f}")
    return results


if __name__ == "__main__":
    main()
