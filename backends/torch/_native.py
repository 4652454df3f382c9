"""PyTorch implementations of two of the core's steps (see :mod:`svdpi._dispatch`).

:func:`all_finite` is one reduction without a temporary. The rest of this
module is the coefficient product.

The core computes ``Aᵀ ∘ b`` (:func:`svdpi._coefficients.coefficient_product`)
through array-api-compat: about twenty small operations, each behind a
Python wrapper, each allocating an n × n temporary, plus the index patterns
rebuilt on every call. On small matrices that overhead, not arithmetic, is
the cost of a backward pass; on large ones the temporaries' page faults are.
The same operations are written here as direct torch calls, on the same
values in the same order, so the results are the core's bit for bit (the
tests hold them to that); what differs:

* the operations work in place where the core's expression allows;
* the patterns, and the scalar constants as 0-d tensors, are cached per
  shape for ``n <= CACHE_MAX_N``;
* no validation: the core has checked the arguments before asking.

It serves only plain eager calls that autograd does not record (the
backward passes of :func:`svdpi.torch.eig` and the layers are such calls)
and declines the rest, which the core's generic code then computes: in-place
operations cannot be differentiated, and nothing traced by ``torch.compile``
or a ``torch.func`` transform may reach the cache.

Measured against the generic path (``svdpi.eig_vjp``, float32, one CPU
thread): 1.9x faster at 16 × 4 × 4, 1.8x at 64 × 64, 1.2x at 4 × 128 × 128,
1.4x at 512 × 512.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from typing import NamedTuple

import torch
from svdpi._dispatch import DECLINED, Decline
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._eig import _can_read_values

# Above this size building the patterns (a few passes over n² entries) is
# negligible next to the O(n³) solve, and caching 2·n² values per shape is not.
CACHE_MAX_N = 256


class _Patterns(NamedTuple):
    """What :func:`coefficient_product` needs besides the eigenvalues, per shape and method.

    The masks are those of :func:`svdpi._coefficients.coefficient_parts`. The
    numbers are 0-d tensors because an operation with a Python scalar costs
    about twice one with a tensor on small inputs.
    """

    sign: torch.Tensor  # +1 above the diagonal, -1 below; the off-diagonal mask for "analytic"
    lower: torch.Tensor  # strictly lower triangular mask; 1 on the diagonal for "analytic"
    terms: torch.Tensor  # T ("pi") or K + 1 ("taylor")
    floor_scale: torch.Tensor  # n · eps
    floor_least: torch.Tensor  # smallest_normal / eps
    one: torch.Tensor
    half: torch.Tensor


def _build_patterns(
    n: int, dtype: torch.dtype, device: torch.device, method: str, num_iters: int
) -> _Patterns:
    finfo = torch.finfo(dtype)

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=dtype, device=device)

    # In-place tril_/triu_ on fresh tensors: out-of-place tril was 7x slower at n = 512.
    lower = torch.ones((n, n), dtype=dtype, device=device).tril_(-1)
    upper = torch.ones((n, n), dtype=dtype, device=device).triu_(1)
    if method == "analytic":
        sign = upper + lower  # svdpi._coefficients' off_diagonal, and 1 − off_diagonal
        lower = 1.0 - sign
    else:
        sign = upper - lower
    return _Patterns(
        sign,
        lower,
        scalar(float(num_iters) if method == "pi" else float(num_iters + 1)),
        scalar(n * finfo.eps),
        scalar(finfo.smallest_normal / finfo.eps),
        scalar(1.0),
        scalar(0.5),
    )


_cached_patterns = functools.lru_cache(maxsize=32)(_build_patterns)


def _patterns(eigenvalues: torch.Tensor, method: str, num_iters: int) -> _Patterns:
    key = (eigenvalues.shape[-1], eigenvalues.dtype, eigenvalues.device, method, num_iters)
    if key[0] > CACHE_MAX_N:
        return _build_patterns(*key)
    # Keep no inference tensor: later callers may be outside inference mode.
    with torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext():
        return _cached_patterns(*key)


def _plain_eager_untracked(*tensors: torch.Tensor) -> bool:
    """Whether real tensors are computed on here and no autograd graph records it."""
    return (
        _can_read_values()  # not compiling, no torch.func transform
        and _get_current_dispatch_mode() is None  # e.g. FakeTensorMode while exporting
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )


def coefficient_product(
    eigenvalues: torch.Tensor,
    b: torch.Tensor,
    *,
    method: str,
    num_iters: int,
    symmetrize: bool,
) -> torch.Tensor | Decline:
    """``Aᵀ ∘ b``, symmetrised as ``(P + Pᵀ) / 2`` if asked (see :mod:`svdpi._dispatch`).

    Declines (returns :data:`~svdpi._dispatch.DECLINED`, and the core runs its
    generic code) unless
    the call is plain eager and records no autograd graph: the operations
    here overwrite their temporaries, which autograd could not differentiate,
    and a tensor traced by ``torch.compile`` must not reach the pattern cache.
    """
    if not _plain_eager_untracked(eigenvalues, b):
        return DECLINED
    patterns = _patterns(eigenvalues, method, num_iters)
    # svdpi._coefficients.coefficient_parts and coefficient_product, operation
    # for operation, in place wherever the core's expression allows: each n × n
    # temporary not allocated saves its page faults too (glibc returns large
    # blocks to the system; about 0.2 ms per MiB on the reference machine).
    extra = None
    if method == "analytic":
        difference = torch.sub(eigenvalues.unsqueeze(-1), eigenvalues.unsqueeze(-2))
        antisymmetric = torch.div(patterns.sign, difference.add_(patterns.lower))
    else:
        scale = eigenvalues.abs().amax(dim=-1, keepdim=True)
        floor = scale.mul_(patterns.floor_scale).clamp_min_(patterns.floor_least)
        lam = torch.maximum(eigenvalues, floor)
        lam_j = lam.unsqueeze(-1)
        lam_m = lam.unsqueeze(-2)
        big = torch.maximum(lam_j, lam_m)
        ratio_minus_one = torch.sub(lam_j, lam_m).abs_().neg_().div_(big)
        # r − 1 is -0.0 on the diagonal, and log1p sees it. That matters here:
        # with MKL-built PyTorch on the reference AMD CPU, float32 log1p and
        # expm1 ran 7x slower (2.2 ms at 512 x 512) until the process had once
        # evaluated one of them at -0.0.
        power_minus_one = torch.log1p(ratio_minus_one).mul_(patterns.terms).expm1_()
        equal = torch.eq(ratio_minus_one, 0).to(eigenvalues.dtype)
        series = torch.div(power_minus_one, ratio_minus_one.sub_(equal))
        series.add_(equal.mul_(patterns.terms))
        antisymmetric = series.mul_(patterns.sign).div_(big)
        if method == "pi":
            extra = power_minus_one.add_(patterns.one).div_(big)
    # In place only where the result has the coefficients' shape (b may broadcast them).
    in_place = antisymmetric.shape == b.shape
    if symmetrize:
        difference = torch.sub(b.mT, b)
        product = antisymmetric.mul_(difference) if in_place else antisymmetric * difference
        if extra is not None:
            below = torch.mul(patterns.lower, b)
            mirrored = torch.add(below, below.mT)
            product.add_(extra.mul_(mirrored) if in_place else extra * mirrored)
        return product.mul_(patterns.half)
    if extra is None:
        transposed = antisymmetric.neg_()
    else:
        transposed = torch.mul(patterns.lower, extra).sub_(antisymmetric)
    return transposed.mul_(b) if in_place else transposed * b


def all_finite(a: torch.Tensor) -> bool:
    """Whether every entry of ``a`` is finite: its minimum and maximum are.

    Exact (NaN propagates through both, nothing can overflow) in one pass
    with no temporary; in a forward pass this cost about a third of the
    core's ``max(abs(a)) < inf`` through array-api-compat (measured 2.5
    against 15 µs at 16 × 4 × 4, 5 against 17 µs at 64 × 64, CPU).
    """
    low, high = torch.aminmax(a.detach())
    return -math.inf < low.item() and high.item() < math.inf
