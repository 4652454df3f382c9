"""Input checks and the compute precision shared by the SPD layers and functions.

Shape and dtype checks read metadata only. Value checks (finite entries,
positive definiteness) read one boolean pair on the host per call, a GPU
synchronisation: they are options of every public entry point and are
skipped where values cannot be read (``torch.compile`` tracing, ``torch.func``
transforms, the meta device).
"""

from __future__ import annotations

import contextlib

import torch

from .._eig import _can_read_values


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 input, float32 otherwise (half precision, autocast)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def autocast_off(x: torch.Tensor):
    """A context that turns autocast off on ``x``'s device (the meta device has none).

    Eigendecompositions, congruences and ``λ^p`` need float32's range and
    precision; under ``torch.autocast`` a matrix product would run in
    float16 and return matrices that are no longer symmetric positive
    definite. The whitening layers follow the same rule.
    """
    if x.device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def check_matrices(x, name: str, *, size: int | None = None) -> int:
    """Require a real floating tensor of shape ``(..., n, n)`` (and ``n == size``); return n."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(
            f"{name} must have a real floating dtype (symmetric real matrices), got {x.dtype}"
        )
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have shape (..., n, n), got {x.dim()}-d shape {tuple(x.shape)}"
        )
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name} must be square in its last two dimensions, got shape {tuple(x.shape)}"
        )
    if size is not None and x.shape[-1] != size:
        raise ValueError(
            f"{name} must have shape (..., {size}, {size}), got shape {tuple(x.shape)}"
        )
    return x.shape[-1]


def can_read(x: torch.Tensor) -> bool:
    """Whether ``x``'s values may be read on the host here (see the module docstring)."""
    return x.numel() > 0 and x.device.type != "meta" and _can_read_values()


def check_values(
    x: torch.Tensor, name: str, *, finite: bool, positive_definite: bool, hint: str = ""
) -> None:
    """Raise ``ValueError`` if ``x`` has NaN/inf entries, or a matrix that is not SPD.

    Positive definite means: the Cholesky factorisation of ``(x + xᵀ)/2``
    succeeds in ``x``'s precision (float32 for half precision). Both answers
    come back in one host read; the index of a failing matrix is read only
    when there is one.
    """
    if not (finite or positive_definite) or not can_read(x):
        return
    x = x.detach()
    # Finiteness is read whenever anything is: a Cholesky factorisation of a
    # non-finite matrix says nothing about definiteness.
    low, high = torch.aminmax(x)
    checks = [(low > -torch.inf) & (high < torch.inf)]
    if positive_definite:
        checks.append((_cholesky_info(x) == 0).all())
    answers = torch.stack(checks).tolist()
    if not answers[0]:
        skip = "check_finite=False" if finite else "check_spd=False"
        raise ValueError(
            f"{name} must contain only finite values (it has NaN or inf entries); "
            f"pass {skip} to skip this check"
        )
    if positive_definite and not answers[1]:
        info = _cholesky_info(x)
        failing = (info != 0).reshape(info.shape)
        count = int(failing.sum())
        first = tuple(int(i) for i in torch.nonzero(failing)[0].tolist())
        where = f" (matrix {first[0] if len(first) == 1 else first})" if first else ""
        raise ValueError(
            f"{name} must be symmetric positive definite: {count} of {failing.numel()} "
            f"matrices are not{where} (their Cholesky factorisation fails){hint}; pass "
            "check_spd=False to skip this check"
        )


def _cholesky_info(x: torch.Tensor) -> torch.Tensor:
    a = x.to(compute_dtype(x))
    return torch.linalg.cholesky_ex((a + a.mT) * 0.5).info
