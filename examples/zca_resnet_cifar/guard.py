"""The NaN/inf guard of the CIFAR example: stop at the first non-finite value, and say where.

Two checks. During an epoch, :class:`NonFiniteGuard` finds the first step whose
loss is NaN or infinite. At the end of an epoch, :meth:`NonFiniteGuard.check_epoch`
requires the epoch's losses and every parameter and buffer of the network to be
finite before its checkpoint may be written: a diverging run can end an epoch
with a finite training loss and yet infinite running statistics (whose test
loss is NaN), and a checkpoint of that state would fail again at once when
resumed. So every checkpoint the script writes is one a run can continue from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

if __package__:  # imported as a package (the tests)
    from .runtime import Env
else:  # run as a script: this folder is on sys.path
    from runtime import Env


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite values; the message says where and when."""


def finite_flags(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One bool per tensor: are all its entries finite (integer tensors always are).

    Computed on the device as one stacked tensor, so reading it costs a single
    synchronisation however many tensors there are.
    """
    flags = [
        torch.isfinite(t).all().to(device)
        if t.is_floating_point() or t.is_complex()
        else torch.ones((), dtype=torch.bool, device=device)
        for t in tensors
    ]
    return torch.stack(flags) if flags else torch.ones(0, dtype=torch.bool, device=device)


def nonfinite_entries(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the tensors of ``state`` (a state dict) that hold NaN or inf.

    Examples
    --------
    >>> nonfinite_entries({"w": torch.ones(2), "running_var": torch.tensor([1.0, float("inf")])})
    ['running_var']
    """
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        return []
    device = next(iter(tensors.values())).device
    flags = finite_flags(tensors.values(), device).tolist()
    return [name for name, ok in zip(tensors, flags, strict=True) if not ok]


def _listing(items: list[str], at_most: int = 3) -> str:
    shown = ", ".join(items[:at_most])
    return shown + (f" and {len(items) - at_most} more" if len(items) > at_most else "")


class NonFiniteGuard:
    """Checks one epoch: its losses step by step, then its end state.

    Losses stay on the device and are inspected every ``interval`` steps (by
    the caller's :meth:`check`), so the guard costs one synchronisation per
    interval rather than one per step; the step it names is still the exact
    first bad one. Under torchrun every rank checks at the same steps and they
    agree on the earliest bad step (and on the end-of-epoch verdict), so all of
    them stop together.
    """

    def __init__(self, env: Env, epoch: int, checkpoint_note: str):
        self.env = env
        self.epoch = epoch
        self.checkpoint_note = checkpoint_note
        self.pending: list[tuple[int, int, torch.Tensor]] = []

    def add(self, step: int, global_step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, global_step, loss.detach().float()))

    def check(self) -> None:
        if not self.pending:
            return
        losses = torch.stack([loss for _, _, loss in self.pending])
        bad = (~torch.isfinite(losses)).nonzero()
        first = torch.tensor(
            [bad[0, 0].item() if bad.numel() else len(self.pending)], device=self.env.device
        )
        if self.env.distributed:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first = int(first.item())
        if first < len(self.pending):
            step, global_step, loss = self.pending[first]
            self.fail(
                f"the training loss is {loss.item()} at epoch {self.epoch}, step {step} "
                f"(global step {global_step})"
            )
        self.pending.clear()

    def check_epoch(self, model: nn.Module, losses: Mapping[str, float]) -> None:
        """Raise unless ``losses`` and all of ``model``'s parameters and buffers are finite.

        ``losses`` are the epoch's reduced losses (the same on every rank); the
        tensors are checked on every rank and the ranks agree, since
        per-process statistics (BatchNorm on CPU under torchrun) may differ.
        """
        tensors = dict(model.named_parameters())
        kinds = dict.fromkeys(tensors, "parameter")
        for name, buffer in model.named_buffers():
            tensors[name], kinds[name] = buffer, "buffer"
        flags = finite_flags(tensors.values(), self.env.device)
        if self.env.distributed:
            flags = flags.to(torch.int32)
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        bad = [
            f"the {key.replace('_', ' ')} is {value}"
            for key, value in losses.items()
            if not math.isfinite(value)
        ]
        oks = flags.tolist()
        bad_tensors = [f"{kinds[n]} {n!r}" for n, ok in zip(tensors, oks, strict=True) if not ok]
        if bad_tensors:
            verb = "is" if len(bad_tensors) == 1 else "are"
            bad.append(f"{_listing(bad_tensors)} {verb} not finite")
        if bad:
            self.fail(f"at the end of epoch {self.epoch}, {'; '.join(bad)}")

    def fail(self, what: str) -> None:
        raise NonFiniteError(
            f"Numerical failure in training: {what}. Training stopped (a diverging run: try a "
            f"lower --lr). {self.checkpoint_note}"
        )


def diagnose_failure(model: nn.Module, x: torch.Tensor) -> tuple[bool, str]:
    """Why a training step on ``x`` failed: (whether values were not finite, where).

    Run only after a step raised: checks the parameters, then replays the
    forward pass with hooks that note the first module whose output is not
    finite, or else the module that raised and the size of its input.
    """
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return True, f"parameter {name!r} is not finite"
    names = {id(m): f"{n!r} ({type(m).__name__})" for n, m in model.named_modules() if n}
    running: list[tuple[nn.Module, torch.Tensor | None]] = []
    first_nonfinite: list[str] = []

    def enter(module, inputs):
        running.append((module, inputs[0] if inputs and torch.is_tensor(inputs[0]) else None))

    def leave(module, inputs, output):
        running.pop()
        if not first_nonfinite and torch.is_tensor(output) and not bool(output.isfinite().all()):
            first_nonfinite.append(f"the output of {names[id(module)]} is not finite")

    handles = []
    for module in model.modules():
        if id(module) in names:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    failed_in = None
    try:
        with torch.no_grad():
            model(x)
    except Exception:  # the caller reports the original exception
        if running:
            module, first = running[-1]
            size = "" if first is None else f" (largest |input| {first.abs().max().item():.3g})"
            failed_in = f"{names[id(module)]} failed{size}"
    finally:
        for h in handles:
            h.remove()
    if first_nonfinite:
        return True, first_nonfinite[0]
    return False, failed_in or "the forward pass succeeds when replayed"
