"""Differentiable matrix functions of symmetric matrices: powers, square roots, log, exp.

Each is one call of :func:`svdpi.torch.spectral_map` with a built-in
:class:`svdpi.functions.SpectralFunction` (``Power(p)``, ``Log()``,
``Exp()``): the exact eigendecomposition forward, the core's derivatives
backward, in forward mode and, for ``method="exact"`` (the default since
svdpi 0.3), second derivatives.
"""

from __future__ import annotations

import torch
from svdpi.adapter import MATRIX_FUNCTION_METHODS, check_exponent, check_method
from svdpi.functions import Exp, Log, Power

from ._spectral import apply, make_map

#: One instance per function: the same constant for every call under torch.compile.
_SQRT = Power(0.5)
_INV_SQRT = Power(-0.5)
_LOG = Log()
_EXP = Exp()


def check_matrix_method(method) -> str:
    """One of ``"exact"``, ``"pi"``, ``"taylor"``, ``"analytic"``."""
    return check_method(method, MATRIX_FUNCTION_METHODS)


def _call(a, fn, method, num_iters, check_finite, caller):
    return apply(a, make_map(fn, method, num_iters, caller=caller), check_finite=check_finite)


def matrix_power(
    a: torch.Tensor,
    p: float,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
) -> torch.Tensor:
    """Matrix power ``a^p = V diag(λ^p) Vᵀ`` of symmetric PSD matrices, differentiable.

    :func:`svdpi.torch.spectral_map` of ``svdpi.functions.Power(p)``.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive (semi-)definite, float32 or float64, or complex
        Hermitian (complex64, complex128), CPU or CUDA. Only ``(a + aᴴ) / 2``
        is used.
    p : float
        Any real, finite exponent. For ``p < 0`` eigenvalues below the
        core's floor ``max(n · eps · max|λ|, smallest normal)`` are raised
        to it (as :func:`svdpi.zca_whitening_matrix` does), so a singular
        ``a`` gives a large but finite result; for ``p > 0`` negative
        round-off eigenvalues count as 0.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule (the forward is the same for all):

        - ``"exact"``: the Daleckii–Krein derivative of ``a^p`` itself, with
          divided differences ``(λ_i^p − λ_j^p) / (λ_i − λ_j)`` evaluated
          without cancellation; finite and independent of the eigenvector
          basis at repeated eigenvalues, and differentiable once more
          (double backward, ``torch.func.hessian``). See
          :func:`svdpi.spectral_map_vjp`.
        - ``"pi"``: the gradient of the paper's power iteration with
          deflation (Wang et al., NeurIPS 2019) through the eigenvectors;
          finite at repeated eigenvalues, but *not* the derivative of
          ``a^p``: on clustered spectra it differs from it by the
          power-iteration truncation (``benchmarks/pi_vs_exact.py``).
        - ``"taylor"``: its Taylor-series successor, ``num_iters`` terms.
        - ``"analytic"``: the classical eigendecomposition gradient,
          ``1 / (λ_i − λ_j)``; infinite at equal eigenvalues.

        The default was ``"pi"`` before svdpi 0.3 (a breaking change).
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
    ``torch.compile(fullgraph=True)`` work as for
    :func:`svdpi.torch.spectral_map`; second derivatives with
    ``method="exact"`` only (the other methods raise ``RuntimeError``).
    Batches of zero matrices and ``n = 0`` give empty results, as
    ``torch.linalg.eigh`` does.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> torch.allclose(svdpi.torch.matrix_power(a, 2), a @ a)
    True
    >>> svdpi.torch.matrix_power(a, -1).trace().backward()
    >>> inverse = torch.linalg.inv(a.detach())
    >>> torch.allclose(a.grad, -inverse @ inverse)  # d tr(a⁻¹) = −tr(a⁻² da)
    True
    """
    fn = Power(check_exponent(p))
    return _call(a, fn, method, num_iters, check_finite, "svdpi.torch.matrix_power")


def sqrtm(
    a: torch.Tensor, *, method: str = "exact", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Matrix square root ``a^{1/2}`` of symmetric PSD matrices, differentiable.

    ``matrix_power(a, 0.5, ...)``: the square-root normalisation of
    covariance pooling (MPN-COV, iSQRT-COV; see :class:`CovariancePooling`).

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric PSD, float32 or float64, or Hermitian PSD, complex64 or
        complex128; only ``(a + aᴴ) / 2`` is used.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`matrix_power` (``"pi"`` before svdpi 0.3).
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        The symmetric PSD square root.

    Notes
    -----
    At a singular ``a`` (an eigenvalue 0) the square root has no derivative
    (``√λ`` has an infinite slope at 0), and the gradient comes out NaN, as
    through ``torch.linalg.eigh``; add ``eps · I`` first, as covariance
    pooling does.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    >>> root = svdpi.torch.sqrtm(a)
    >>> root.diagonal().detach()
    tensor([2., 1., 1.], dtype=torch.float64)
    >>> root.trace().backward()  # d sqrt(λ) / dλ = 1 / (2 sqrt λ), also where λ repeats
    >>> a.grad.diagonal()
    tensor([0.2500, 0.5000, 0.5000], dtype=torch.float64)

    A complex Hermitian matrix (the gradient in PyTorch's convention):

    >>> h = torch.tensor([[2.0, 1 + 1j], [1 - 1j, 3.0]], dtype=torch.complex128)
    >>> root = svdpi.torch.sqrtm(h.requires_grad_())
    >>> torch.allclose(root @ root, h)
    True
    >>> root.trace().real.backward()  # d tr √H = H^{-1/2} / 2
    >>> torch.allclose(h.grad, svdpi.torch.inv_sqrtm(h.detach()) / 2)
    True
    """
    return _call(a, _SQRT, method, num_iters, check_finite, "svdpi.torch.sqrtm")


def inv_sqrtm(
    a: torch.Tensor, *, method: str = "exact", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Inverse matrix square root ``a^{-1/2}`` (the ZCA whitening matrix), differentiable.

    ``matrix_power(a, -0.5, ...)``; :class:`ZCAWhitening` is the layer built
    on it (with the paper's ``method="pi"`` as its default).

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric (or complex Hermitian) positive definite, float32, float64,
        complex64 or complex128; only ``(a + aᴴ) / 2`` is used. Eigenvalues
        below the core's floor are raised to it.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`matrix_power` (``"pi"`` before svdpi 0.3).
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
    return _call(a, _INV_SQRT, method, num_iters, check_finite, "svdpi.torch.inv_sqrtm")


def logm(
    a: torch.Tensor, *, method: str = "exact", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Matrix logarithm ``log a = V diag(log λ) Vᵀ`` of symmetric PD matrices, differentiable.

    The log-Euclidean map of SPD matrices: :func:`svdpi.torch.spectral_map`
    of ``svdpi.functions.Log()``, whose divided differences
    ``(log λ_i − log λ_j) / (λ_i − λ_j)`` are evaluated without
    cancellation.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric (or complex Hermitian) positive definite, float32, float64,
        complex64 or complex128; only ``(a + aᴴ) / 2`` is used. Eigenvalues
        below the core's floor are raised to it, so a
        singular ``a`` gives a large negative but finite result.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`matrix_power` (``"pi"`` before svdpi 0.3).
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
    return _call(a, _LOG, method, num_iters, check_finite, "svdpi.torch.logm")


def expm(
    a: torch.Tensor, *, method: str = "exact", num_iters: int = 19, check_finite: bool = True
) -> torch.Tensor:
    """Matrix exponential ``exp a = V diag(e^λ) Vᵀ`` of symmetric matrices, differentiable.

    :func:`svdpi.torch.spectral_map` of ``svdpi.functions.Exp()``: the
    inverse of :func:`logm` on SPD matrices (the exponential map of the
    log-Euclidean metric), for any symmetric ``a``. The forward equals
    ``torch.linalg.matrix_exp`` of ``(a + aᵀ) / 2``; the exact derivative's
    divided differences ``(e^λi − e^λj) / (λi − λj)`` are evaluated without
    cancellation.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric, float32 or float64, or complex Hermitian, complex64 or
        complex128; only ``(a + aᴴ) / 2`` is used.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`matrix_power`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        ``exp a``, symmetric positive definite. Where ``e^λ`` overflows
        (``λ`` above about 88 in float32, 709 in float64) the entries whose
        true value overflows are ``inf`` (as ``torch.linalg.matrix_exp``
        gives), the others finite, 0 where the eigenvectors vanish: svdpi's
        spectral maps sum the overflowing terms apart, in units of a power
        of two near ``e^max λ``. The exact gradient likewise: ``±inf``
        where the true derivative overflows, finite where not, never NaN.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    >>> torch.allclose(svdpi.torch.expm(a), torch.linalg.matrix_exp(a))
    True
    >>> torch.allclose(svdpi.torch.logm(svdpi.torch.expm(a)), a)
    True
    >>> svdpi.torch.expm(a).trace().backward()  # d tr(exp a) = tr(exp(a) da)
    >>> torch.allclose(a.grad, torch.linalg.matrix_exp(a.detach()))
    True
    """
    return _call(a, _EXP, method, num_iters, check_finite, "svdpi.torch.expm")
