"""ResNet-18 for 32x32 images with a choice of normalisation after the stem.

The network of the paper (that of pytorch-cifar): a 3x3 stem convolution with
no max-pool, four stages of two BasicBlocks each (64, 128, 256, 512 channels),
global average pooling and a linear classifier. The stem's BatchNorm is replaced
by ZCA whitening or PCA denoising from :mod:`svdpi.torch`; every other
normalisation stays BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("bn", "zca", "pca")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines the network's parameters (checked on ``--resume``)."""

    num_classes: int = 10
    width: int = 64
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    norm: str = "bn"
    num_groups: int = 1  # zca/pca: groups of width // num_groups channels
    n_components: int = 16  # pca: eigenvectors kept per group
    eps: float = 1e-4  # zca/pca (the stem BatchNorm keeps its own 1e-5)
    norm_momentum: float = 0.1
    method: str = "pi"
    num_iters: int = 19

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "blocks": tuple(d["blocks"])})

    @property
    def group_size(self) -> int:
        return self.width // self.num_groups


def _svdpi_layer(name: str):
    # Imported when asked for, so that --norm bn runs without the layers.
    try:
        import svdpi.torch as svdpi_torch
    except ImportError as exc:  # pragma: no cover - svdpi is installed with the example
        raise ImportError(f"--norm zca/pca needs svdpi.torch ({exc})") from exc
    layer = getattr(svdpi_torch, name, None)
    if layer is None:
        raise ImportError(
            f"svdpi.torch.{name} is not available in the installed svdpi "
            f"({getattr(svdpi_torch, '__file__', '?')}); update svdpi, or use --norm bn"
        )
    return layer


def make_stem_norm(config: ModelConfig) -> nn.Module:
    """The normalisation after the stem convolution, as chosen by ``config.norm``."""
    c = config.width
    if config.norm == "bn":
        return nn.BatchNorm2d(c, momentum=config.norm_momentum)
    if config.norm == "zca":
        return _svdpi_layer("ZCAWhitening")(
            c,
            num_groups=config.num_groups,
            eps=config.eps,
            momentum=config.norm_momentum,
            method=config.method,
            num_iters=config.num_iters,
        )
    if config.norm == "pca":
        return _svdpi_layer("PCADenoising")(
            c,
            n_components=config.n_components,
            num_groups=config.num_groups,
            eps=config.eps,
            momentum=config.norm_momentum,
            method=config.method,
            num_iters=config.num_iters,
        )
    raise ValueError(f"norm must be one of {NORMS}; got {config.norm!r}")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs; ``stem_norm`` follows the 3x3 stem convolution.

    Examples
    --------
    >>> net = ResNet(ModelConfig(width=8, blocks=(1, 1, 1, 1)))
    >>> net(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in resnet18(ModelConfig()).parameters())
    11173962
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 3, stride=1, padding=1, bias=False)
        self.stem_norm = make_stem_norm(config)
        planes = [w, 2 * w, 4 * w, 8 * w]
        strides = [1, 2, 2, 2]
        in_planes = w
        stages = []
        for n, p, s in zip(config.blocks, planes, strides, strict=True):
            blocks = []
            for stride in [s] + [1] * (n - 1):
                blocks.append(BasicBlock(in_planes, p, stride))
                in_planes = p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.stem_norm(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Global average pooling as a mean: the same numbers, and a backward
        # that is deterministic on CUDA (adaptive_avg_pool2d's is not).
        out = out.mean(dim=(2, 3))
        return self.linear(out)


def resnet18(config: ModelConfig) -> ResNet:
    """The paper's ResNet-18; ``config.blocks`` must be (2, 2, 2, 2) for it to be one."""
    return ResNet(config)


def parse_blocks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"2,2,2,2"`` -> ``(2, 2, 2, 2)``; four positive integers."""
    blocks = tuple(int(b) for b in (text.split(",") if isinstance(text, str) else text))
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks must be four positive integers like 2,2,2,2; got {text!r}")
    return blocks
