"""Train ResNet-18 with ZCA whitening (or PCA denoising, or BatchNorm) on CIFAR.

Reproduces the CIFAR experiment of "Backpropagation-Friendly
Eigendecomposition" (Wang et al., NeurIPS 2019): the defaults are the paper's
(SGD, momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 divided by 10 at epochs
100, 200 and 300, 350 epochs). Every option can be overridden; see
``--help`` and this folder's README.md.

Single device::

    python examples/zca_resnet_cifar/train.py --norm zca --group-size 16 --out-dir runs/zca16

Several GPUs (the global batch is split over the processes, and the whitening
and BatchNorm layers use the statistics of the global batch)::

    torchrun --standalone --nproc_per_node=4 examples/zca_resnet_cifar/train.py --norm zca
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

if __package__:  # imported as a package (the tests)
    from . import data as data_lib
    from .checkpoint import CheckpointError, load_checkpoint
    from .guard import NonFiniteError, NonFiniteGuard, diagnose_failure
    from .model import NORMS, ModelConfig, ResNet, parse_blocks
    from .outputs import RUN_FILES, RunFiles
    from .runtime import Env, all_reduce_sum, log, loud, seed_everything, setup_env
else:  # run as a script: this folder is on sys.path
    import data as data_lib
    from checkpoint import CheckpointError, load_checkpoint
    from guard import NonFiniteError, NonFiniteGuard, diagnose_failure
    from model import NORMS, ModelConfig, ResNet, parse_blocks
    from outputs import RUN_FILES, RunFiles
    from runtime import Env, all_reduce_sum, log, loud, seed_everything, setup_env


class UsageError(ValueError):
    """The command line asks for something this run cannot do."""


# Failures a user can act on: main() reports them as one "error:" line and exits
# with their status (2, argparse's, for a bad command line).
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_NO_DATA = 4
EXIT_BAD_CHECKPOINT = 5
EXIT_STATUS = {
    UsageError: EXIT_USAGE,
    NonFiniteError: EXIT_NONFINITE,
    data_lib.DatasetUnavailableError: EXIT_NO_DATA,
    CheckpointError: EXIT_BAD_CHECKPOINT,
}


# ----------------------------------------------------------------------- arguments


# Each option's type checks its value, so that a bad one ends in argparse's one
# "error:" line (exit status 2) rather than in a traceback from deep inside.


def _milestones(text: str) -> list[int]:
    try:
        milestones = sorted(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be epochs separated by commas, like 100,200; got {text!r}"
        ) from None
    if milestones and milestones[0] < 1:
        raise argparse.ArgumentTypeError(f"epochs are counted from 1; got {text!r}")
    return milestones


def _blocks(text: str) -> tuple[int, ...]:
    try:
        return parse_blocks(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be four positive integers like 2,2,2,2; got {text!r}"
        ) from None


def _finite_float(text: str) -> float:
    # float() accepts "nan" and "inf", which would only surface as a NaN loss.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def _float_in(low: float, high: float | None = None, *, open_low: bool = False):
    """An argparse type: a finite number ``>= low`` (``> low`` if ``open_low``), ``<= high``."""

    def parse(text: str) -> float:
        value = _finite_float(text)
        if value < low or (open_low and value == low) or (high is not None and value > high):
            bound = f"{'>' if open_low else '>='} {low:g}"
            if high is not None:
                bound = f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {bound}; got {text!r}")
        return value

    return parse


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


DEVICE_TYPES = ("cpu", "cuda", "mps")


def _device(text: str) -> str:
    """``auto`` or a device this machine has: cpu, cuda, cuda:N, mps."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"must be auto, cpu, cuda, cuda:N or mps; got {text!r}"
        ) from None
    if device.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(
            f"must be auto, cpu, cuda, cuda:N or mps; got {text!r} (training on "
            f"{device.type} is not supported by this script)"
        )
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: no CUDA device is available here "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use --device cpu")
    return text


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Defaults of on/off flags ("--no-download (default: True)") confuse more than help,
    def _get_help_string(self, action):
        # and options without a default say in their help what happens.
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=["cifar10", "cifar100", "synthetic"],
        default="cifar10",
        help="synthetic: generated CIFAR-shaped images, no download",
    )
    g.add_argument(
        "--data-dir",
        default=os.environ.get("SVDPI_DATA", "data"),
        help="where CIFAR is (or is downloaded to); env SVDPI_DATA",
    )
    g.add_argument(
        "--no-download", dest="download", action="store_false", help="never try to download CIFAR"
    )
    g.add_argument(
        "--fallback-synthetic",
        action="store_true",
        help="if CIFAR is missing and cannot be downloaded, train on the synthetic "
        "data set instead (announced loudly) rather than stopping",
    )
    g.add_argument(
        "--synthetic-size",
        type=_int_in(2),
        default=10_000,
        help="training images of the synthetic data set",
    )
    g.add_argument(
        "--synthetic-test-size",
        type=_int_in(1),
        default=None,
        help="held-out images of the synthetic data set (default: size / 5)",
    )

    g = p.add_argument_group("model")
    g.add_argument(
        "--norm", choices=NORMS, default="zca", help="normalisation after the stem convolution"
    )
    grp = g.add_mutually_exclusive_group()
    grp.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="zca/pca: channels per group, d (default: all channels in one group)",
    )
    grp.add_argument("--num-groups", type=int, default=None, help="zca/pca: number of groups")
    g.add_argument(
        "--n-components", type=_int_in(1), default=16, help="pca: eigenvectors kept per group"
    )
    g.add_argument(
        "--method",
        choices=["pi", "taylor", "analytic", "exact"],
        default="pi",
        help="zca/pca: gradient of the whitening matrix or projector (the paper's power "
        "iteration, its Taylor variant, the classical eigh gradient, or the exact "
        "derivative of the matrix function; see svdpi.zca_whitening_matrix_vjp)",
    )
    g.add_argument(
        "--num-iters", type=_int_in(1), default=19, help="zca/pca: power-iteration steps"
    )
    g.add_argument(
        "--eps", type=_float_in(0.0), default=1e-4, help="zca/pca: added to the covariance"
    )
    g.add_argument(
        "--norm-momentum",
        type=_float_in(0.0, 1.0),
        default=0.1,
        help="momentum of the stem norm's running statistics",
    )
    g.add_argument(
        "--width",
        type=_int_in(1),
        default=64,
        help="channels of the stem and first stage (64 = ResNet-18)",
    )
    g.add_argument(
        "--blocks",
        type=_blocks,
        default=(2, 2, 2, 2),
        help="BasicBlocks per stage (2,2,2,2 = ResNet-18)",
    )

    g = p.add_argument_group("optimisation (defaults: the paper's)")
    g.add_argument("--epochs", type=_int_in(1), default=350, help="epochs to train")
    g.add_argument(
        "--batch-size",
        type=_int_in(1),
        default=128,
        help="global batch size, split over the processes",
    )
    g.add_argument(
        "--eval-batch-size", type=_int_in(1), default=500, help="batch size of evaluation"
    )
    g.add_argument("--lr", type=_float_in(0.0), default=0.1, help="initial learning rate")
    g.add_argument("--momentum", type=_float_in(0.0), default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=_float_in(0.0), default=5e-4, help="on all parameters")
    g.add_argument(
        "--milestones",
        type=_milestones,
        default=[100, 200, 300],
        help="epochs after which the lr is multiplied by --gamma ('' for none)",
    )
    g.add_argument(
        "--gamma",
        type=_float_in(0.0, open_low=True),
        default=0.1,
        help="lr factor at each milestone",
    )
    g.add_argument(
        "--max-steps",
        type=_int_in(1),
        default=None,
        help="stop each epoch after this many optimiser steps (smoke runs)",
    )

    g = p.add_argument_group("run")
    g.add_argument(
        "--out-dir",
        default=None,
        help="metrics.jsonl, args.json, last.pt, best.pt (default: runs/<name>, the name "
        "made of the data set, the norm and its group size, the width, the blocks if not "
        "2,2,2,2, and the seed, e.g. runs/cifar10-zca-d16-w64-seed0); a folder that "
        "already holds a run is refused unless --resume or --overwrite is given",
    )
    again = g.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (default: OUT_DIR/last.pt)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in OUT_DIR (its metrics, checkpoints, settings and "
        "TensorBoard logs are deleted first)",
    )
    g.add_argument(
        "--seed",
        type=_int_in(0, 2**32 - 1),
        default=0,
        help="weights, shuffling, augmentation",
    )
    g.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (slower); same seed, same numbers",
    )
    g.add_argument(
        "--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:1, ..., mps"
    )
    g.add_argument(
        "--threads",
        type=_int_in(1),
        default=None,
        help="CPU threads for torch (default: torch's choice)",
    )
    g.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="mixed precision (the whitening itself runs in float32)",
    )
    g.add_argument("--channels-last", action="store_true", help="NHWC activations")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--dist-backend",
        choices=["nccl", "gloo", "mpi", "ucc"],
        default=None,
        help="torchrun runs: nccl on GPUs, gloo on CPU by default",
    )
    g.add_argument(
        "--no-sync-bn",
        dest="sync_bn",
        action="store_false",
        help="torchrun on GPUs: keep per-process BatchNorm statistics",
    )
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log to OUT_DIR/tensorboard (needs the tensorboard package)",
    )
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (one line per epoch instead)",
    )
    g.add_argument(
        "--log-interval",
        type=_int_in(1),
        default=10,
        help="steps between progress-bar updates and NaN checks",
    )
    # Test hook: makes the loss NaN at this global step (1-based), to exercise the guard.
    g.add_argument("--inject-nan-at-step", type=_int_in(1), default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.norm in ("zca", "pca"):
        if args.group_size is not None:
            if args.group_size < 1 or args.width % args.group_size:
                parser.error(f"--group-size {args.group_size} must divide --width {args.width}")
            args.num_groups = args.width // args.group_size
        elif args.num_groups is None:
            args.num_groups = 1
        if args.num_groups < 1 or args.width % args.num_groups:
            parser.error(f"--num-groups {args.num_groups} must divide --width {args.width}")
        args.group_size = args.width // args.num_groups
        if args.norm == "pca" and not 1 <= args.n_components <= args.group_size:
            parser.error(f"--n-components must be in [1, group size {args.group_size}]")
    elif args.group_size is not None or args.num_groups is not None:
        parser.error("--group-size/--num-groups apply to --norm zca and pca only")
    if args.out_dir is None:
        args.out_dir = default_out_dir(args)
    check_out_dir(parser, args)
    return args


def default_out_dir(args: argparse.Namespace) -> str:
    """``runs/<name>``, the name made of what tells runs apart.

    The data set (with its size when synthetic), the norm with its group size
    (and components, gradient method if not the default), the width, the
    blocks when not ResNet-18's, and the seed: runs differing in any of them
    get different folders.

    Examples
    --------
    >>> default_out_dir(parse_args(["--norm", "zca", "--group-size", "16"]))
    'runs/cifar10-zca-d16-w64-seed0'
    >>> default_out_dir(parse_args(["--dataset", "synthetic", "--norm", "pca", "--width", "16",
    ...                             "--num-groups", "1", "--n-components", "4", "--blocks",
    ...                             "1,1,1,1", "--method", "exact", "--seed", "3"]))
    'runs/synthetic10000-pca-d16-k4-exact-w16-b1111-seed3'
    """
    data = args.dataset
    if data == "synthetic":
        data += str(args.synthetic_size)
        if args.synthetic_test_size is not None:
            data += f"t{args.synthetic_test_size}"
    setting = {
        "bn": "bn",
        "zca": f"zca-d{args.group_size}",
        "pca": f"pca-d{args.group_size}-k{args.n_components}",
    }[args.norm]
    if args.norm != "bn" and args.method != "pi":
        setting += f"-{args.method}"
    blocks = "" if tuple(args.blocks) == (2, 2, 2, 2) else "-b" + "".join(map(str, args.blocks))
    return f"runs/{data}-{setting}-w{args.width}{blocks}-seed{args.seed}"


def check_out_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an ``--out-dir`` that cannot be written, or that holds a run to keep.

    Before anything is loaded or trained: a path under a file, a file, a
    folder without write permission, or a folder holding a run's files when
    neither ``--resume`` nor ``--overwrite`` says what to do with them.
    """
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        parser.error(f"--out-dir {out} is a file, not a folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        parser.error(f"--out-dir {out}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out-dir {out}: {existing} is not writable")
    run = [name for name in RUN_FILES if (out / name).exists()]
    if run and args.resume is None and not args.overwrite:
        parser.error(
            f"--out-dir {out} already holds a run ({', '.join(run)}): pass --resume to "
            "continue it, --overwrite to replace it, or choose another --out-dir"
        )


def model_config(args: argparse.Namespace, num_classes: int) -> ModelConfig:
    return ModelConfig(
        num_classes=num_classes,
        width=args.width,
        blocks=tuple(args.blocks),
        norm=args.norm,
        num_groups=args.num_groups or 1,
        n_components=args.n_components,
        eps=args.eps,
        norm_momentum=args.norm_momentum,
        method=args.method,
        num_iters=args.num_iters,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace
) -> torch.optim.lr_scheduler.MultiStepLR:
    """The learning rate: ``--lr``, times ``--gamma`` after each of the ``--milestones`` epochs.

    Stepped once at the end of every epoch, so epoch ``e`` (1-based) trains at
    ``lr * gamma ** (number of milestones < e)``: with the defaults 0.1 for
    epochs 1-100, 0.01 for 101-200, and so on.
    """
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=args.milestones, gamma=args.gamma
    )


# ---------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace, env: Env) -> tuple[data_lib.Dataset, str]:
    """The data set, and a note when it is not the one asked for."""
    test_size = args.synthetic_test_size or max(args.synthetic_size // 5, 1)
    if args.dataset == "synthetic":
        return data_lib.make_synthetic(args.synthetic_size, test_size), ""
    try:
        if env.distributed and not env.is_main:
            dist.barrier()  # rank 0 downloads first
        dataset = data_lib.load_cifar(args.dataset, args.data_dir, download=args.download)
        return dataset, ""
    except data_lib.DatasetUnavailableError as exc:
        if not args.fallback_synthetic:
            raise
        reason = str(exc)
    finally:
        if env.distributed and env.is_main:
            dist.barrier()
    classes = data_lib.CIFAR_CLASSES[args.dataset]
    note = (
        f"WARNING: {reason}\n\n"
        f"--fallback-synthetic was given: training on the SYNTHETIC data set instead\n"
        f"({args.synthetic_size} generated CIFAR-shaped images, {classes} classes).\n"
        f"The accuracies of this run say nothing about {args.dataset}."
    )
    return data_lib.make_synthetic(args.synthetic_size, test_size, classes), note


def make_loaders(
    dataset: data_lib.Dataset, args: argparse.Namespace, env: Env
) -> tuple[data_lib.TensorBatches, data_lib.TensorBatches]:
    """Training and test batches of this process's shard, on the training device.

    The whole data set goes to the device (CIFAR-10: 150 MB of uint8): batches
    are gathered, augmented and normalised there.
    """
    common = {"rank": env.rank, "world_size": env.world_size, "channels_last": args.channels_last}
    train = data_lib.TensorBatches(
        dataset.train.to(env.device),
        batch_size=args.batch_size // env.world_size,
        train=True,
        seed=args.seed,
        **common,
    )
    test = data_lib.TensorBatches(
        dataset.test.to(env.device), batch_size=args.eval_batch_size, train=False, **common
    )
    return train, test


# --------------------------------------------------------------------------- model


def build_model(config: ModelConfig, args: argparse.Namespace, env: Env):
    """(raw model, model to train): the latter wrapped for DDP and compiled if asked."""
    torch.manual_seed(args.seed)  # same initial weights on every rank and every resume
    raw = ResNet(config).to(env.device)
    if args.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    model = raw
    if env.distributed:
        if config.norm in ("zca", "pca"):
            import svdpi.torch as svdpi_torch

            model = svdpi_torch.convert_sync_whitening(model)
        if args.sync_bn and env.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # The conversions return new modules for the layers they replace: train
        # and checkpoint that converted network (its state_dict keys are unchanged).
        raw = model
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    if args.compile:
        model = torch.compile(model)
    return raw, model


# ------------------------------------------------------------------ training state


@dataclass
class Training:
    """Everything a run trains with, and how far it has got.

    ``raw`` is the network whose state is saved and evaluated; ``model`` is what
    the training steps call (``raw``, wrapped for DDP and compiled as asked).
    """

    args: argparse.Namespace
    env: Env
    dataset: data_lib.Dataset
    config: ModelConfig
    raw: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    train_loader: data_lib.TensorBatches
    test_loader: data_lib.TensorBatches
    epoch: int = 0  # the last finished epoch
    global_step: int = 0
    best_test_acc: float = -1.0
    # The newest checkpoint a failed run can be resumed from, and its epoch.
    last_good: tuple[Path, int] | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.args.amp)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=dtype)

    def checkpoint_note(self) -> str:
        """Where a failed run can be resumed from, for its error message."""
        if self.last_good is None:
            return "No checkpoint had been written yet."
        path, epoch = self.last_good
        return (
            f"The last good checkpoint is {path} (end of epoch {epoch}); it was not overwritten."
        )

    def state_dict(self, metrics: dict) -> dict:
        return {
            "model": self.raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_test_acc": self.best_test_acc,
            "model_config": self.config.to_dict(),
            "metrics": metrics,
        }

    def load_state_dict(self, checkpoint: dict) -> None:
        # The optimiser's and the schedule's settings (lr, momentum, milestones,
        # gamma, ...) are the checkpoint's: resuming continues that run.
        self.raw.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = checkpoint["epoch"]
        self.global_step = checkpoint["global_step"]
        self.best_test_acc = checkpoint["best_test_acc"]


def resume_path(args: argparse.Namespace) -> Path | None:
    if args.resume is None:
        return None
    return Path(args.out_dir) / "last.pt" if args.resume == "auto" else Path(args.resume)


def build_training(args: argparse.Namespace, env: Env) -> tuple[Training, str]:
    """The run's data, network, optimiser and schedule, restored from ``--resume`` if given.

    Also returns the note to show when the data set is not the one asked for.
    """
    if args.batch_size % env.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} must be divisible by the {env.world_size} processes"
        )
    dataset, fallback_note = load_data(args, env)
    config = model_config(args, dataset.num_classes)
    checkpoint = None
    if (path := resume_path(args)) is not None:
        checkpoint = load_checkpoint(path, env.device, config.to_dict())  # before the slow part
    train_loader, test_loader = make_loaders(dataset, args, env)
    raw, model = build_model(config, args, env)
    optimizer = torch.optim.SGD(
        raw.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    training = Training(
        args=args,
        env=env,
        dataset=dataset,
        config=config,
        raw=raw,
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, args),
        scaler=torch.amp.GradScaler(env.device.type, enabled=args.amp == "fp16"),
        train_loader=train_loader,
        test_loader=test_loader,
    )
    if checkpoint is not None:
        try:
            training.load_state_dict(checkpoint)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"--resume: {path} does not fit this run ({exc})") from exc
        training.last_good = (path, training.epoch)
    return training, fallback_note


# ------------------------------------------------------------------------ training


def _progress_bar(training: Training, epoch: int, steps: int):
    args = training.args
    if not (args.progress and training.env.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=steps,
        desc=f"epoch {epoch}/{args.epochs}",
        unit="step",
        dynamic_ncols=True,
        leave=True,
        file=sys.stderr,
    )


def _train_step(
    training: Training, x: torch.Tensor, y: torch.Tensor, global_step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the batch (x, y); returns the (loss, logits) tensors."""
    with training.autocast():
        logits = training.model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
    if training.args.inject_nan_at_step == global_step:
        loss = loss * float("nan")
    training.optimizer.zero_grad(set_to_none=True)
    training.scaler.scale(loss).backward()
    training.scaler.step(training.optimizer)
    training.scaler.update()
    return loss, logits


def _report_failed_step(
    training: Training, guard: NonFiniteGuard, x: torch.Tensor, where: str, exc: Exception
) -> None:
    """Raise the guard's error if a step raised because the values stopped being finite.

    Diverging weights can make a layer raise (an eigensolver refuses a
    non-finite matrix) before any loss is NaN: report the first bad loss if
    there was one, else where the values stopped being finite. Returns if the
    step failed for another reason (the caller re-raises it).
    """
    guard.check()
    nonfinite, what = diagnose_failure(training.raw, x)
    # ... or the layer says so itself ("the batch covariance has NaN or infinite entries").
    numerical = isinstance(exc, torch.linalg.LinAlgError) or bool(
        re.search(r"\b(nan|inf|infinite|finite)\b", str(exc), re.IGNORECASE)
    )
    if nonfinite or numerical:
        guard.fail(f"{what} {where}; the step raised {exc!r}")


def train_one_epoch(training: Training, epoch: int, guard: NonFiniteGuard) -> dict:
    """Train one epoch; returns its metrics, summed over the processes."""
    args, env = training.args, training.env
    loader = training.train_loader
    training.model.train()
    loader.set_epoch(epoch)
    lr = training.optimizer.param_groups[0]["lr"]
    steps = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    bar = _progress_bar(training, epoch, steps)
    # Running sums stay on the device (no synchronisation per step): loss*n, correct.
    sums = torch.zeros(2, dtype=torch.float64, device=env.device)
    seen = 0
    start = time.perf_counter()
    step = 0
    for step, (x, y) in enumerate(itertools.islice(loader, steps), start=1):
        global_step = training.global_step + 1
        try:
            loss, logits = _train_step(training, x, y, global_step)
        except Exception as exc:
            where = f"at epoch {epoch}, step {step} (global step {global_step})"
            _report_failed_step(training, guard, x, where, exc)
            raise
        training.global_step = global_step
        guard.add(step, global_step, loss)
        sums += torch.stack(
            [loss.detach().double() * y.shape[0], (logits.argmax(1) == y).sum().double()]
        )
        seen += y.shape[0]
        if step % args.log_interval == 0 or step == steps:
            guard.check()
            if bar is not None:
                loss_sum, correct = sums.tolist()
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}",
                    acc=f"{100 * correct / seen:.1f}%",
                    img_s=f"{seen * env.world_size / elapsed:.0f}",
                    lr=f"{lr:g}",
                    refresh=False,
                )
        if bar is not None:
            bar.update(1)
    guard.check()
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    totals = torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=env.device)])
    loss_sum, correct, n = all_reduce_sum(totals, env).tolist()
    return {
        "train_loss": loss_sum / max(n, 1),
        "train_acc": 100 * correct / max(n, 1),
        "train_samples": int(n),
        "steps": step,
        "images_per_s": n / elapsed if elapsed > 0 else float("nan"),
        "train_time_s": elapsed,
        "lr": lr,
    }


@torch.no_grad()
def evaluate(training: Training) -> dict:
    """Loss and accuracy on the test set, summed over the processes."""
    # The raw model: DDP's forward would broadcast buffers, a collective that
    # ranks with different numbers of test batches cannot all join.
    env, model = training.env, training.raw
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=env.device)
    seen = 0
    for x, y in training.test_loader:
        with training.autocast():
            logits = model(x)
        loss_sum = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        sums += torch.stack([loss_sum.double(), (logits.argmax(1) == y).sum().double()])
        seen += y.shape[0]
    totals = torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=env.device)])
    loss_sum, correct, n = all_reduce_sum(totals, env).tolist()
    return {
        "test_loss": loss_sum / max(n, 1),
        "test_acc": 100 * correct / max(n, 1),
        "test_samples": int(n),
    }


def run_epoch(training: Training, epoch: int) -> dict:
    """Train and evaluate ``epoch``; check its end state before anything is saved.

    Raises
    ------
    NonFiniteError
        If a loss, a parameter or a buffer is not finite: the epoch is then not
        recorded and the previous checkpoint stays the last one.
    """
    guard = NonFiniteGuard(training.env, epoch, training.checkpoint_note())
    metrics = {"epoch": epoch, **train_one_epoch(training, epoch, guard)}
    metrics.update(evaluate(training))
    guard.check_epoch(training.raw, {k: metrics[k] for k in ("train_loss", "test_loss")})
    training.scheduler.step()
    training.epoch = epoch
    training.best_test_acc = max(training.best_test_acc, metrics["test_acc"])
    metrics["global_step"] = training.global_step
    metrics["best_test_acc"] = training.best_test_acc
    return metrics


# ----------------------------------------------------------------------------- run


def run_record(training: Training) -> dict:
    """The settings and circumstances of a run, for ``args.json``."""
    args, env, dataset, raw = training.args, training.env, training.dataset, training.raw
    return {
        **{k: v for k, v in vars(args).items() if k != "inject_nan_at_step"},
        "blocks": list(args.blocks),
        "dataset_used": dataset.name,
        "num_classes": dataset.num_classes,
        "train_size": len(dataset.train),
        "test_size": len(dataset.test),
        "model_config": training.config.to_dict(),
        "stem_norm_class": type(getattr(raw, "stem_norm", None)).__name__,
        "num_parameters": sum(p.numel() for p in raw.parameters()),
        "world_size": env.world_size,
        "device": str(env.device),
        "device_name": (
            torch.cuda.get_device_name(env.device)
            if env.device.type == "cuda"
            else platform.processor() or "cpu"
        ),
        "torch_version": torch.__version__,
        "command": sys.argv,
    }


def log_start(training: Training, files: RunFiles) -> None:
    args, env, dataset = training.args, training.env, training.dataset
    stem = type(getattr(training.raw, "stem_norm", None)).__name__
    instead = "" if dataset.name == args.dataset else f" (not {args.dataset}: see the warning)"
    log(
        env,
        f"{dataset.name}{instead}: {len(dataset.train)} train / {len(dataset.test)} test images, "
        f"{dataset.num_classes} classes; stem norm {training.config.norm} ({stem}); "
        f"device {env.device} x{env.world_size}; out-dir {files.out}",
    )
    if env.distributed and env.device.type != "cuda" and args.sync_bn:
        log(
            env,
            "note: BatchNorm layers keep per-process statistics on CPU "
            "(SyncBatchNorm needs GPUs); whitening layers are synchronised.",
        )
    if training.epoch >= args.epochs:
        log(
            env,
            f"nothing to do: the checkpoint is at epoch {training.epoch} "
            f"and --epochs is {args.epochs}",
        )


def log_epoch(training: Training, m: dict) -> None:
    log(
        training.env,
        f"epoch {m['epoch']}/{training.args.epochs}: train loss {m['train_loss']:.4f} "
        f"acc {m['train_acc']:.2f}% | test loss {m['test_loss']:.4f} "
        f"acc {m['test_acc']:.2f}% (best {m['best_test_acc']:.2f}%) | "
        f"{m['images_per_s']:.0f} img/s, lr {m['lr']:g}",
    )


def run(args: argparse.Namespace) -> dict:
    env = setup_env(args)
    try:
        summary = _run(args, env)
        if env.distributed:
            # Every rank done (rank 0 last, with its files) before any tears down
            # gloo: a rank leaving early made its peer abort at exit.
            dist.barrier()
        return summary
    finally:
        if env.distributed:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, env: Env) -> dict:
    seed_everything(args.seed, args.deterministic)
    training, fallback_note = build_training(args, env)
    if fallback_note:
        loud(env, fallback_note)
    files = RunFiles(Path(args.out_dir), env)
    files.start(
        run_record(training),
        first_epoch=training.epoch + 1,
        resumed=training.last_good is not None,
        tensorboard=args.tensorboard,
        overwrite=args.overwrite,
    )
    log_start(training, files)
    summary: dict = {"epochs_run": 0, "best_test_acc": training.best_test_acc}
    try:
        for epoch in range(training.epoch + 1, args.epochs + 1):
            previous_best = training.best_test_acc
            metrics = run_epoch(training, epoch)
            is_best = metrics["test_acc"] > previous_best
            files.write_epoch(training.state_dict(metrics), metrics, is_best=is_best)
            training.last_good = (files.last, epoch)
            log_epoch(training, metrics)
            summary = {
                "epochs_run": summary["epochs_run"] + 1,
                "best_test_acc": training.best_test_acc,
                "last": metrics,
            }
    finally:
        files.close()
    log(env, files.describe())
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Every failure the user can act on (no data, a diverged run, a checkpoint
    that cannot be resumed, an impossible setting) ends with one ``error:``
    line on stderr and its own exit status, not a traceback.
    """
    args = parse_args(argv)
    deterministic_before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    benchmark_before = torch.backends.cudnn.benchmark
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except tuple(EXIT_STATUS) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return next(s for cls, s in EXIT_STATUS.items() if isinstance(exc, cls))
    finally:
        # Leave the process as it was (the tests call main() in-process).
        enabled, warn_only = deterministic_before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark_before
        torch.set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
