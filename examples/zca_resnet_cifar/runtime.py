"""Process set-up for the CIFAR example: device, torchrun, seeding, logging, saving."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class Env:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_env(args: argparse.Namespace) -> Env:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if world_size == 1:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return Env(device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = args.dist_backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend)
    return Env(device, rank, world_size)


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns instead of failing.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def log(env: Env, *msg: object, file=None) -> None:
    # sys.stdout looked up at each call, not bound at import: it may be replaced.
    if env.is_main:
        print(*msg, file=file or sys.stdout, flush=True)


def loud(env: Env, text: str) -> None:
    """``text`` in a box, once, on stderr (with the progress bars and errors)."""
    bar = "=" * 78
    log(env, f"{bar}\n{text}\n{bar}", file=sys.stderr)


def atomic_save(obj: object, path: Path) -> None:
    # A run killed while writing must not leave a truncated checkpoint behind.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def all_reduce_sum(values: torch.Tensor, env: Env) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(values)
    return values
