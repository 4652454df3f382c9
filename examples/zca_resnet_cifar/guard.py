"""The NaN/inf guard of the CIFAR example: stop at the first non-finite step, and say where."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

if __package__:  # imported as a package (the tests)
    from .runtime import Env
else:  # run as a script: this folder is on sys.path
    from runtime import Env


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names epoch and step."""


class NonFiniteGuard:
    """Finds the first step whose loss was NaN/inf, checking every few steps.

    Losses stay on the device and are inspected every ``interval`` steps, so the
    guard costs one synchronisation per interval rather than one per step; the
    step it names is still the exact first bad one. Under torchrun every rank
    checks at the same steps and they agree on the earliest bad step, so all
    of them stop together.
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
            self.fail(step, global_step, f"the training loss is {loss.item()}")
        self.pending.clear()

    def fail(self, step: int, global_step: int, what: str) -> None:
        raise NonFiniteLossError(
            f"Numerical failure in training: {what} at epoch {self.epoch}, step {step} "
            f"(global step {global_step}). Training stopped (a diverging run: try a lower "
            f"--lr). {self.checkpoint_note}"
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
