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
* the exact sum at ``r = 1`` is a ``masked_fill_`` instead of the core's
  mask arithmetic (same bits, see below);
* the patterns, and the scalar constants as 0-d tensors, are cached per
  shape for ``n <= CACHE_MAX_N``;
* no validation: the core has checked the arguments before asking.

It serves only plain eager calls that autograd does not record (the
backward passes of :func:`svdpi.torch.eig` and the layers are such calls)
and declines the rest, which the core's generic code then computes: in-place
operations cannot be differentiated, and nothing traced by ``torch.compile``
or a ``torch.func`` transform may reach the cache.

Measured against the generic path (``svdpi.eig_vjp``, float32, one CPU
thread) with svdpi 0.1's coefficient formula: 1.9x faster at 16 × 4 × 4,
1.8x at 64 × 64, 1.2x at 4 × 128 × 128, 1.4x at 512 × 512. The exact
symmetrised form of 0.2 (see :func:`svdpi._coefficients.coefficient_product`)
adds about five elementwise passes and one strided read to both paths.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from typing import NamedTuple

import torch
from svdpi.adapter import DECLINED, Decline, native_paths_enabled
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._eig import _can_read_values

# Above this size building the patterns (a few passes over n² entries) is
# negligible next to the O(n³) solve, and caching 2·n² values per shape is not.
CACHE_MAX_N = 256


class _Patterns(NamedTuple):
    """What :func:`coefficient_product` needs besides the eigenvalues, per shape and method.

    The masks of :func:`svdpi._coefficients.coefficient_product`, halved as
    there when symmetrising. The numbers are 0-d tensors because an
    operation with a Python scalar costs about twice one with a tensor on
    small inputs.
    """

    sign: torch.Tensor  # U − L ("analytic": U + L), halved when symmetrising
    lower: torch.Tensor  # L, halved when symmetrising ("analytic": 1 − (U + L))
    terms: torch.Tensor  # T ("pi") or K + 1 ("taylor")
    floor_scale: torch.Tensor  # n · eps
    floor_least: torch.Tensor  # smallest_normal / eps
    one: torch.Tensor


def _build_patterns(
    n: int, dtype: torch.dtype, device: torch.device, method: str, num_iters: int, symmetrize: bool
) -> _Patterns:
    finfo = torch.finfo(dtype)

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=dtype, device=device)

    # In-place tril_/triu_ on fresh tensors: out-of-place tril was 7x slower at n = 512.
    lower = torch.ones((n, n), dtype=dtype, device=device).tril_(-1)
    upper = torch.ones((n, n), dtype=dtype, device=device).triu_(1)
    if method == "analytic":
        sign = upper + lower
        lower = 1.0 - sign
    else:
        sign = upper - lower
        if symmetrize:
            lower = lower * 0.5
    if symmetrize:
        sign = sign * 0.5
    return _Patterns(
        sign,
        lower,
        scalar(float(num_iters) if method == "pi" else float(num_iters + 1)),
        scalar(n * finfo.eps),
        scalar(finfo.smallest_normal / finfo.eps),
        scalar(1.0),
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
    # svdpi._coefficients.coefficient_parts and coefficient_product, operation
    # for operation, in place wherever the core's expression allows: each n × n
    # temporary not allocated saves its page faults too (glibc returns large
    # blocks to the system; about 0.2 ms per MiB on the reference machine).
    # In place only where the result has the coefficients' shape (b may broadcast them).
    in_place = b.shape == (*eigenvalues.shape, eigenvalues.shape[-1])
    power = big = None
    if method == "analytic":
        difference = torch.sub(eigenvalues.unsqueeze(-1), eigenvalues.unsqueeze(-2))
        signed = torch.div(patterns.sign, difference.add_(patterns.lower))
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
        # The core's  pm1 / (r − 1 − equal) + equal · terms  is pm1 / (r − 1) where
        # r ≠ 1 (adding 0 changes no bits) and exactly `terms` where r = 1: the
        # same bits in two passes fewer. The 0/0 overwritten is harmless here,
        # where nothing is differentiated.
        signed = torch.div(power_minus_one, ratio_minus_one)
        signed.masked_fill_(ratio_minus_one == 0, patterns.terms).mul_(patterns.sign)
        if method == "pi":
            power = power_minus_one.add_(patterns.one)
    if symmetrize:
        difference = torch.sub(b.mT, b)
        numerator = signed.mul_(difference) if in_place else signed * difference
        if power is not None:
            x = power.mul_(patterns.lower)
            x = x.mul_(b) if in_place else x * b
            numerator.add_(x).add_(x.mT)
        return numerator if big is None else numerator.div_(big)
    # Aᵀ = (L ∘ E − N) / big
    transposed = signed.neg_() if power is None else torch.mul(patterns.lower, power).sub_(signed)
    if big is not None:
        transposed.div_(big)
    return transposed.mul_(b) if in_place else transposed * b


def eig_vjp(
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    grad_eigenvalues: torch.Tensor | None,
    grad_eigenvectors: torch.Tensor,
    method: str,
    num_iters: int,
) -> torch.Tensor | None:
    """``svdpi.eig_vjp`` in direct torch operations, or ``None`` to decline.

    ``svdpi.adapter.vjp_from_projected`` with the native coefficient product
    above, operation for operation (``tests/test_torch_native.py`` holds it to
    the core bit for bit): its normalisation by ``m = min(max|λ|, 1)``
    (``svdpi._gradient.coefficient_scale``), the product, and
    ``V (inner + diag(ḡλ m)) Vᵀ / m``, without the core's namespace wrappers
    and dispatch. On 16 × 4 × 4 float32 that plumbing, not arithmetic, was
    most of the backward pass (the normalisation of 0.3 alone about 25 µs).
    Declines what :func:`coefficient_product` declines, complex input and
    ``n = 0``, and inside ``svdpi.adapter.native_paths(False)``.
    """
    if (
        eigenvectors.shape[-1] == 0
        or eigenvectors.is_complex()
        or not native_paths_enabled()
        or not _plain_eager_untracked(eigenvalues, eigenvectors, grad_eigenvectors)
        or (grad_eigenvalues is not None and grad_eigenvalues.requires_grad)
    ):
        return None
    v = eigenvectors
    vt_grad = v.mT @ grad_eigenvectors
    # svdpi._gradient.coefficient_scale
    largest = torch.amax(torch.abs(eigenvalues), dim=-1, keepdim=True)
    one = torch.ones_like(largest)
    zero_spectrum = largest < torch.finfo(eigenvalues.dtype).smallest_normal
    scale = torch.where(zero_spectrum, one, torch.minimum(largest, one))
    inner = coefficient_product(
        eigenvalues / scale, vt_grad, method=method, num_iters=num_iters, symmetrize=True
    )
    left = v @ inner
    if grad_eigenvalues is not None:
        left.add_(v * (grad_eigenvalues * scale).unsqueeze(-2))
    return (left @ v.mT).div_(scale.unsqueeze(-1))


def all_finite(a: torch.Tensor) -> bool:
    """Whether every entry of ``a`` is finite: its minimum and maximum are.

    Exact (NaN propagates through both, nothing can overflow) in one pass
    with no temporary; in a forward pass this cost about a third of the
    core's ``max(abs(a)) < inf`` through array-api-compat (measured 2.5
    against 15 µs at 16 × 4 × 4, 5 against 17 µs at 64 × 64, CPU).
    """
    a = a.detach()
    if a.is_complex():
        # The real and imaginary parts as one real view (|a| could overflow
        # for finite entries). The core splits complex input before asking;
        # this serves a direct call.
        a = torch.view_as_real(a.resolve_conj().resolve_neg())
    low, high = torch.aminmax(a)
    return -math.inf < low.item() and high.item() < math.inf
