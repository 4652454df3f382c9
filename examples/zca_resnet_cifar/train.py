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
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

if __package__:  # imported as a package (the tests)
    from . import data as data_lib
    from .guard import NonFiniteGuard, NonFiniteLossError, diagnose_failure
    from .model import NORMS, ModelConfig, ResNet, parse_blocks
    from .runtime import Env, all_reduce_sum, atomic_save, log, loud, seed_everything, setup_env
else:  # run as a script: this folder is on sys.path
    import data as data_lib
    from guard import NonFiniteGuard, NonFiniteLossError, diagnose_failure
    from model import NORMS, ModelConfig, ResNet, parse_blocks
    from runtime import Env, all_reduce_sum, atomic_save, log, loud, seed_everything, setup_env

EXIT_NONFINITE = 3
EXIT_NO_DATA = 4


# ----------------------------------------------------------------------- arguments


def _milestones(text: str) -> list[int]:
    return sorted(int(m) for m in text.split(",") if m.strip())


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
        type=int,
        default=10_000,
        help="training images of the synthetic data set",
    )
    g.add_argument(
        "--synthetic-test-size",
        type=int,
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
    g.add_argument("--n-components", type=int, default=16, help="pca: eigenvectors kept per group")
    g.add_argument(
        "--method",
        choices=["pi", "taylor", "analytic"],
        default="pi",
        help="zca/pca: eigenvector gradient (svdpi.eig_vjp)",
    )
    g.add_argument("--num-iters", type=int, default=19, help="zca/pca: power-iteration steps")
    g.add_argument("--eps", type=float, default=1e-4, help="zca/pca: added to the covariance")
    g.add_argument(
        "--norm-momentum",
        type=float,
        default=0.1,
        help="momentum of the stem norm's running statistics",
    )
    g.add_argument(
        "--width",
        type=int,
        default=64,
        help="channels of the stem and first stage (64 = ResNet-18)",
    )
    g.add_argument(
        "--blocks",
        type=parse_blocks,
        default=(2, 2, 2, 2),
        help="BasicBlocks per stage (2,2,2,2 = ResNet-18)",
    )

    g = p.add_argument_group("optimisation (defaults: the paper's)")
    g.add_argument("--epochs", type=int, default=350, help="epochs to train")
    g.add_argument(
        "--batch-size", type=int, default=128, help="global batch size, split over the processes"
    )
    g.add_argument("--eval-batch-size", type=int, default=500, help="batch size of evaluation")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="on all parameters")
    g.add_argument(
        "--milestones",
        type=_milestones,
        default=[100, 200, 300],
        help="epochs after which the lr is multiplied by --gamma ('' for none)",
    )
    g.add_argument("--gamma", type=float, default=0.1, help="lr factor at each milestone")
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop each epoch after this many optimiser steps (smoke runs)",
    )

    g = p.add_argument_group("run")
    g.add_argument(
        "--out-dir",
        default=None,
        help="metrics.jsonl, args.json, last.pt, best.pt (default: runs/<name>)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (default: OUT_DIR/last.pt)",
    )
    g.add_argument("--seed", type=int, default=0, help="weights, shuffling, augmentation")
    g.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (slower); same seed, same numbers",
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
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
        "--dist-backend", default=None, help="torchrun runs: nccl on GPUs, gloo on CPU by default"
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
        type=int,
        default=10,
        help="steps between progress-bar updates and NaN checks",
    )
    # Test hook: makes the loss NaN at this global step (1-based), to exercise the guard.
    g.add_argument("--inject-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)
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
    for name in ("epochs", "batch_size", "eval_batch_size", "synthetic_size", "log_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if args.out_dir is None:
        setting = {
            "bn": "bn",
            "zca": f"zca-d{args.group_size}",
            "pca": f"pca-d{args.group_size}-k{args.n_components}",
        }
        args.out_dir = f"runs/{args.dataset}-{setting[args.norm]}-seed{args.seed}"
    return args


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


def lr_at(args: argparse.Namespace, epoch: int) -> float:
    """Learning rate of (1-based) ``epoch``: 0.1 for epochs 1-100, 0.01 for 101-200, ..."""
    return args.lr * args.gamma ** sum(epoch > m for m in args.milestones)


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


# ------------------------------------------------------------------------ training


def train_one_epoch(ctx: dict, epoch: int) -> dict:
    args, env, model = ctx["args"], ctx["env"], ctx["model"]
    loader, optimizer, scaler = ctx["train_loader"], ctx["optimizer"], ctx["scaler"]
    criterion = nn.CrossEntropyLoss()
    model.train()
    loader.set_epoch(epoch)
    lr = lr_at(args, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    steps = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    guard = NonFiniteGuard(env, epoch, ctx["checkpoint_note"]())
    bar = None
    if args.progress and env.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{args.epochs}",
            unit="step",
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
        )
    # Running sums stay on the device (no synchronisation per step): loss*n, correct.
    sums = torch.zeros(2, dtype=torch.float64, device=env.device)
    seen = 0
    start = time.perf_counter()
    step = 0
    for step, (x, y) in enumerate(itertools.islice(loader, steps), start=1):
        global_step = ctx["global_step"] + 1
        try:
            with ctx["autocast"]():
                logits = model(x)
                loss = criterion(logits.float(), y)
            if args.inject_nan_at_step == global_step:
                loss = loss * float("nan")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        except Exception as exc:
            # Diverging weights can make a layer raise (an eigensolver refuses a
            # non-finite matrix) before any loss is NaN: report the first bad
            # loss if there was one, else where the values stopped being finite.
            guard.check()
            nonfinite, where = diagnose_failure(ctx["raw"], x)
            # ... or says so itself ("the batch covariance has NaN or infinite entries").
            numerical = isinstance(exc, torch.linalg.LinAlgError) or bool(
                re.search(r"\b(nan|inf|infinite|finite)\b", str(exc), re.IGNORECASE)
            )
            if nonfinite or numerical:
                guard.fail(step, global_step, f"{where}; the step raised {exc!r}")
            raise
        ctx["global_step"] = global_step
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
def evaluate(ctx: dict) -> dict:
    # The raw model: DDP's forward would broadcast buffers, a collective that
    # ranks with different numbers of test batches cannot all join.
    env, model = ctx["env"], ctx["raw"]
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=env.device)
    seen = 0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for x, y in ctx["test_loader"]:
        with ctx["autocast"]():
            logits = model(x)
        sums += torch.stack(
            [criterion(logits.float(), y).double(), (logits.argmax(1) == y).sum().double()]
        )
        seen += y.shape[0]
    totals = torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=env.device)])
    loss_sum, correct, n = all_reduce_sum(totals, env).tolist()
    return {
        "test_loss": loss_sum / max(n, 1),
        "test_acc": 100 * correct / max(n, 1),
        "test_samples": int(n),
    }


def load_checkpoint(path: Path, env: Env) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return torch.load(path, map_location=env.device, weights_only=True)


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
    out = Path(args.out_dir)
    seed_everything(args.seed, args.deterministic)
    if args.batch_size % env.world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} must be divisible by the {env.world_size} processes"
        )
    dataset, fallback_note = load_data(args, env)
    if fallback_note:
        loud(env, fallback_note)
    config = model_config(args, dataset.num_classes)

    checkpoint = None
    if args.resume is not None:
        path = out / "last.pt" if args.resume == "auto" else Path(args.resume)
        checkpoint = load_checkpoint(path, env)
        if checkpoint["model_config"] != config.to_dict():
            raise ValueError(
                f"--resume: the checkpoint {path} is of a different model:\n"
                f"  checkpoint: {checkpoint['model_config']}\n  this run:   {config.to_dict()}"
            )

    # Whole data set on the device (CIFAR-10: 150 MB of uint8): batches are
    # gathered, augmented and normalised there.
    train_data = dataset.train.to(env.device)
    test_data = dataset.test.to(env.device)
    per_rank_batch = args.batch_size // env.world_size
    common = {"rank": env.rank, "world_size": env.world_size, "channels_last": args.channels_last}
    train_loader = data_lib.TensorBatches(
        train_data, batch_size=per_rank_batch, train=True, seed=args.seed, **common
    )
    test_loader = data_lib.TensorBatches(
        test_data, batch_size=args.eval_batch_size, train=False, **common
    )

    raw, model = build_model(config, args, env)
    optimizer = torch.optim.SGD(
        raw.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp == "fp16")

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(env.device.type, dtype=amp_dtype)

    first_epoch, best_acc, global_step = 1, -1.0, 0
    if checkpoint is not None:
        raw.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        first_epoch = checkpoint["epoch"] + 1
        best_acc = checkpoint["best_test_acc"]
        global_step = checkpoint["global_step"]

    metrics_path = out / "metrics.jsonl"
    tb_writer = None
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None and metrics_path.exists():
            # Keep the epochs the checkpoint has seen: a run stopped between its
            # metrics line and its checkpoint must not list an epoch twice.
            lines = metrics_path.read_text().splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["epoch"] < first_epoch]
            metrics_path.write_text("".join(ln + "\n" for ln in kept))
        elif checkpoint is None:
            metrics_path.write_text("")
        stem = type(getattr(raw, "stem_norm", None)).__name__
        record = {
            **{k: v for k, v in vars(args).items() if k != "inject_nan_at_step"},
            "blocks": list(args.blocks),
            "dataset_used": dataset.name,
            "num_classes": dataset.num_classes,
            "train_size": len(dataset.train),
            "test_size": len(dataset.test),
            "model_config": config.to_dict(),
            "stem_norm_class": stem,
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
        (out / "args.json").write_text(json.dumps(record, indent=2) + "\n")
        if args.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                log(
                    env,
                    f"--tensorboard: not available ({exc}); pip install tensorboard. "
                    "Continuing without it.",
                    file=sys.stderr,
                )
            else:
                tb_writer = SummaryWriter(str(out / "tensorboard"))

    log(
        env,
        f"{dataset.name}: {len(dataset.train)} train / {len(dataset.test)} test images, "
        f"{dataset.num_classes} classes; stem norm {config.norm} "
        f"({type(getattr(raw, 'stem_norm', None)).__name__}); device {env.device} "
        f"x{env.world_size}; out-dir {out}",
    )
    if env.distributed and env.device.type != "cuda" and args.sync_bn:
        log(
            env,
            "note: BatchNorm layers keep per-process statistics on CPU "
            "(SyncBatchNorm needs GPUs); whitening layers are synchronised.",
        )
    if first_epoch > args.epochs:
        log(
            env,
            f"nothing to do: the checkpoint is at epoch {first_epoch - 1} "
            f"and --epochs is {args.epochs}",
        )

    ctx = {
        "args": args,
        "env": env,
        "model": model,
        "raw": raw,
        "optimizer": optimizer,
        "scaler": scaler,
        "autocast": autocast,
        "train_loader": train_loader,
        "test_loader": test_loader,
        "global_step": global_step,
    }
    last_good = {"epoch": first_epoch - 1}

    def checkpoint_note() -> str:
        if last_good["epoch"] >= 1 and (out / "last.pt").exists():
            return (
                f"The last good checkpoint is {out / 'last.pt'} "
                f"(end of epoch {last_good['epoch']}); it was not overwritten."
            )
        return "No checkpoint had been written yet."

    ctx["checkpoint_note"] = checkpoint_note
    summary: dict = {"epochs_run": 0, "best_test_acc": best_acc}
    for epoch in range(first_epoch, args.epochs + 1):
        metrics = {"epoch": epoch, **train_one_epoch(ctx, epoch)}
        metrics.update(evaluate(ctx))
        metrics["global_step"] = ctx["global_step"]
        is_best = metrics["test_acc"] > best_acc
        best_acc = max(best_acc, metrics["test_acc"])
        metrics["best_test_acc"] = best_acc
        if env.is_main:
            state = {
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "best_test_acc": best_acc,
                "global_step": ctx["global_step"],
                "model_config": config.to_dict(),
                "test_acc": metrics["test_acc"],
            }
            atomic_save(state, out / "last.pt")
            if is_best:
                atomic_save(state, out / "best.pt")
            with metrics_path.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            if tb_writer is not None:
                for key in (
                    "train_loss",
                    "train_acc",
                    "test_loss",
                    "test_acc",
                    "images_per_s",
                    "lr",
                ):
                    tb_writer.add_scalar(key, metrics[key], epoch)
                tb_writer.flush()
        last_good["epoch"] = epoch
        log(
            env,
            f"epoch {epoch}/{args.epochs}: train loss {metrics['train_loss']:.4f} "
            f"acc {metrics['train_acc']:.2f}% | test loss {metrics['test_loss']:.4f} "
            f"acc {metrics['test_acc']:.2f}% (best {best_acc:.2f}%) | "
            f"{metrics['images_per_s']:.0f} img/s, lr {metrics['lr']:g}",
        )
        summary = {
            "epochs_run": summary["epochs_run"] + 1,
            "best_test_acc": best_acc,
            "last": metrics,
        }
    if tb_writer is not None:
        tb_writer.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
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
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_NONFINITE
    except data_lib.DatasetUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_NO_DATA
    finally:
        # Leave the process as it was (the tests call main() in-process).
        enabled, warn_only = deterministic_before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark_before
        torch.set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
