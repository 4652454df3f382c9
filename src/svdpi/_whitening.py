"""ZCA whitening and PCA projection matrices from eigenpairs, with their VJPs.

These let NumPy and CuPy users (who have no autograd) run the paper's layers
by hand: ``eig`` forward, then the matrix, then its VJP, which chains into
the SVD-PI gradient of :func:`svdpi.eig_vjp`.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from ._compat import array_device
from ._complex import adjoint
from ._matrix_functions import matrix_power
from ._spectral_maps import derivative
from ._truncation import ENERGY_RULES, Truncation
from ._validation import (
    check_eigenpairs,
    check_floating,
    check_integer,
    check_mask,
    namespace_of,
)
from .functions import Power

#: ``zca_whitening_matrix`` is ``matrix_power`` with this exponent.
_WHITENING = Power(-0.5)
#: The projector is the spectral map of the constant 1 on the kept eigenpairs.
_INDICATOR = Power(0.0)

__all__ = [
    "ENERGY_RULES",
    "check_truncation",
    "pca_projector",
    "pca_projector_vjp",
    "truncation_mask",
    "zca_whitening_matrix",
    "zca_whitening_matrix_vjp",
]


def check_truncation(
    max_energy: float | None, energy_rule: str, min_eigenvalue: float | None = None
) -> Truncation:
    """The checks of the truncation options, for callers that take them up front.

    Returns the :class:`~svdpi.Truncation` they make (which raises on bad options).
    """
    return Truncation(min_eigenvalue, max_energy, energy_rule)


def truncation_mask(
    eigenvalues: Any,
    /,
    *,
    min_eigenvalue: float | None = None,
    max_energy: float | None = None,
    energy_rule: str = "preceding",
    xp: Any = None,
) -> Any:
    """Which eigenpairs to keep, by the truncation rules of the paper's layers.

    ``Truncation(min_eigenvalue, max_energy, energy_rule).mask(eigenvalues)``;
    see :class:`svdpi.Truncation` for the rules and the checks of the options.

    Parameters
    ----------
    eigenvalues : array, shape (..., n)
        Descending eigenvalues, as returned by :func:`eig` (at least one
        dimension).
    min_eigenvalue : float, optional
        Keep only eigenpairs with ``λ_j > min_eigenvalue`` (the paper uses its
        ``eps``, the value added to the covariance's diagonal).
    max_energy : float, optional
        Keep the leading eigenpairs until they hold this fraction of the total
        energy ``Σ λ`` (the paper uses ``1 − eps``), in ``(0, 1]``.
    energy_rule : {"preceding", "inclusive"}, default "preceding"
        ``"preceding"`` keeps eigenpair ``j`` while the energy of the pairs
        *before* it is below ``max_energy``, so the pair that crosses the
        threshold is kept and a full-rank spectrum keeps everything.
        ``"inclusive"`` compares the energy up to and *including* ``j``: this
        is the rule of the paper's published code, and since the cumulative
        energy reaches 1 at the last index it always drops the smallest
        eigenpair. Neither drops the leading eigenpair (see :class:`svdpi.Truncation`).
    xp : array namespace, optional
        Inferred from ``eigenvalues`` when omitted.

    Returns
    -------
    array of bool, shape (..., n)
        ``True`` for the eigenpairs to keep; all ``True`` if no rule is given.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w = np.array([4.0, 2.0, 1.0, 1e-9])
    >>> svdpi.truncation_mask(w, min_eigenvalue=1e-5)
    array([ True,  True,  True, False])
    >>> svdpi.truncation_mask(w, max_energy=0.5)
    array([ True, False, False, False])
    >>> svdpi.truncation_mask(w, max_energy=1 - 1e-5, energy_rule="inclusive")
    array([ True,  True, False, False])
    """
    return Truncation(min_eigenvalue, max_energy, energy_rule).mask(eigenvalues, xp=xp)


def zca_whitening_matrix(
    eigenvalues: Any, eigenvectors: Any, /, *, mask: Any = None, xp: Any = None
) -> Any:
    """ZCA whitening matrix ``V diag(λ^{-1/2}) Vᵀ`` of a covariance's eigenpairs.

    The special case ``matrix_power(eigenvalues, eigenvectors, -0.5, mask=mask)``
    of :func:`svdpi.matrix_power`.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of a (batch of) covariance matrices, as returned by :func:`eig`.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use (e.g. from :func:`truncation_mask`); the others are
        left out of the sum. All are used when omitted.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``W`` with ``W Σ W = I`` on the kept subspace, for ``Σ`` the covariance.

    Notes
    -----
    Eigenvalues below the floor ``max(n · eps · max|λ|, smallest normal)``
    (see :func:`svdpi.spectral_map`) are raised to it, so a singular covariance
    gives a large but finite matrix; add ``eps · I`` to the covariance (as
    the paper does) or mask such pairs.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((3, 500)) * np.array([[1.0], [2.0], [5.0]])
    >>> x = x - x.mean(axis=1, keepdims=True)
    >>> cov = x @ x.T / x.shape[1]
    >>> w = svdpi.zca_whitening_matrix(*svdpi.eig(cov))
    >>> y = w @ x
    >>> np.allclose(y @ y.T / y.shape[1], np.eye(3))
    True
    """
    return matrix_power(eigenvalues, eigenvectors, _WHITENING.p, mask=mask, xp=xp)


def zca_whitening_matrix_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    grad_whitening: Any,
    /,
    *,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to the covariance of a loss of :func:`zca_whitening_matrix`.

    :func:`svdpi.matrix_power_vjp` with ``p = -1/2``, but with the paper's
    ``"pi"`` as default: the chain rule through ``W = V diag(λ^{-1/2}) Vᵀ``
    into :func:`eig_vjp` (``method`` and ``num_iters`` as there), or with
    ``method="exact"`` the Daleckii–Krein derivative, whose entries in the
    eigenbasis are at most ``λ_min^{-3/2} / 2`` times the cotangent's.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    grad_whitening : array, shape (..., n, n), or None
        Cotangent of the whitening matrix; ``None`` means zero.
    mask : array of bool, shape (..., n), optional
        The mask the forward used.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.matrix_power_vjp`. The default is ``"pi"``, the
        paper's gradient (its layers by hand), unlike the matrix functions,
        whose default is ``"exact"``.
    num_iters : int, default 19
        See :func:`eig_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian, for complex input) gradient with respect to the covariance.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> w, v = svdpi.eig(cov)
    >>> g = svdpi.zca_whitening_matrix_vjp(w, v, np.eye(2))  # d trace(W) / d cov
    >>> expected = v @ np.diag(-0.5 * w**-1.5) @ v.T  # d trace(cov^-1/2) / d cov
    >>> bool(np.allclose(g, expected))
    True
    """
    return derivative(
        eigenvalues,
        eigenvectors,
        _WHITENING,
        grad_whitening,
        "grad_whitening",
        mask,
        method,
        num_iters,
        True,
        xp,
    )


def pca_projector(
    eigenvectors: Any, /, *, n_components: int | None = None, mask: Any = None, xp: Any = None
) -> Any:
    """Orthogonal projector ``V_k V_kᵀ`` on the leading eigenvectors (PCA denoising).

    Parameters
    ----------
    eigenvectors : array, shape (..., n, n)
        Eigenvectors as returned by :func:`eig` (descending eigenvalues).
    n_components : int, optional
        Keep the first ``n_components`` eigenvectors (all when omitted).
    mask : array of bool, shape (..., n), optional
        Further restrict the kept eigenvectors (e.g. :func:`truncation_mask`).
    xp : array namespace, optional
        Inferred from ``eigenvectors`` when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The symmetric (Hermitian, for complex eigenvectors), idempotent projector.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w, v = svdpi.eig(np.diag([1.0, 3.0, 2.0]))
    >>> svdpi.pca_projector(v, n_components=2)
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    if xp is None:
        xp = array_namespace(eigenvectors)
    check_floating(eigenvectors, "eigenvectors", xp, allow_complex=True)
    kept = _projector_mask(eigenvectors, n_components, mask, xp)
    shape = tuple(eigenvectors.shape[:-1])
    weights = xp.ones(shape, dtype=eigenvectors.dtype, device=array_device(eigenvectors))
    if kept is not None:
        weights = xp.where(kept, weights, xp.zeros_like(weights))
    # The spectral map of the constant 1 on the kept eigenpairs (Power(0)),
    # without the eigenvalues, which it does not need.
    return (eigenvectors * weights[..., None, :]) @ adjoint(eigenvectors, xp)


def pca_projector_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    grad_projector: Any,
    /,
    *,
    n_components: int | None = None,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to the covariance of a loss of :func:`pca_projector`.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    grad_projector : array, shape (..., n, n), or None
        Cotangent of the projector; ``None`` means zero.
    n_components, mask : optional
        As in the forward.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        ``"pi"`` (the paper's layer, the default), ``"taylor"``,
        ``"analytic"``: the chain rule through the eigenvectors with the
        coefficients of :func:`eig_vjp`. ``"exact"``: the Daleckii–Krein
        derivative ``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` with
        ``G_ij = (w_i − w_j) / (λ_i − λ_j)`` for the 0/1 indicator ``w`` of
        the kept eigenpairs: it couples only kept with dropped pairs, equals
        ``"analytic"`` wherever the eigenvalues are distinct, and is finite
        whenever the eigenvalues at the cut differ, however little. Where a
        kept and a dropped eigenvalue are equal (the mask cuts a repeated
        eigenvalue) the projector is not differentiable and the result is
        NaN; the chain-rule methods stay finite there (``"pi"``,
        ``"taylor"``) or are infinite (``"analytic"``). This is
        :func:`svdpi.spectral_map_vjp` of ``Power(0)`` (the constant 1) with the
        mask of the kept pairs.
    num_iters : int, default 19
        See :func:`eig_vjp`; ignored by ``"analytic"`` and ``"exact"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian, for complex input) gradient with respect to the covariance.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> cov = np.array([[3.0, 1.0], [1.0, 2.0]])
    >>> w, v = svdpi.eig(cov)
    >>> g = svdpi.pca_projector_vjp(w, v, np.ones((2, 2)), n_components=1)
    >>> g.shape, bool(np.allclose(g, g.T))
    ((2, 2), True)
    """
    if xp is None:
        xp = namespace_of(
            eigenvectors, eigenvalues=eigenvalues, grad_projector=grad_projector, mask=mask
        )
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    kept = _projector_mask(eigenvectors, n_components, mask, xp)
    # The spectral map of Power(0), the constant 1, on the kept eigenpairs.
    return derivative(
        eigenvalues,
        eigenvectors,
        _INDICATOR,
        grad_projector,
        "grad_projector",
        kept,
        method,
        num_iters,
        True,
        xp,
    )


def _projector_mask(eigenvectors: Any, n_components: Any, mask: Any, xp: Any) -> Any:
    """The kept eigenpairs: the first ``n_components``, and ``mask``; ``None`` for all."""
    n = eigenvectors.shape[-1]
    shape = tuple(eigenvectors.shape[:-1])
    if mask is not None:
        check_mask(mask, shape, xp, like=eigenvectors)
    if n_components is None:
        return mask
    k = check_integer(n_components, "n_components", minimum=1)
    if k > n:
        raise ValueError(f"n_components must be in [1, {n}], got {k}")
    leading = xp.arange(n, device=array_device(eigenvectors)) < k
    leading = xp.broadcast_to(leading, shape)
    return leading if mask is None else leading & mask
