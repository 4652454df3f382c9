"""Differentiable matrix functions of symmetric PSD matrices: powers, square roots, log.

Each is one autograd node (:func:`svdpi.torch._spectral.spectral_map`): the
forward is the exact eigendecomposition, the backward the core's VJP
(:func:`svdpi.matrix_power_vjp`, :func:`svdpi.matrix_log_vjp`) with the
chosen ``method``, forward mode the core's JVP.
"""

from __future__ import annotations

import dataclasses

import array_api_compat.torch as xp_torch

import svdpi
import torch
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    check_exponent,
    check_method,
    check_num_iters,
)

from ._spectral import SpectralMap, spectral_map


def check_matrix_method(method) -> str:
    """One of ``"pi"``, ``"taylor"``, ``"analytic"``, ``"exact"``."""
    return check_method(method, MATRIX_FUNCTION_METHODS)


@dataclasses.dataclass(frozen=True)
class _Power(SpectralMap):
    p: float
    method: str
    num_iters: int

    def value(self, eigenvalues, eigenvectors):
        return svdpi.matrix_power(eigenvalues, eigenvectors, self.p, xp=xp_torch)

    def vjp(self, eigenvalues, eigenvectors, grad):
        return svdpi.matrix_power_vjp(
            eigenvalues,
            eigenvectors,
            self.p,
            grad,
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )

    def jvp(self, eigenvalues, eigenvectors, tangent_a):
        return svdpi.matrix_power_jvp(
            eigenvalues,
            eigenvectors,
            self.p,
            tangent_a,
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )


@dataclasses.dataclass(frozen=True)
class _Log(SpectralMap):
    method: str
    num_iters: int

    def value(self, eigenvalues, eigenvectors):
        return svdpi.matrix_log(eigenvalues, eigenvectors, xp=xp_torch)

    def vjp(self, eigenvalues, eigenvectors, grad):
        return svdpi.matrix_log_vjp(
            eigenvalues,
            eigenvectors,
            grad,
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )

    def jvp(self, eigenvalues, eigenvectors, tangent_a):
        return svdpi.matrix_log_jvp(
            eigenvalues,
            eigenvectors,
            tangent_a,
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )


def matrix_power(
    a: torch.Tensor,
    p: float,
    *,
    method: str = "pi",
    num_iters: int = 19,
    check_finite: bool = True,
) -> torch.Tensor:
    """Matrix power ``a^p = V diag(λ^p) Vᵀ`` of symmetric PSD matrices, differentiable.

    The forward is the exact eigendecomposition; the backward is
    :func:`svdpi.matrix_power_vjp` with the given ``method``, forward mode
    :func:`svdpi.matrix_power_jvp`.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive (semi-)definite, float32 or float64, CPU or CUDA.
        Only ``(a + aᵀ) / 2`` is used.
    p : float
        Any real, finite exponent. For ``p < 0`` eigenvalues below the
        core's floor ``n · eps · max|λ|`` are raised to it (as
        :func:`svdpi.zca_whitening_matrix` does), so a singular ``a`` gives
        a large but finite result; for ``p > 0`` negative round-off
        eigenvalues count as 0.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient rule (the forward is the same for all):

        - ``"pi"``: the gradient of the paper's power iteration with
          deflation (Wang et al., NeurIPS 2019) through the eigenvectors;
          finite at repeated eigenvalues, bounded by ``(T + 1) / λ_min``.
          The default, as everywhere in svdpi: it is the method behind the
          paper's results. It is *not* the derivative of ``a^p``: on
          clustered spectra it differs from it by the power-iteration
          truncation (a few percent on covariance spectra, see
          ``benchmarks/bench_sqrtm.py``).
        - ``"taylor"``: its Taylor-series successor, ``num_iters`` terms.
        - ``"analytic"``: the classical eigendecomposition gradient,
          ``1 / (λ_i − λ_j)``; infinite at equal eigenvalues.
        - ``"exact"``: the Daleckii–Krein derivative of the matrix function
          itself, with divided differences ``(λ_i^p − λ_j^p) / (λ_i − λ_j)``;
          finite and independent of the eigenvector basis at repeated
          eigenvalues. See :func:`svdpi.matrix_power_vjp`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation;
        skipped while ``torch.compile`` traces and under ``torch.func``).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        ``a^p``, symmetric.

    Notes
    -----
    Reverse mode, forward mode (``torch.func.jvp``, ``jacfwd``,
    ``torch.autograd.forward_ad``), ``torch.func.vmap`` and
    ``torch.compile(fullgraph=True)`` work as for :func:`svdpi.torch.eig`;
    second derivatives raise ``RuntimeError``. Batches of zero matrices and
    ``n = 0`` give empty results, as ``torch.linalg.eigh`` does.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> torch.allclose(svdpi.torch.matrix_power(a, 2), a @ a)
    True
    >>> svdpi.torch.matrix_power(a, -1, method="exact").trace().backward()
    >>> inverse = torch.linalg.inv(a.detach())
    >>> torch.allclose(a.grad, -inverse @ inverse)  # d tr(a⁻¹) = −tr(a⁻² da)
    True
    """
    return spectral_map(
        a,
        _Power(check_exponent(p), check_matrix_method(method), check_num_iters(num_iters)),
        check_finite=check_finite,
    )


def sqrtm(
    a: torch.Tensor, *, method: str = "pi", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Matrix square root ``a^{1/2}`` of symmetric PSD matrices, differentiable.

    ``matrix_power(a, 0.5, ...)``: the square-root normalisation of
    covariance pooling (MPN-COV, iSQRT-COV; see :class:`CovariancePooling`).

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric PSD, float32 or float64; only ``(a + aᵀ) / 2`` is used.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient rule, see :func:`matrix_power`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        The symmetric PSD square root.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    >>> root = svdpi.torch.sqrtm(a, method="exact")
    >>> root.diagonal().detach()
    tensor([2., 1., 1.], dtype=torch.float64)
    >>> root.trace().backward()  # d sqrt(λ) / dλ = 1 / (2 sqrt λ), also where λ repeats
    >>> a.grad.diagonal()
    tensor([0.2500, 0.5000, 0.5000], dtype=torch.float64)
    """
    return matrix_power(a, 0.5, method=method, num_iters=num_iters, check_finite=check_finite)


def inv_sqrtm(
    a: torch.Tensor, *, method: str = "pi", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Inverse matrix square root ``a^{-1/2}`` (the ZCA whitening matrix), differentiable.

    ``matrix_power(a, -0.5, ...)``; :class:`ZCAWhitening` is the layer built
    on it.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive definite, float32 or float64; only ``(a + aᵀ) / 2``
        is used. Eigenvalues below the core's floor are raised to it.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient rule, see :func:`matrix_power`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        ``a^{-1/2}``, symmetric.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> cov = torch.tensor([[4.0, 0.0], [0.0, 0.25]], dtype=torch.float64)
    >>> svdpi.torch.inv_sqrtm(cov)
    tensor([[0.5000, 0.0000],
            [0.0000, 2.0000]], dtype=torch.float64)
    """
    return matrix_power(a, -0.5, method=method, num_iters=num_iters, check_finite=check_finite)


def logm(
    a: torch.Tensor, *, method: str = "pi", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Matrix logarithm ``log a = V diag(log λ) Vᵀ`` of symmetric PD matrices, differentiable.

    The log-Euclidean map of SPD matrices. The backward is
    :func:`svdpi.matrix_log_vjp`, forward mode :func:`svdpi.matrix_log_jvp`;
    with ``method="exact"`` their divided differences
    ``(log λ_i − log λ_j) / (λ_i − λ_j)`` are evaluated without cancellation.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive definite, float32 or float64; only ``(a + aᵀ) / 2``
        is used. Eigenvalues below the core's floor are raised to it, so a
        singular ``a`` gives a large negative but finite result.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Gradient rule, see :func:`matrix_power`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        ``log a``, symmetric.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([1.0, torch.e], dtype=torch.float64))
    >>> svdpi.torch.logm(a)
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    return spectral_map(
        a, _Log(check_matrix_method(method), check_num_iters(num_iters)), check_finite=check_finite
    )
