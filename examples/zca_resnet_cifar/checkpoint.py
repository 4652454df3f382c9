"""Checkpoints of the CIFAR example: the checks before a run continues from one.

A checkpoint is written only at the end of an epoch whose losses, parameters and
buffers are all finite (see ``guard.py``); :func:`load_checkpoint` checks the same
of the file it is given, so that ``--resume`` never starts from a diverged
state, and turns every reason a file cannot be resumed from into one
:class:`CheckpointError` whose message says which file and why.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

if __package__:  # imported as a package (the tests)
    from .guard import nonfinite_entries
else:  # run as a script: this folder is on sys.path
    from guard import nonfinite_entries

# What train.py saves; "scheduler" was added with the MultiStepLR schedule.
CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "global_step",
    "best_test_acc",
    "model_config",
    "metrics",
)
LOSSES = ("train_loss", "test_loss")


class CheckpointError(RuntimeError):
    """``--resume`` cannot continue from a checkpoint; the message says which and why."""


def load_checkpoint(path: Path, device: torch.device, model_config: dict) -> dict:
    """The checkpoint at ``path``, checked to be one this run can continue from.

    Raises
    ------
    CheckpointError
        If there is no file at ``path``, it is not a checkpoint of this script,
        it is of a different model than ``model_config``, or its tensors or its
        epoch's losses are not finite.
    """
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # any unpickling or format error: the file is unusable
        raise CheckpointError(f"--resume: {path} cannot be read as a checkpoint ({exc})") from exc
    missing = (
        [k for k in CHECKPOINT_KEYS if k not in checkpoint]
        if isinstance(checkpoint, dict)
        else list(CHECKPOINT_KEYS)
    )
    if missing:
        raise CheckpointError(
            f"--resume: {path} is not a checkpoint of this version of train.py "
            f"(it lacks {', '.join(missing)}); start a new run"
        )
    if checkpoint["model_config"] != model_config:
        raise CheckpointError(
            f"--resume: the checkpoint {path} is of a different model:\n"
            f"  checkpoint: {checkpoint['model_config']}\n  this run:   {model_config}"
        )
    bad = nonfinite_entries(checkpoint["model"])
    bad += [k for k in LOSSES if not math.isfinite(checkpoint["metrics"].get(k, math.nan))]
    if bad:
        raise CheckpointError(
            f"--resume: {path} (epoch {checkpoint['epoch']}) holds non-finite values in "
            f"{', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''}: it is from a diverged "
            "run and would fail again at once. Resume from an earlier checkpoint or start again."
        )
    return checkpoint
