"""Whitening and matrix-square-root baselines, written here from their papers.

These are the methods a user would pick instead of svdpi, used by the
benchmarks as references (not part of the library):

- :class:`DBN`: Decorrelated Batch Normalization (Huang, Yang, Lang & Deng,
  CVPR 2018). Grouped ZCA whitening ``Σ^{-1/2}`` from ``torch.linalg.eigh``
  with the classical eigendecomposition gradient, i.e. autograd through
  ``eigh`` (infinite at equal eigenvalues; the paper relies on ``eps``).
- :class:`IterNorm`: Iterative Normalization (Huang, Zhou, Zhu, Liu & Shao,
  CVPR 2019). ``Σ_N = Σ / tr(Σ)``, ``P_0 = I``,
  ``P_k = (3 P_{k-1} − P_{k-1}³ Σ_N) / 2`` for ``k = 1..T``,
  whitening matrix ``P_T / sqrt(tr Σ)``; backward through autograd.
- :func:`newton_schulz_sqrtm`: the coupled Newton–Schulz iteration of
  iSQRT-COV (Li, Xie, Wang & Gao, CVPR 2018) for ``A^{1/2}``, with
  pre-normalisation by the trace and post-compensation by its square root;
  backward through autograd.

The layers take ``(N, C, H, W)`` input, training mode only (the benchmarks
time a training step), with a per-channel affine transform like BatchNorm's.
"""

from __future__ import annotations

import torch
from torch import nn


def _grouped_centred(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(N, C, H, W)`` → centred ``(G, d, N·H·W)`` with ``d = C / G``."""
    c = x.shape[1]
    columns = x.transpose(0, 1).reshape(num_groups, c // num_groups, -1)
    return columns - columns.mean(dim=-1, keepdim=True)


def _ungroup(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, c, *spatial = shape
    return y.reshape(c, n, *spatial).transpose(0, 1)


def _covariance(centred: torch.Tensor, eps: float) -> torch.Tensor:
    m = centred.shape[-1]
    eye = torch.eye(centred.shape[-2], dtype=centred.dtype, device=centred.device)
    return centred @ centred.mT / m + eps * eye


class _Whitening(nn.Module):
    def __init__(self, num_features: int, num_groups: int, eps: float) -> None:
        super().__init__()
        if num_features % num_groups:
            raise ValueError("num_features must be divisible by num_groups")
        self.num_features = num_features
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def whitening_matrix(self, cov: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = _grouped_centred(x, self.num_groups)
        y = _ungroup(self.whitening_matrix(_covariance(centred, self.eps)) @ centred, x.shape)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class DBN(_Whitening):
    """Decorrelated Batch Normalization: ZCA whitening by ``eigh``, classical gradient."""

    def __init__(self, num_features: int, num_groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__(num_features, num_groups, eps)

    def whitening_matrix(self, cov: torch.Tensor) -> torch.Tensor:
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        return (eigenvectors * eigenvalues.rsqrt()[..., None, :]) @ eigenvectors.mT


class IterNorm(_Whitening):
    """Iterative Normalization: ``T`` Newton steps towards ``Σ^{-1/2}`` on ``Σ / tr(Σ)``."""

    def __init__(
        self, num_features: int, num_groups: int = 1, eps: float = 1e-5, iterations: int = 5
    ) -> None:
        super().__init__(num_features, num_groups, eps)
        self.iterations = iterations

    def whitening_matrix(self, cov: torch.Tensor) -> torch.Tensor:
        return newton_inv_sqrtm(cov, self.iterations)


def newton_inv_sqrtm(a: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """IterNorm's approximation of ``a^{-1/2}``: Newton steps on the trace-normalised matrix."""
    trace = a.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    normalised = a / trace
    p = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * (p @ p @ p) @ normalised
    return p * trace.rsqrt()


def newton_schulz_sqrtm(a: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """iSQRT-COV's ``a^{1/2}``: coupled Newton–Schulz on ``a / tr(a)``, times ``sqrt(tr a)``.

    ``Y_0 = a / tr(a)``, ``Z_0 = I``, ``T_k = (3I − Z_{k-1} Y_{k-1}) / 2``,
    ``Y_k = Y_{k-1} T_k``, ``Z_k = T_k Z_{k-1}``; ``Y_k → (a / tr a)^{1/2}``.
    """
    trace = a.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    y = a / trace
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    z = eye
    for _ in range(iterations):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


def exact_zca(x: torch.Tensor, num_groups: int, eps: float) -> torch.Tensor:
    """The exact grouped ZCA whitening of ``x`` in float64 (no affine): the error oracle."""
    centred = _grouped_centred(x.double(), num_groups)
    eigenvalues, eigenvectors = torch.linalg.eigh(_covariance(centred, eps))
    whitening = (eigenvectors * eigenvalues.rsqrt()[..., None, :]) @ eigenvectors.mT
    return _ungroup(whitening @ centred, x.shape)
