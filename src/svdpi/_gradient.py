"""Backward (VJP) and forward (JVP) derivatives of :func:`svdpi.eig`."""

from __future__ import annotations

from ._coefficients import coefficient_product, triangles
from ._compat import array_device
from ._complex import (
    adjoint,
    canonical_cotangent,
    canonical_rotation,
    column_norms,
    from_parts,
    is_complex,
    phase_action,
    phase_term,
    phase_violations,
    poison,
    real_diagonal,
)
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
    canonical: bool = False,
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
        The matching eigenvectors (columns), as returned by :func:`eig`:
        real, or complex for a Hermitian matrix.
    grad_eigenvalues : array, shape (..., n), or None
        Cotangent of the eigenvalues (real); ``None`` means zero.
    grad_eigenvectors : array, shape (..., n, n), or None
        Cotangent of the eigenvectors, of their dtype; ``None`` means zero.
        To differentiate only the top ``k`` eigenpairs (as the paper's
        layers do), leave the other columns zero: the smaller eigenpairs
        still enter through the deflated matrices, as in the paper. For
        complex eigenvectors it follows PyTorch's convention,
        ``dL = Re Σ conj(ḡ) · dv`` (the ``.grad`` PyTorch would pass).
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
    canonical : bool, default False
        Differentiate the canonical eigenvectors of ``eig(a, canonical=True)``
        (pass the eigenpairs it returned): for complex input their phase
        depends on ``a``, so every loss of them has a gradient. For real
        input the canonical sign is locally constant and the gradient is
        the same either way.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The symmetric (Hermitian, for complex input) gradient with respect
        to ``a``: only that part of a gradient is defined for a symmetric
        input. For complex input, PyTorch's convention, as the cotangents.

    Raises
    ------
    ValueError
        For complex eigenvectors (without ``canonical``) when the cotangent
        depends on their arbitrary phase (``Im(v_jᴴ ḡv_j) ≠ 0``), as
        ``torch.linalg.eigh`` does: such a loss is not a function of ``a``.
        This reads one boolean on the host; for lazy arrays (JAX, Dask),
        which are not read, that matrix's gradient is NaN instead.

    Notes
    -----
    With ``E = Vᴴ da V`` every method differentiates as ``dλ_j = E_jj``,
    ``dv_j = Σ_{m≠j} A_jm E_mj v_m``, so the VJP is
    ``V herm(diag(ḡλ) + Aᵀ ∘ (Vᴴ ḡV)) Vᴴ`` (``herm(X) = (X + Xᴴ)/2``, which
    is ``sym`` and ``Vᵀ`` for real input). ``A`` is real: for complex input
    it multiplies the real and imaginary parts of ``Vᴴ ḡV`` apart. For
    ``"pi"`` with ``T = num_iters``
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
    (The ``ḡλ`` term is carried in those units as ``ḡλ · m``: within a few
    orders of magnitude of the smallest normal number, on platforms that
    flush subnormal numbers to zero, such as XLA's, it loses relative
    accuracy.) No value is read on the host for real input, so on a GPU
    this call stays asynchronous.

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

    A complex Hermitian matrix. ``Re Σ V`` depends on the eigenvectors'
    arbitrary phases, so it has a gradient only for the canonical ones:

    >>> h = np.array([[2.0, 1 + 1j], [1 - 1j, 3.0]])
    >>> w, v = svdpi.eig(h)
    >>> svdpi.eig_vjp(w, v, None, np.ones_like(v))
    Traceback (most recent call last):
    ...
    ValueError: grad_eigenvectors depends on the arbitrary phase of the complex eigenvectors ...
    >>> w, v = svdpi.eig(h, canonical=True)
    >>> g_h = svdpi.eig_vjp(w, v, None, np.ones_like(v), canonical=True)
    >>> bool(np.allclose(g_h, g_h.conj().T))
    True
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
    check_canonical(canonical)
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
        vt_grad = adjoint(eigenvectors, xp) @ grad_eigenvectors
    else:
        vt_grad = None
    return vjp_from_projected(
        eigenvalues,
        eigenvectors,
        grad_eigenvalues,
        vt_grad,
        method=method,
        num_iters=num_iters,
        canonical=canonical,
        xp=xp,
    )


def check_canonical(canonical: object) -> None:
    """Require a bool for ``canonical``."""
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")


_PHASE_MESSAGE = (
    "grad_eigenvectors depends on the arbitrary phase of the complex eigenvectors "
    "(Im diag(Vᴴ grad_eigenvectors) is not zero), so the loss is not a function of the "
    "matrix and has no gradient. Use a loss that is invariant under v_j -> e^(iφ) v_j "
    "(e.g. of V diag(f(λ)) Vᴴ, |V|, v_j v_jᴴ), or fix the phase with canonical=True "
    "(in svdpi.eig and its derivatives)"
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
    canonical: bool = False,
    phase: str = "raise",
) -> Array:
    """:func:`eig_vjp` given ``Vᴴ ḡV`` instead of ``ḡV`` (arguments already checked).

    The whitening VJPs know ``Vᴴ ḡV`` more cheaply than ``ḡV`` itself.
    ``phase`` says what to do for complex eigenvectors (without
    ``canonical``) when the cotangent depends on their phase: ``"raise"``
    (one boolean read on the host; lazy arrays, which cannot be read, get
    ``"nan"``), ``"nan"`` (that matrix's gradient becomes NaN; no host read,
    for traced or compiled code) or ``"off"`` (the phase-dependent part is
    dropped: the exact transpose of :func:`eig_jvp`). Real input ignores it.
    """
    v = eigenvectors
    if (vt_grad_eigenvectors is None and grad_eigenvalues is None) or v.shape[-1] == 0:
        return xp.zeros_like(v)
    if vt_grad_eigenvectors is None:  # no coefficients: V diag(ḡλ) Vᴴ
        return (v * grad_eigenvalues[..., None, :]) @ adjoint(v, xp)
    poisoned = None
    if is_complex(v, xp):
        gamma = phase_term(vt_grad_eigenvectors, xp)
        if canonical:
            # The canonical eigenvectors' phase depends on a: its derivative is
            # a cotangent −i·γ_j/|V[i*, j]| at the pivot entry of ḡV, which
            # makes the phase term vanish (docs/theory_complex.rst).
            correction = canonical_cotangent(v, gamma, xp)
            vt_grad_eigenvectors = vt_grad_eigenvectors + adjoint(v, xp) @ correction
        else:
            # V is unitary: the columns of Vᴴ ḡV have the norms of ḡV's.
            size = column_norms(vt_grad_eigenvectors, xp)
            bad = phase_violations(gamma, size, xp)
            poisoned = phase_action(bad, phase, _PHASE_MESSAGE, xp)
    # The coefficients are homogeneous of degree -1: A(λ) = A(λ / m) / m. They
    # are computed in units of m (coefficient_scale), the eigenvalue term is
    # brought to the same units, and the finished product divided by m: the
    # result overflows only where its true value does.
    scale = coefficient_scale(eigenvalues, xp)
    # Only the Hermitian part is a gradient; taking it of the small inner
    # matrix is cheaper than of the result and equal to it.
    inner = _coefficient_product(
        eigenvalues / scale, vt_grad_eigenvectors, method, num_iters, symmetrize=True, xp=xp
    )
    # V (inner + diag(ḡλ)) Vᴴ as (V inner + V diag(ḡλ)) Vᴴ: scaling the columns
    # of V needs no identity matrix built and multiplied.
    left = v @ inner
    if grad_eigenvalues is not None:
        left = left + v * (grad_eigenvalues * scale)[..., None, :]
    return poison((left @ adjoint(v, xp)) / scale[..., None], poisoned, xp)


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
    canonical: bool = False,
    xp: Namespace | None = None,
) -> tuple[Array, Array]:
    """Forward-mode derivative of :func:`eig` (Jacobian-vector product).

    The exact transpose of :func:`eig_vjp` with the same ``method``,
    ``num_iters`` and ``canonical``: ``Re<eig_vjp(ḡλ, ḡV), t> == <ḡλ, dλ> +
    Re<ḡV, dV>`` (for complex input, with a cotangent that does not depend
    on the phase, or with ``canonical=True``).

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        As returned by :func:`eig` (descending eigenvalues).
    tangent_a : array, shape (..., n, n), or None
        Perturbation of ``a``, of the eigenvectors' dtype; only its
        symmetric (Hermitian) part matters, as in :func:`eig`.
        ``None`` means zero (zero tangents out), as ``None`` cotangents do
        in :func:`eig_vjp`.
    method : {"pi", "taylor", "analytic"}, default "pi"
        See :func:`eig_vjp`.
    num_iters : int, default 19
        See :func:`eig_vjp`.
    canonical : bool, default False
        Differentiate the canonical eigenvectors of ``eig(a, canonical=True)``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    tangent_eigenvalues : array, shape (..., n)
        ``dλ_j = v_jᴴ da v_j`` (real).
    tangent_eigenvectors : array, shape (..., n, n)
        ``dV = V (Aᵀ ∘ Vᴴ da V)`` with the coefficient matrix of ``method``.
        For complex input this is the choice ``v_jᴴ dv_j = 0`` of the
        phase's derivative; with ``canonical=True``, the rotation
        ``dv_j += i θ_j v_j`` that keeps ``V[i*, j]`` real.

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
    check_canonical(canonical)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    v = eigenvectors
    if tangent_a is None:
        return xp.zeros_like(eigenvalues), xp.zeros_like(v)
    check_like(tangent_a, "tangent_a", v.shape, v.dtype, xp, like=v)
    projected = project_symmetric(v, tangent_a, xp)
    tangent_eigenvalues = real_diagonal(projected, xp)
    if v.shape[-1] == 0:
        return tangent_eigenvalues, xp.zeros_like(v)
    # In units of m, as in vjp_from_projected: A(λ) = A(λ / m) / m.
    scale = coefficient_scale(eigenvalues, xp)
    product = _coefficient_product(
        eigenvalues / scale, projected, method, num_iters, symmetrize=False, xp=xp
    )
    tangent_eigenvectors = (v @ product) / scale[..., None]
    if canonical and is_complex(v, xp):
        rotation = canonical_rotation(v, tangent_eigenvectors, xp)
        tangent_eigenvectors = tangent_eigenvectors + v * rotation[..., None, :]
    return tangent_eigenvalues, tangent_eigenvectors


def project_symmetric(eigenvectors: Array, x: Array, xp: Namespace) -> Array:
    """``Vᴴ herm(X) V``: only the Hermitian part of a (co)tangent of a Hermitian matrix matters.

    ``Vᵀ sym(X) V`` for real input.
    """
    sym = (x + adjoint(x, xp)) * 0.5
    return adjoint(eigenvectors, xp) @ sym @ eigenvectors


def _coefficient_product(
    eigenvalues: Array, b: Array, method: str, num_iters: int, *, symmetrize: bool, xp: Namespace
) -> Array:
    """``Aᵀ ∘ b``, or its Hermitian part ``(P + Pᴴ) / 2`` if ``symmetrize``, natively if possible.

    ``A`` is real. For complex ``b`` it multiplies the real and imaginary
    parts apart (:func:`_complex_product`), so the native step only ever
    sees real arrays.
    """
    if eigenvalues.shape[-1] == 0:  # n = 0: nothing to compute (and no max over λ)
        return xp.zeros_like(b)
    if is_complex(b, xp):
        return _complex_product(eigenvalues, b, method, num_iters, symmetrize=symmetrize, xp=xp)
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


def _complex_product(eigenvalues, b, method, num_iters, *, symmetrize, xp):
    """:func:`_coefficient_product` of complex ``b``: real coefficients on each part.

    ``herm(Aᵀ ∘ b) = sym(Aᵀ ∘ Re b) + i · antisym(Aᵀ ∘ Im b)``. The
    antisymmetric part is ``S ∘ sym(Aᵀ ∘ (S ∘ Im b))`` with ``S = L − U``
    (+1 below the diagonal, −1 above): with ``A = (N + U ∘ E) / big``
    (:func:`svdpi._coefficients.coefficient_parts`) both sides are
    ``(−N ∘ (c + cᵀ)/2 + E ∘ c/2) / big`` below the diagonal, for
    ``c = Im b``. So the imaginary part, too, comes from the exact
    symmetrised product, which keeps the ``r^T`` term of ``"pi"`` at equal
    eigenvalues for any ``num_iters``, where ``P − Pᵀ`` would cancel it away.
    """
    real, imag = xp.real(b), xp.imag(b)
    if not symmetrize:
        return from_parts(
            _coefficient_product(eigenvalues, real, method, num_iters, symmetrize=False, xp=xp),
            _coefficient_product(eigenvalues, imag, method, num_iters, symmetrize=False, xp=xp),
            xp,
        )
    upper, lower = triangles(b.shape[-1], real.dtype, array_device(b), xp)
    sign = lower - upper
    imaginary = sign * _coefficient_product(
        eigenvalues, sign * imag, method, num_iters, symmetrize=True, xp=xp
    )
    real = _coefficient_product(eigenvalues, real, method, num_iters, symmetrize=True, xp=xp)
    return from_parts(real, imaginary, xp)
