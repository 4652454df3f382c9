"""Functions of the eigenvalues of SPD matrices, the SPDNet nonlinearities, as functions.

Each is one call of :func:`svdpi.torch.spectral_map` with a built-in
:class:`svdpi.functions.SpectralFunction`: an exact eigendecomposition
forward and, by default, the exact (Daleckii–Krein) derivative backward,
whose divided differences svdpi evaluates without cancellation, so the
gradient stays exact where eigenvalues are equal or close (``ReEig`` makes
every clamped eigenvalue equal).
"""

from __future__ import annotations

import torch
from svdpi.functions import Clamp, Exp, Log, Power

from .._spectral import spectral_map
from ._input import autocast_off, check_matrices, check_values, compute_dtype


def _apply(x, fn, name, *, method, num_iters, check_finite, check_spd, hint=""):
    check_matrices(x, name)
    check_values(x, name, finite=check_finite, positive_definite=check_spd, hint=hint)
    with autocast_off(x):
        result = spectral_map(
            x.to(compute_dtype(x)), fn, method=method, num_iters=num_iters, check_finite=False
        )
    return result.to(x.dtype)


def reeig(
    x: torch.Tensor,
    threshold: float = 1e-4,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
) -> torch.Tensor:
    """Eigenvalue rectification ``V max(Λ, threshold) Vᵀ`` (SPDNet's ReEig).

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric matrices (any eigenvalues); only ``(x + xᵀ)/2`` is used.
    threshold : float, default 1e-4
        The floor of the eigenvalues, a finite real number.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule of :func:`svdpi.torch.spectral_map`. ``"exact"`` is
        the derivative of the function (0 across two clamped eigenvalues,
        ``(λ − threshold) / (λ − μ)`` across the kink).
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host read).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        Symmetric, eigenvalues at least ``threshold``; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.diag(torch.tensor([2.0, 1e-6, -3.0], dtype=torch.float64))
    >>> F.reeig(x, 1e-3).diagonal()
    tensor([2.0000e+00, 1.0000e-03, 1.0000e-03], dtype=torch.float64)
    """
    return _apply(
        x,
        Clamp(threshold),
        "x",
        method=method,
        num_iters=num_iters,
        check_finite=check_finite,
        check_spd=False,
    )


def logeig(
    x: torch.Tensor,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
    check_spd: bool = True,
) -> torch.Tensor:
    """Matrix logarithm ``V log(Λ) Vᵀ`` of SPD matrices (SPDNet's LogEig).

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric positive definite; only ``(x + xᵀ)/2`` is used.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`reeig`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries.
    check_spd : bool, default True
        Raise ``ValueError`` when a matrix is not positive definite (its
        Cholesky factorisation fails), read together with the finiteness
        check in one host read. Either way, eigenvalues below svdpi's
        eigenvalue floor ``n · eps · λ_max`` (what an eigensolver can tell
        from 0) are raised to it, as :func:`svdpi.torch.logm` does: a large
        negative but finite logarithm for a singular matrix when the check
        is off.

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        Symmetric; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.diag(torch.tensor([1.0, torch.e], dtype=torch.float64))
    >>> F.logeig(x)
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    return _apply(
        x,
        Log(),
        "x",
        method=method,
        num_iters=num_iters,
        check_finite=check_finite,
        check_spd=check_spd,
        hint=": apply ReEig first, or add a ridge",
    )


def expeig(
    x: torch.Tensor,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
) -> torch.Tensor:
    """Matrix exponential ``V exp(Λ) Vᵀ`` of symmetric matrices (ExpEig), an SPD result.

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric (any eigenvalues); only ``(x + xᵀ)/2`` is used.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`reeig`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries.

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        Symmetric positive definite. ``e^λ`` overflows for ``λ`` above
        about 88 in float32, 709 in float64: the result then has ``inf``
        entries where the true entry overflows, finite ones (0 where an
        eigenvector vanishes) where it does not, as
        ``torch.linalg.matrix_exp``; never NaN.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> F.expeig(x)  # cosh 1 on the diagonal, sinh 1 off it
    tensor([[1.5431, 1.1752],
            [1.1752, 1.5431]], dtype=torch.float64)
    """
    return _apply(
        x,
        Exp(),
        "x",
        method=method,
        num_iters=num_iters,
        check_finite=check_finite,
        check_spd=False,
    )


def poweig(
    x: torch.Tensor,
    exponent: float,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
    check_spd: bool = True,
) -> torch.Tensor:
    """Matrix power ``V Λ^p Vᵀ`` of SPD matrices (e.g. the square root, ``p = 1/2``).

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric positive definite; only ``(x + xᵀ)/2`` is used.
    exponent : float
        ``p``, a finite real number.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`reeig`.
    num_iters : int, default 19
        Power-iteration steps of ``"pi"``, terms of ``"taylor"``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries.
    check_spd : bool, default True
        Raise ``ValueError`` when a matrix is not positive definite. Pass
        ``False`` for singular PSD input with ``p > 0`` (negative round-off
        eigenvalues count as 0; for ``p < 0`` eigenvalues below svdpi's
        floor are raised to it).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        Symmetric; the input's dtype.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.tensor([[4.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
    >>> F.poweig(x, 0.5)
    tensor([[2., 0.],
            [0., 3.]], dtype=torch.float64)
    """
    return _apply(
        x,
        Power(exponent),
        "x",
        method=method,
        num_iters=num_iters,
        check_finite=check_finite,
        check_spd=check_spd,
    )
