"""Backward (VJP) and forward (JVP) derivatives of :func:`svdpi.eig`."""

from __future__ import annotations

from ._coefficients import coefficient_product
from ._dispatch import DECLINED, call_native
from ._scaling import largest_magnitude
from ._typing import Array, Namespace
from ._validation import (
    check_eigenpairs,
    check_like,
    check_method,
    check_num_iters,
    namespace_of,
)


def eig_vjp(
    eigenvalues: Array,
    eigenvectors: Array,
    grad_eigenvalues: Array | None,
    grad_eigenvectors: Array | None,
    /,
    *,
    method: str = "pi",
    num_iters: int = 19,
    xp: Namespace | None = None,
) -> Array:
    r"""Gradient with respect to ``a`` of a loss of ``eig(a)`` (vector-Jacobian product).

    With ``method="pi"`` this is exactly the gradient of the paper's backward
    pass (Wang et al., NeurIPS 2019): ``num_iters`` power-iteration steps per
    eigenvector, with deflation and Rayleigh quotients, started at the exact
    eigenvectors, differentiated through. It is computed in closed form, with
    no loop over eigenvectors or iterations, at the cost of the classical eigh
    backward (three matrix products) whatever ``num_iters`` is.

    Parameters
    ----------
    eigenvalues : array, shape (..., n)
        Eigenvalues in descending order, as returned by :func:`eig`.
    eigenvectors : array, shape (..., n, n)
        The matching eigenvectors (columns), as returned by :func:`eig`.
    grad_eigenvalues : array, shape (..., n), or None
        Cotangent of the eigenvalues; ``None`` means zero.
    grad_eigenvectors : array, shape (..., n, n), or None
        Cotangent of the eigenvectors; ``None`` means zero. To differentiate
        only the top ``k`` eigenpairs (as the paper's layers do), leave the
        other columns zero: the smaller eigenpairs still enter through the
        deflated matrices, as in the paper.
    method : {"pi", "taylor", "analytic"}, default "pi"
        ``"pi"``: the power-iteration gradient, finite for equal eigenvalues,
        bounded by ``(num_iters + 1) / λ_min`` times the cotangent.
        ``"taylor"``: the symmetric series of Wang et al. (TPAMI 2021), powers
        ``0 … num_iters`` of the eigenvalue ratio on both sides.
        ``"analytic"``: the classical ``1 / (λ_i − λ_j)`` gradient (the same
        as ``torch.linalg.eigh``'s backward), infinite for equal eigenvalues;
        for comparison.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``; 19 in the paper) or highest power
        kept (``"taylor"``; 9 in the TPAMI paper). Ignored by ``"analytic"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The symmetric gradient with respect to ``a`` (only the symmetric part
        of a gradient is defined for a symmetric input).

    Notes
    -----
    With ``E = Vᵀ da V`` every method differentiates as ``dλ_j = E_jj``,
    ``dv_j = Σ_{m≠j} A_jm E_mj v_m``, so the VJP is
    ``V sym(diag(ḡλ) + Aᵀ ∘ (Vᵀ ḡV)) Vᵀ``. For ``"pi"`` with ``T = num_iters``
    and ``S_K(r) = Σ_{i=0..K} r^i``::

        A_jm =  S_T(λ_m / λ_j) / λ_j        for m > j (λ_m <= λ_j)
        A_jm = -S_{T-1}(λ_j / λ_m) / λ_m    for m < j

    Eigenvalues below ``n · eps · max|λ|`` (zero, negative or lost to
    round-off) are raised to that floor in ``A``, the scale-free form of the
    paper's clamp of ``‖M v‖``, at every scale. A numerically zero spectrum
    (``max|λ|`` below the smallest normal number of the dtype) is raised to
    ``smallest_normal / eps`` instead, which keeps ``(num_iters + 1) / floor``
    finite: the gradient at the zero matrix is finite. The coefficients are
    computed on the eigenvalues divided by ``min(max|λ|, 1)`` and the result
    rescaled after the last product, so it is finite wherever the true value
    is representable and overflows to ``±inf`` only where it is not.
    No value is read on the host, so on a GPU this call stays asynchronous.

    Examples
    --------
    A doubly degenerate spectrum: the classical gradient is infinite, the
    power-iteration one is finite.

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([3.0, 1.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> g_v = np.zeros((3, 3))
    >>> g_v[0, 2] = 1.0  # d loss / d v[0, 2]
    >>> g_a = svdpi.eig_vjp(w, v, None, g_v)
    >>> bool(np.isfinite(g_a).all()), np.allclose(g_a, g_a.T)
    (True, True)
    """
    if xp is None:
        xp = namespace_of(
            eigenvectors,
            eigenvalues=eigenvalues,
            grad_eigenvalues=grad_eigenvalues,
            grad_eigenvectors=grad_eigenvectors,
        )
    method = check_method(method)
    num_iters = check_num_iters(num_iters)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    if grad_eigenvalues is not None:
        check_like(
            grad_eigenvalues,
            "grad_eigenvalues",
            eigenvalues.shape,
            eigenvalues.dtype,
            xp,
            like=eigenvectors,
        )
    if grad_eigenvectors is not None:
        check_like(
            grad_eigenvectors,
            "grad_eigenvectors",
            eigenvectors.shape,
            eigenvectors.dtype,
            xp,
            like=eigenvectors,
        )
        vt_grad = xp.matrix_transpose(eigenvectors) @ grad_eigenvectors
    else:
        vt_grad = None
    return vjp_from_projected(
        eigenvalues,
        eigenvectors,
        grad_eigenvalues,
        vt_grad,
        method=method,
        num_iters=num_iters,
        xp=xp,
    )


def vjp_from_projected(
    eigenvalues: Array,
    eigenvectors: Array,
    grad_eigenvalues: Array | None,
    vt_grad_eigenvectors: Array | None,
    *,
    method: str,
    num_iters: int,
    xp: Namespace,
) -> Array:
    """:func:`eig_vjp` given ``Vᵀ ḡV`` instead of ``ḡV`` (arguments already checked).

    The whitening VJPs know ``Vᵀ ḡV`` more cheaply than ``ḡV`` itself.
    """
    v = eigenvectors
    if (vt_grad_eigenvectors is None and grad_eigenvalues is None) or v.shape[-1] == 0:
        return xp.zeros_like(v)
    if vt_grad_eigenvectors is None:  # no coefficients: V diag(ḡλ) Vᵀ
        return (v * grad_eigenvalues[..., None, :]) @ xp.matrix_transpose(v)
    # The coefficients are homogeneous of degree -1: A(λ) = A(λ / m) / m. They
    # are computed in units of m (coefficient_scale), the eigenvalue term is
    # brought to the same units, and the finished product divided by m: the
    # result overflows only where its true value does.
    scale = coefficient_scale(eigenvalues, xp)
    # Only the symmetric part is a gradient; symmetrising the small inner
    # matrix is cheaper than symmetrising the result and equal to it.
    inner = _coefficient_product(
        eigenvalues / scale, vt_grad_eigenvectors, method, num_iters, symmetrize=True, xp=xp
    )
    # V (inner + diag(ḡλ)) Vᵀ as (V inner + V diag(ḡλ)) Vᵀ: scaling the columns
    # of V needs no identity matrix built and multiplied.
    left = v @ inner
    if grad_eigenvalues is not None:
        left = left + v * (grad_eigenvalues * scale)[..., None, :]
    return (left @ xp.matrix_transpose(v)) / scale[..., None]


def coefficient_scale(eigenvalues: Array, xp: Namespace) -> Array:
    """The unit ``m`` (shape ``(..., 1)``) the eigenvector coefficients are computed in.

    ``min(max|λ|, 1)``, and 1 for a numerically zero spectrum (``max|λ|``
    below the smallest normal number). On ``λ / m`` the floor of the
    coefficient product (:func:`svdpi._coefficients.eigenvalue_floor`,
    ``max(n · eps · max|λ|, smallest_normal / eps)``) is its relative term
    for every spectrum of normal numbers, however small its scale: the
    absolute term, there to keep the coefficients of an all-zero matrix
    finite, acts only on a numerically zero spectrum. A spectrum above 1
    keeps its own values (``m = 1``: the computation of svdpi 0.2, bit for
    bit), where no coefficient can overflow.
    """
    largest = largest_magnitude(eigenvalues, xp)
    one = xp.ones_like(largest)
    zero_spectrum = largest < xp.finfo(eigenvalues.dtype).smallest_normal
    return xp.where(zero_spectrum, one, xp.minimum(largest, one))


def eig_jvp(
    eigenvalues: Array,
    eigenvectors: Array,
    tangent_a: Array | None,
    /,
    *,
    method: str = "pi",
    num_iters: int = 19,
    xp: Namespace | None = None,
) -> tuple[Array, Array]:
    """Forward-mode derivative of :func:`eig` (Jacobian-vector product).

    The exact transpose of :func:`eig_vjp` with the same ``method`` and
    ``num_iters``: ``<eig_vjp(ḡλ, ḡV), t> == <ḡλ, dλ> + <ḡV, dV>``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        As returned by :func:`eig` (descending eigenvalues).
    tangent_a : array, shape (..., n, n), or None
        Perturbation of ``a``; only its symmetric part matters, as in :func:`eig`.
        ``None`` means zero (zero tangents out), as ``None`` cotangents do
        in :func:`eig_vjp`.
    method : {"pi", "taylor", "analytic"}, default "pi"
        See :func:`eig_vjp`.
    num_iters : int, default 19
        See :func:`eig_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    tangent_eigenvalues : array, shape (..., n)
        ``dλ_j = v_jᵀ da v_j``.
    tangent_eigenvectors : array, shape (..., n, n)
        ``dV = V (Aᵀ ∘ Vᵀ da V)`` with the coefficient matrix of ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([4.0, 2.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> dw, dv = svdpi.eig_jvp(w, v, np.eye(3))  # a + t·I shifts every eigenvalue
    >>> dw
    array([1., 1., 1.])
    >>> bool(np.allclose(dv, 0.0))
    True
    """
    if xp is None:
        xp = namespace_of(eigenvectors, eigenvalues=eigenvalues, tangent_a=tangent_a)
    method = check_method(method)
    num_iters = check_num_iters(num_iters)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    v = eigenvectors
    if tangent_a is None:
        return xp.zeros_like(eigenvalues), xp.zeros_like(v)
    check_like(tangent_a, "tangent_a", v.shape, v.dtype, xp, like=v)
    projected = project_symmetric(v, tangent_a, xp)
    tangent_eigenvalues = xp.linalg.diagonal(projected)
    if v.shape[-1] == 0:
        return tangent_eigenvalues, xp.zeros_like(v)
    # In units of m, as in vjp_from_projected: A(λ) = A(λ / m) / m.
    scale = coefficient_scale(eigenvalues, xp)
    product = _coefficient_product(
        eigenvalues / scale, projected, method, num_iters, symmetrize=False, xp=xp
    )
    tangent_eigenvectors = (v @ product) / scale[..., None]
    return tangent_eigenvalues, tangent_eigenvectors


def project_symmetric(eigenvectors: Array, x: Array, xp: Namespace) -> Array:
    """``Vᵀ sym(X) V``: only the symmetric part of a (co)tangent of a symmetric matrix matters."""
    sym = (x + xp.matrix_transpose(x)) * 0.5
    return xp.matrix_transpose(eigenvectors) @ sym @ eigenvectors


def _coefficient_product(
    eigenvalues: Array, b: Array, method: str, num_iters: int, *, symmetrize: bool, xp: Namespace
) -> Array:
    """``Aᵀ ∘ b`` (then ``(P + Pᵀ) / 2`` if ``symmetrize``), natively where a fast path exists."""
    if eigenvalues.shape[-1] == 0:  # n = 0: nothing to compute (and no max over λ)
        return xp.zeros_like(b)
    product = call_native(
        xp,
        "coefficient_product",
        eigenvalues,
        b,
        method=method,
        num_iters=num_iters,
        symmetrize=symmetrize,
    )
    if product is not DECLINED:
        return product
    return coefficient_product(
        eigenvalues, b, method=method, num_iters=num_iters, symmetrize=symmetrize, xp=xp
    )
