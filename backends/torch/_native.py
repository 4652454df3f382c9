"""PyTorch implementations of two of the core's steps (see :mod:`svdpi._dispatch`).

:func:`all_finite` is one reduction without a temporary. The rest of this
module is the coefficient product.

The core computes ``Aᵀ ∘ b`` through array-api-compat: about twenty small
operations, each behind a Python wrapper, each allocating an n × n
temporary, plus the index patterns (sign, number of terms) rebuilt on every
call. On small matrices that overhead, not arithmetic, is the cost of a
backward pass; on large ones the temporaries' page faults are. The same
operations are written here as direct torch calls, and the results are the
core's bit for bit (the tests hold them to that), reached differently:

* ``Aᵀ`` is formed directly from transposed index patterns (``r − 1`` and
  the larger eigenvalue are symmetric), so the only strided read is the
  final symmetrisation, not also ``A.mT * b``;
* when symmetrising, the sign pattern is halved beforehand, which saves the
  final ``* 0.5`` (halving is exact unless a result is subnormal);
* the operations work in place: five n × n temporaries instead of fifteen;
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

    The index patterns are those of :func:`svdpi._coefficients.coefficient_matrix`
    transposed: entry ``(m, j)`` of ``Aᵀ`` is entry ``(j, m)`` of ``A``. The
    numbers are 0-d tensors because an operation with a Python scalar costs
    about twice one with a tensor on small inputs.
    """

    sign: torch.Tensor  # signᵀ (halved when symmetrising); off-diagonal mask for "analytic"
    terms: torch.Tensor  # termsᵀ; the identity for "analytic"
    floor_scale: torch.Tensor  # n · eps
    floor_least: torch.Tensor  # smallest_normal / eps
    log_ratio_cap: torch.Tensor  # −eps², the cap on r − 1 and log r


def _build_patterns(
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    method: str,
    num_iters: int,
    symmetrize: bool,
) -> _Patterns:
    finfo = torch.finfo(dtype)

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=dtype, device=device)

    # In-place tril_/triu_ on fresh tensors: out-of-place tril was 7x slower at n = 512.
    lower = torch.ones((n, n), dtype=dtype, device=device).tril_(-1)  # Aᵀ: j < m
    upper = torch.ones((n, n), dtype=dtype, device=device).triu_(1)
    if method == "analytic":
        sign = lower + upper
        terms = 1.0 - sign
    else:
        # (P + Pᵀ) / 2 with P = Aᵀ ∘ b is P' + P'ᵀ with P' = (signᵀ / 2) ∘ … ∘ b:
        # halving is exact, so the symmetrised product costs one operation less.
        sign = (lower - upper) * (0.5 if symmetrize else 1.0)
        terms = lower + float(num_iters) if method == "pi" else scalar(num_iters + 1)
    return _Patterns(
        sign,
        terms,
        scalar(n * finfo.eps),
        scalar(finfo.smallest_normal / finfo.eps),
        scalar(-(finfo.eps * finfo.eps)),
    )


_cached_patterns = functools.lru_cache(maxsize=32)(_build_patterns)


def _patterns(
    eigenvalues: torch.Tensor, method: str, num_iters: int, symmetrize: bool
) -> _Patterns:
    key = (eigenvalues.shape[-1], eigenvalues.dtype, eigenvalues.device, method, num_iters)
    if key[0] > CACHE_MAX_N:
        return _build_patterns(*key, symmetrize)
    # Keep no inference tensor: later callers may be outside inference mode.
    with torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext():
        return _cached_patterns(*key, symmetrize)


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
    patterns = _patterns(eigenvalues, method, num_iters, symmetrize)
    # In place wherever the core's expression allows: each n × n temporary not
    # allocated saves its page faults too (glibc returns large blocks to the
    # system; about 0.2 ms per MiB on the reference machine).
    if method == "analytic":
        # Entry (row, col) of Aᵀ is 1 / (λ_col − λ_row), with the core's 0/0 guard.
        denominator = torch.sub(eigenvalues.unsqueeze(-2), eigenvalues.unsqueeze(-1))
        product = torch.div(patterns.sign, denominator.add_(patterns.terms))
    else:
        # svdpi._coefficients.eigenvalue_floor and geometric_sum, operation for operation.
        scale = eigenvalues.abs().amax(dim=-1, keepdim=True)
        floor = scale.mul_(patterns.floor_scale).clamp_min_(patterns.floor_least)
        lam = torch.maximum(eigenvalues, floor)
        lam_row = lam.unsqueeze(-1)
        lam_col = lam.unsqueeze(-2)
        big = torch.maximum(lam_row, lam_col)
        # As in the core, r − 1 = -|λ_row − λ_col| / big is -0.0 on the diagonal and
        # log1p sees it before the cap. That matters here: with MKL-built PyTorch on
        # the reference AMD CPU, float32 log1p and expm1 ran 7x slower (2.2 ms at
        # 512 x 512) until the process had once evaluated one of them at -0.0.
        ratio_minus_one = torch.sub(lam_row, lam_col).abs_().neg_().div_(big)  # symmetric
        series = torch.log1p(ratio_minus_one).clamp_max_(patterns.log_ratio_cap)
        series.mul_(patterns.terms).expm1_()
        series.div_(ratio_minus_one.clamp_max_(patterns.log_ratio_cap))
        product = series.mul_(patterns.sign).div_(big)
    product = product.mul_(b) if product.shape == b.shape else product * b
    if not symmetrize:
        return product
    if method == "analytic":  # its sign pattern is not pre-halved
        return (product + product.mT).mul_(0.5)
    return product + product.mT


def all_finite(a: torch.Tensor) -> bool:
    """Whether every entry of ``a`` is finite: its minimum and maximum are.

    Exact (NaN propagates through both, nothing can overflow) in one pass
    with no temporary; in a forward pass this cost about a third of the
    core's ``max(abs(a)) < inf`` through array-api-compat (measured 2.5
    against 15 µs at 16 × 4 × 4, 5 against 17 µs at 64 × 64, CPU).
    """
    low, high = torch.aminmax(a.detach())
    return -math.inf < low.item() and high.item() < math.inf
