"""Data for the CIFAR example: CIFAR-10/100 or a generated stand-in, held as tensors.

The whole data set is kept as one uint8 tensor on the training device (CIFAR-10's
training set is 150 MB), and each batch is cropped, flipped and normalised there
with a few batched tensor operations: no per-image Python, no worker processes,
no host-to-device copy per batch. On a CPU the same code runs on CPU tensors.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# The paper's normalisation (that of pytorch-cifar, on which its code is based).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
_TORCHVISION_NAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}

# The synthetic data set's class structure is fixed (it does not follow --seed):
# every run trains on the same data, and only the samples differ between splits.
_SYNTHETIC_STRUCTURE_SEED = 20190609
_SYNTHETIC_SPLIT_SEEDS = {"train": 1, "test": 2}


class DatasetUnavailableError(RuntimeError):
    """CIFAR is neither on disk nor downloadable; the message says how to get it."""


@dataclass
class ImageData:
    """A split of an image classification data set as tensors.

    ``images`` is uint8 of shape (N, 3, 32, 32), ``labels`` int64 of shape (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    num_classes: int
    train: ImageData
    test: ImageData


# --------------------------------------------------------------------------- CIFAR


def _cifar_message(name: str, root: Path, reason: str) -> str:
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION_NAMES[name])
    pretty = name.upper().replace("CIFAR", "CIFAR-")
    return (
        f"{pretty} is not available: {reason}\n"
        f"  It was looked for in {root / cls.base_folder}.\n"
        f"  To get it: run once with network access (torchvision downloads it into --data-dir),\n"
        f"  or download {cls.url} yourself and extract it into {root}/.\n"
        f"  To try the script without it: --dataset synthetic, or add --fallback-synthetic\n"
        f"  to train on the generated data set when {pretty} is missing."
    )


def load_cifar(
    name: str, root: str | Path, *, download: bool = True, timeout_s: float = 30.0
) -> Dataset:
    """CIFAR-10 or CIFAR-100 from ``root`` as uint8 tensors, downloading if allowed.

    Raises
    ------
    DatasetUnavailableError
        If the files are not in ``root`` and cannot be downloaded (or
        ``download`` is False); the message says where they were looked for
        and how to get them.
    """
    import torchvision.datasets as tvd

    if name not in CIFAR_CLASSES:
        raise ValueError(f"name must be one of {sorted(CIFAR_CLASSES)}; got {name!r}")
    root = Path(root).expanduser()
    cls = getattr(tvd, _TORCHVISION_NAMES[name])
    splits = {}
    for split in ("train", "test"):
        try:
            # Only the check: torchvision verifies the files' MD5 before use.
            ds = cls(str(root), train=split == "train", download=False)
        except RuntimeError:
            if not download:
                raise DatasetUnavailableError(
                    _cifar_message(name, root, "not found on disk and --no-download was given")
                ) from None
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout_s)  # a dead network must not hang the run
            try:
                ds = cls(str(root), train=split == "train", download=True)
            except (OSError, RuntimeError) as exc:
                raise DatasetUnavailableError(
                    _cifar_message(name, root, f"not on disk and the download failed ({exc})")
                ) from exc
            finally:
                socket.setdefaulttimeout(previous)
        # ds.data: (N, 32, 32, 3) uint8 numpy; keep channels first like the model.
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        splits[split] = ImageData(images, labels)
    return Dataset(name, CIFAR_CLASSES[name], splits["train"], splits["test"])


# ----------------------------------------------------------------------- synthetic


def make_synthetic_split(num_samples: int, num_classes: int = 10, *, split: str) -> ImageData:
    """A deterministic, CIFAR-shaped, learnable split of generated images.

    Each class has an oriented sinusoidal grating (its own spatial frequency
    and orientation, drawn in its own colour) and a faint mean colour. Every
    sample draws a random phase, a random brightness/colour cast and pixel
    noise, so a classifier has to detect the grating's frequency and
    orientation (what convolutions are good at); the class colours alone are
    a weak cue. Classes are balanced. The same call always returns the same
    tensors; ``split`` ("train" or "test") selects independent samples of the
    same classes.

    Examples
    --------
    >>> d = make_synthetic_split(20, 10, split="test")
    >>> d.images.shape, d.images.dtype, d.labels[:5].tolist()
    (torch.Size([20, 3, 32, 32]), torch.uint8, [0, 1, 2, 3, 4])
    >>> bool((make_synthetic_split(20, 10, split="test").images == d.images).all())
    True
    """
    if split not in _SYNTHETIC_SPLIT_SEEDS:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if num_samples < 1 or num_classes < 2:
        raise ValueError(
            f"need num_samples >= 1 and num_classes >= 2; got {num_samples}, {num_classes}"
        )
    k = num_classes
    g = torch.Generator().manual_seed(_SYNTHETIC_STRUCTURE_SEED)
    # Class structure. Frequencies and orientations are spread over a grid so
    # that no two classes share both, whatever the number of classes.
    n_orient = max(2, math.ceil(math.sqrt(k)))
    slots = torch.randperm(n_orient * math.ceil(k / n_orient), generator=g)[:k]
    orientation = (slots % n_orient).float() * (math.pi / n_orient)
    frequency = 1.5 + (slots // n_orient).float() * 1.25  # cycles per 32 pixels
    grating_colour = torch.nn.functional.normalize(torch.randn(k, 3, generator=g), dim=1)
    mean_colour = 0.04 * torch.randn(k, 3, generator=g)

    g = torch.Generator().manual_seed(_SYNTHETIC_STRUCTURE_SEED + _SYNTHETIC_SPLIT_SEEDS[split])
    labels = torch.arange(num_samples) % k  # balanced, in a fixed order
    phase = 2 * math.pi * torch.rand(num_samples, generator=g, dtype=torch.float32)
    coords = torch.arange(32, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    theta = orientation[labels][:, None, None]
    along = xx * torch.cos(theta) + yy * torch.sin(theta)  # (N, 32, 32)
    cycles = frequency[labels][:, None, None] / 32
    wave = torch.cos(2 * math.pi * cycles * along + phase[:, None, None])
    cast = 0.1 * torch.randn(num_samples, 3, 1, 1, generator=g, dtype=torch.float32)
    noise = 0.2 * torch.randn(num_samples, 3, 32, 32, generator=g, dtype=torch.float32)
    images = (
        0.5
        + mean_colour[labels][:, :, None, None]
        + cast
        + 0.18 * grating_colour[labels][:, :, None, None] * wave[:, None]
        + noise
    )
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageData(images, labels)


def make_synthetic(train_size: int, test_size: int, num_classes: int = 10) -> Dataset:
    """The synthetic data set: ``train_size`` training and ``test_size`` held-out images."""
    return Dataset(
        "synthetic",
        num_classes,
        make_synthetic_split(train_size, num_classes, split="train"),
        make_synthetic_split(test_size, num_classes, split="test"),
    )


# ------------------------------------------------------------------- augmentation


def random_crop_flip(
    images: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding, then random horizontal flip, for a whole batch.

    The same transform as torchvision's ``RandomCrop(32, padding=4)`` followed by
    ``RandomHorizontalFlip()``, applied to every image of ``images`` (B, C, H, W)
    at once with one gather, on whatever device the tensor is.

    Examples
    --------
    >>> x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    >>> y = random_crop_flip(x, padding=1, generator=torch.Generator().manual_seed(0))
    >>> y.shape, y.dtype
    (torch.Size([2, 1, 4, 4]), torch.uint8)
    >>> # Without padding each image comes back as it was or mirrored.
    >>> z = random_crop_flip(x, padding=0)
    >>> all(bool((a == b).all() or (a == b.flip(-1)).all()) for a, b in zip(z, x))
    True
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    flip = torch.randint(0, 2, (b,), generator=generator, device=device).bool()
    rows = top[:, None] + torch.arange(h, device=device)  # (B, H)
    cols = torch.arange(w, device=device).expand(b, w)
    # Flipping the crop = reading its columns right to left.
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class TensorBatches:
    """Batches of an in-memory :class:`ImageData`, augmented and normalised on its device.

    Shuffling follows ``seed`` and the epoch (set with :meth:`set_epoch`), so a
    resumed run sees the same batches as an uninterrupted one. With
    ``world_size > 1`` each rank gets a disjoint shard; for training the
    indices are padded (like ``DistributedSampler``) so that every rank runs
    the same number of equal-sized steps, which DistributedDataParallel
    needs. A final batch of a single sample per rank is dropped in training,
    since batch statistics need at least two.
    """

    def __init__(
        self,
        data: ImageData,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.epoch = 0
        device = data.images.device
        self.mean = torch.tensor(CIFAR_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
        self.dtype = dtype

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.data)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
            per_rank = math.ceil(n / self.world_size)
            pad = per_rank * self.world_size - n
            if pad:
                order = torch.cat([order, order[:pad]])
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        m = len(self._indices())
        full, rest = divmod(m, self.batch_size)
        return full + (rest > 1 if self.train else rest > 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.data.images.device
        order = self._indices().to(device)
        generator = None
        if self.train:
            generator = torch.Generator(device=device)
            generator.manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.data.images[idx]
            if self.train:
                x = random_crop_flip(x, padding=4, generator=generator)
            x = (x.to(self.dtype) / 255 - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.data.labels[idx]
