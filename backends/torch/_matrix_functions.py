"""Differentiable matrix functions of symmetric PSD matrices: powers, square roots, log."""

from __future__ import annotations

import math
import numbers

import torch
from svdpi._validation import check_num_iters

from ._eig import eig

MATRIX_METHODS = ("pi", "taylor", "analytic", "exact")


def check_exponent(p) -> float:
    """Require a real, finite exponent ``p``; return it as a float."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number, got {type(p).__name__} {p!r}")
    p = float(p)
    if not math.isfinite(p):
        raise ValueError(f"p must be a finite real number, got {p!r}")
    return p


def check_matrix_method(method) -> str:
    if method not in MATRIX_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(map(repr, MATRIX_METHODS))}; got {method!r}"
        )
    return method


def _apply(a, scalar, method, num_iters):
    # Interim: through eig's autograd Function (pi/taylor/analytic).
    if method == "exact":
        raise NotImplementedError("exact: waiting for the core")
    w, v = eig(a, method=method, num_iters=num_iters)
    return (v * scalar(w)[..., None, :]) @ v.mT


def _matrix_function(a, scalar, method, num_iters):
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
    method = check_matrix_method(method)
    num_iters = check_num_iters(num_iters)
    if a.dim() >= 2 and a.shape[-1] == a.shape[-2] and (a.shape[-1] == 0 or a.numel() == 0):
        # Nothing to decompose: torch.linalg.eigh returns empty factors here, and
        # V f(Λ) Vᵀ is the empty (or all-batch-empty) array; keep the graph.
        return a * 0
    return _apply(a, scalar, method, num_iters)


def matrix_power(a: torch.Tensor, p: float, *, method: str = "pi", num_iters: int = 19):
    """``a^p``."""
    p = check_exponent(p)
    return _matrix_function(a, lambda w: w**p, method, num_iters)


def sqrtm(a: torch.Tensor, *, method: str = "pi", num_iters: int = 19):
    """``a^{1/2}``."""
    return matrix_power(a, 0.5, method=method, num_iters=num_iters)


def inv_sqrtm(a: torch.Tensor, *, method: str = "pi", num_iters: int = 19):
    """``a^{-1/2}``."""
    return matrix_power(a, -0.5, method=method, num_iters=num_iters)


def logm(a: torch.Tensor, *, method: str = "pi", num_iters: int = 19):
    """``log a``."""
    return _matrix_function(a, torch.log, method, num_iters)
