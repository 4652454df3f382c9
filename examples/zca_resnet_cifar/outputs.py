"""What a run of the CIFAR example writes into its ``--out-dir``.

``args.json`` (the settings), ``metrics.jsonl`` (one line per finished epoch),
``last.pt`` and ``best.pt`` (checkpoints) and, if asked, ``tensorboard/``. Only
the main process writes; on the other ranks every method does nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

if __package__:  # imported as a package (the tests)
    from .runtime import Env, atomic_save, log
else:  # run as a script: this folder is on sys.path
    from runtime import Env, atomic_save, log

# The files (and folder) of a run: train.py refuses an --out-dir holding any of
# them unless told to --resume or --overwrite, and --overwrite deletes them.
RUN_FILES = ("metrics.jsonl", "args.json", "last.pt", "best.pt", "tensorboard")
TENSORBOARD_SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "images_per_s", "lr")


def json_line(record: dict) -> str:
    """``record`` as one line of strict JSON: NaN and infinities become ``null``.

    Python's ``json`` writes a bare ``NaN`` by default, which is not JSON and
    which strict parsers (JavaScript's, jq, pandas with some engines) reject.

    Examples
    --------
    >>> json_line({"epoch": 1, "images_per_s": float("nan"), "lr": 0.1})
    '{"epoch": 1, "images_per_s": null, "lr": 0.1}'
    """
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(clean, allow_nan=False)


class RunFiles:
    """The files of one run, in ``out``."""

    def __init__(self, out: Path, env: Env):
        self.out = out
        self.env = env
        self.metrics = out / "metrics.jsonl"
        self.args = out / "args.json"
        self.last = out / "last.pt"
        self.best = out / "best.pt"
        self._tensorboard = None

    def start(
        self,
        record: dict,
        *,
        first_epoch: int,
        resumed: bool,
        tensorboard: bool,
        overwrite: bool = False,
    ) -> None:
        """Create the folder, write ``args.json``, start or trim ``metrics.jsonl``.

        With ``overwrite`` the files of a run already in the folder are deleted
        first (a stale ``best.pt`` or TensorBoard log would otherwise survive).
        """
        if not self.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in (*RUN_FILES, "last.pt.tmp", "best.pt.tmp"):
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        if resumed and self.metrics.exists():
            # Keep the epochs the checkpoint has seen: a run stopped between its
            # metrics line and its checkpoint must not list an epoch twice.
            lines = [ln for ln in self.metrics.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["epoch"] < first_epoch]
            self.metrics.write_text("".join(ln + "\n" for ln in kept))
        elif not resumed:
            self.metrics.write_text("")
        self.args.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                log(
                    self.env,
                    f"--tensorboard: not available ({exc}); pip install tensorboard. "
                    "Continuing without it.",
                    file=sys.stderr,
                )
            else:
                self._tensorboard = SummaryWriter(str(self.out / "tensorboard"))

    def write_epoch(self, state: dict, metrics: dict, *, is_best: bool) -> None:
        """The checkpoints first, then the metrics line (resume trims lines it has not seen)."""
        if not self.env.is_main:
            return
        atomic_save(state, self.last)
        if is_best:
            atomic_save(state, self.best)
        with self.metrics.open("a") as f:
            f.write(json_line(metrics) + "\n")
        if self._tensorboard is not None:
            for key in TENSORBOARD_SCALARS:
                self._tensorboard.add_scalar(key, metrics[key], metrics["epoch"])
            self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def describe(self) -> str:
        """Where the run's results are, for the last lines of its output."""
        lines = [f"results in {self.out}/:"]
        for path, what in [
            (self.metrics, "per-epoch losses, accuracies, throughput (JSON lines)"),
            (self.last, "checkpoint of the last epoch (--resume continues from it)"),
            (self.best, "checkpoint of the epoch with the best test accuracy"),
            (self.args, "the run's settings"),
            (self.out / "tensorboard", "TensorBoard logs"),
        ]:
            if path.exists():
                lines.append(f"  {path.name:<14} {what}")
        return "\n".join(lines)
