"""ZCA whitening and PCA projection matrices from eigenpairs, with their VJPs.

These let NumPy and CuPy users (who have no autograd) run the paper's layers
by hand: ``eig`` forward, then the matrix, then its VJP, which chains into
the SVD-PI gradient of :func:`svdpi.eig_vjp`.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from ._compat import array_device
from ._gradient import project_symmetric, vjp_from_projected
from ._matrix_functions import _Function, function_vjp, masked_kernel, matrix_power
from ._validation import (
    MATRIX_FUNCTION_METHODS,
    check_eigenpairs,
    check_floating,
    check_integer,
    check_like,
    check_mask,
    check_method,
    check_num_iters,
)

#: ``zca_whitening_matrix`` is ``matrix_power`` with this exponent.
_WHITENING = _Function("power", -0.5)

ENERGY_RULES = ("preceding", "inclusive")


def check_truncation(max_energy: float | None, energy_rule: str) -> None:
    """The checks of :func:`truncation_mask`'s options, for callers that take them up front."""
    if energy_rule not in ENERGY_RULES:
        raise ValueError(f"energy_rule must be 'preceding' or 'inclusive', got {energy_rule!r}")
    if max_energy is not None and not 0.0 < max_energy <= 1.0:
        raise ValueError(f"max_energy must be in (0, 1], got {max_energy!r}")


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

    Parameters
    ----------
    eigenvalues : array, shape (..., n)
        Descending eigenvalues, as returned by :func:`eig`.
    min_eigenvalue : float, optional
        Keep only eigenpairs with ``λ_j > min_eigenvalue`` (the paper uses its
        ``eps``, the value added to the covariance's diagonal).
    max_energy : float, optional
        Keep the leading eigenpairs until they hold this fraction of the total
        energy ``Σ λ`` (the paper uses ``1 − eps``).
    energy_rule : {"preceding", "inclusive"}, default "preceding"
        ``"preceding"`` keeps eigenpair ``j`` while the energy of the pairs
        *before* it is below ``max_energy``, so the pair that crosses the
        threshold is kept and a full-rank spectrum keeps everything.
        ``"inclusive"`` compares the energy up to and *including* ``j``: this
        is the rule of the paper's published code, and since the cumulative
        energy reaches 1 at the last index it always drops the smallest
        eigenpair.
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
    if xp is None:
        xp = array_namespace(eigenvalues)
    check_floating(eigenvalues, "eigenvalues", xp)
    check_truncation(max_energy, energy_rule)
    keep = xp.ones(eigenvalues.shape, dtype=xp.bool, device=array_device(eigenvalues))
    if min_eigenvalue is not None:
        keep = keep & (eigenvalues > min_eigenvalue)
    if max_energy is not None:
        cumulative = xp.cumulative_sum(eigenvalues, axis=-1)
        total = cumulative[..., -1:]
        if energy_rule == "preceding":
            cumulative = cumulative - eigenvalues
        keep = keep & (cumulative < max_energy * total)
    return keep


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
    Eigenvalues below ``n · eps · max|λ|`` (see :func:`eig_vjp`) are raised
    to that floor, so a singular covariance gives a large but finite matrix;
    add ``eps · I`` to the covariance (as the paper does) or mask such pairs.

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

    :func:`svdpi.matrix_power_vjp` with ``p = -1/2``: the chain rule through
    ``W = V diag(λ^{-1/2}) Vᵀ`` into :func:`eig_vjp` (``method`` and
    ``num_iters`` as there), or with ``method="exact"`` the Daleckii–Krein
    derivative, whose entries in the eigenbasis are at most
    ``λ_min^{-3/2} / 2`` times the cotangent's.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    grad_whitening : array, shape (..., n, n), or None
        Cotangent of the whitening matrix; ``None`` means zero.
    mask : array of bool, shape (..., n), optional
        The mask the forward used.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.matrix_power_vjp`.
    num_iters : int, default 19
        See :func:`eig_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric gradient with respect to the covariance.

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
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors, grad_whitening)
    return function_vjp(
        _WHITENING,
        eigenvalues,
        eigenvectors,
        grad_whitening,
        "grad_whitening",
        mask,
        method,
        num_iters,
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
        The symmetric, idempotent projector.

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
    check_floating(eigenvectors, "eigenvectors", xp)
    weights = _projector_weights(eigenvectors, n_components, mask, xp)
    return (eigenvectors * weights[..., None, :]) @ xp.matrix_transpose(eigenvectors)


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
        ``"pi"``, ``"taylor"``, ``"analytic"``: the chain rule through the
        eigenvectors with the coefficients of :func:`eig_vjp`. ``"exact"``:
        the Daleckii–Krein derivative ``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` with
        ``G_ij = (w_i − w_j) / (λ_i − λ_j)`` for the 0/1 indicator ``w`` of
        the kept eigenpairs: it couples only kept with dropped pairs, equals
        ``"analytic"`` wherever the eigenvalues are distinct, and is finite
        whenever there is a gap at the cut. Without one (a kept and a dropped
        eigenvalue closer than ``n · eps · max|λ|``, which the eigensolver
        cannot tell apart) the projector is not differentiable and the result
        is NaN; the chain-rule methods stay finite there (``"pi"``,
        ``"taylor"``) or are of order ``1 / round-off`` (``"analytic"``).
    num_iters : int, default 19
        See :func:`eig_vjp`; ignored by ``"analytic"`` and ``"exact"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric gradient with respect to the covariance.

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
        xp = array_namespace(eigenvalues, eigenvectors, grad_projector)
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    num_iters = check_num_iters(num_iters)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    weights = _projector_weights(eigenvectors, n_components, mask, xp)
    if grad_projector is not None:
        check_like(grad_projector, "grad_projector", eigenvectors.shape, eigenvectors.dtype, xp)
    if grad_projector is None or eigenvectors.shape[-1] == 0:  # a zero cotangent, or n = 0
        return xp.zeros_like(eigenvectors)
    projected = project_symmetric(eigenvectors, grad_projector, xp)
    if method == "exact":
        kernel = masked_kernel(eigenvalues, weights, weights > 0, xp.zeros_like(projected), xp)
        inner = kernel * projected
        return eigenvectors @ inner @ xp.matrix_transpose(eigenvectors)
    # P = V diag(w) Vᵀ with constant w: <G, dP> = <2 G V diag(w), dV>.
    vt_grad_vectors = 2.0 * projected * weights[..., None, :]
    return vjp_from_projected(
        eigenvalues,
        eigenvectors,
        None,
        vt_grad_vectors,
        method=method,
        num_iters=num_iters,
        xp=xp,
    )


def _projector_weights(eigenvectors: Any, n_components: Any, mask: Any, xp: Any) -> Any:
    n = eigenvectors.shape[-1]
    shape = tuple(eigenvectors.shape[:-1])
    dtype = eigenvectors.dtype
    weights = xp.ones(shape, dtype=dtype, device=array_device(eigenvectors))
    if n_components is not None:
        k = check_integer(n_components, "n_components", minimum=1)
        if k > n:
            raise ValueError(f"n_components must be in [1, {n}], got {k}")
        index = xp.arange(n, device=array_device(eigenvectors))
        weights = xp.where(index < k, weights, xp.zeros_like(weights))
    if mask is not None:
        check_mask(mask, shape, xp)
        weights = xp.where(mask, weights, xp.zeros_like(weights))
    return weights
