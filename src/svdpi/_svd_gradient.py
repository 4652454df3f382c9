r"""Backward (VJP) and forward (JVP) derivatives of :func:`svdpi.svd`.

For ``a = U diag(σ) Vᴴ`` (reduced, ``k = min(m, n)``) and a perturbation
``da``, write ``dP = Uᴴ da V`` (k × k) and split it into its Hermitian and
skew-Hermitian parts ``S = (dP + dPᴴ)/2``, ``K = (dP − dPᴴ)/2``. The
classical derivative is::

    dσ    = Re diag(dP)
    Uᴴ dU = Ω_U = M ∘ S + P ∘ K,        M_ij = 1/(σ_j − σ_i)  (i ≠ j), 0
    Vᴴ dV = Ω_V = M ∘ S − P ∘ K,        P_ij = 1/(σ_i + σ_j)
    dU   += (I − UUᴴ) da V Σ⁻¹          (m > k)
    dV   += (I − VVᴴ) daᴴ U Σ⁻¹         (n > k)

Only ``M`` is unbounded for equal nonzero singular values. ``"pi"`` and
``"taylor"`` write ``M_ij = (σ_i + σ_j) / (σ_j² − σ_i²)`` and replace the
second factor by the power-iteration / Taylor coefficient of the Gram
matrix's eigenvalues ``σ²`` (:mod:`svdpi._coefficients`, used as it is);
``P`` and ``Σ⁻¹`` stay exact, evaluated at singular values raised to
:func:`singular_value_floor`, so every term is bounded. The theory page
(``docs/theory_svd.rst``) derives this and says what it is the gradient of.
"""

from __future__ import annotations

from array_api_compat import array_namespace, is_lazy_array

from ._compat import array_device
from ._complex import (
    adjoint,
    canonical_cotangent,
    canonical_rotation,
    column_norms,
    is_complex,
    phase_action,
    phase_violations,
    poison,
)
from ._complex import phase_term as _diagonal_phase
from ._gradient import _coefficient_product, coefficient_scale
from ._svd import check_cotangent, check_factors
from ._typing import Array, Namespace
from ._validation import check_method, check_num_iters


def check_svd_method(method: object) -> str:
    """One of "pi", "taylor", "analytic"; "exact" gets a pointer to the singular-value maps."""
    if method == "exact":
        raise ValueError(
            "method='exact' (the Daleckii–Krein derivative) is defined for functions of "
            "the singular values (singular_value_map_vjp, polar_vjp); the exact derivative "
            "of the singular vectors themselves is method='analytic'"
        )
    return check_method(method)


def singular_value_floor(s: Array, shape: tuple[int, int], xp: Namespace) -> Array:
    """Smallest singular value the derivative coefficients divide by, shape (..., 1).

    ``max(m, n) · eps · σ_max``: a backward-stable SVD resolves singular
    values only to about that, so smaller ones are zero for all the input can
    tell. The floor is scale-free for every matrix whose ``σ_max`` is a normal
    number, however small (svdpi 0.3.0's SVD took ``max`` with
    ``smallest_normal / eps``, which raised every singular value of a
    well-conditioned matrix at scale 1e-300 to that constant). A numerically
    zero matrix (``σ_max`` below the smallest normal number) gets
    ``smallest_normal / eps``, which keeps the coefficients (at most
    ``1 / floor``) far from overflow.
    """
    finfo = xp.finfo(s.dtype)
    top = s[..., :1]
    # full_like, not asarray: a tensor made from a Python number on a GPU is a
    # blocking host-to-device copy (a synchronisation in every backward pass).
    least = xp.full_like(top, finfo.smallest_normal / finfo.eps)
    zero = top < finfo.smallest_normal
    return xp.where(zero, least, top * (max(shape) * finfo.eps))


class _Coefficients:
    """``M ∘ X`` and ``P``, ``1/σ`` of the module docstring for one method, batched.

    Every coefficient is homogeneous of degree −1 in ``σ``; all of them are
    computed on ``σ / c`` with the unit ``c`` of :func:`svdpi.eig_vjp`
    (:func:`svdpi._gradient.coefficient_scale`: ``min(σ_max, 1)``, 1 for a
    numerically zero matrix), and the callers divide their finished result
    by ``c`` (:meth:`rescale`). In those units the floor is the relative
    ``max(m, n) · eps`` for every matrix of normal numbers, nothing
    overflows before the last division, and a result whose true value
    overflows becomes ``±inf`` there, never NaN.
    ``"analytic"``: the classical values of ``σ / c``.
    ``"pi"`` / ``"taylor"``: singular values raised to the floor, scaled by the
    largest one (so that ``σ²`` neither overflows nor underflows), and ``M``
    through the eigenvalue coefficient product of ``σ²``.
    """

    def __init__(self, s: Array, shape: tuple[int, int], method: str, num_iters: int, xp):
        self.method, self.num_iters, self.xp = method, num_iters, xp
        self.unit = coefficient_scale(s, xp)
        s = s / self.unit
        if method != "analytic":
            s = xp.maximum(s, singular_value_floor(s, shape, xp))
        self.inverse = 1.0 / s
        s_i, s_j = s[..., :, None], s[..., None, :]
        self.plus = 1.0 / (s_i + s_j)
        if method == "analytic":
            difference = s_j - s_i
            k = s.shape[-1]
            eye = xp.eye(k, dtype=s.dtype, device=array_device(s))
            # 1/(σ_j − σ_i) off the diagonal; the diagonal's 1 keeps 0/0 out.
            self.minus = (1.0 - eye) / (difference + eye)
            return
        scale = s[..., :1]
        unit = s / scale  # in (0, 1], descending
        self.gram = unit * unit  # eigenvalues of the scaled Gram matrix
        # M = Aᵀ ∘ W with W_ij = (σ_i + σ_j) and A the coefficients of σ²; in the
        # scaled units W = scale · (u_i + u_j), A = A(u²) / scale².
        self.weight = (unit[..., :, None] + unit[..., None, :]) / scale[..., None]

    def rescale(self, x: Array) -> Array:
        """A matrix result computed in units, divided by the unit ``c``: its true value."""
        return x / self.unit[..., None]

    def _product(self, x: Array, symmetrize: bool) -> Array:
        return _coefficient_product(
            self.gram,
            self.weight * x,
            self.method,
            self.num_iters,
            symmetrize=symmetrize,
            xp=self.xp,
        )

    def minus_times(self, x: Array) -> Array:
        """``M ∘ x`` for real or complex ``x`` (real coefficients, parts apart)."""
        if self.method == "analytic":
            return self.minus * x
        return self._product(x, symmetrize=False)

    def minus_times_hermitian(self, x: Array) -> Array:
        """``herm(M ∘ x)``: the adjoint of ``S ↦ M ∘ S`` restricted to Hermitian ``S``.

        For ``"pi"`` / ``"taylor"`` the exact (anti)symmetrised products of
        :func:`svdpi._gradient._coefficient_product` (any ``num_iters``).
        """
        if self.method == "analytic":
            y = self.minus * x
            return (y + adjoint(y, self.xp)) * 0.5
        return self._product(x, symmetrize=True)


def _diag_embed(d: Array, xp: Namespace) -> Array:
    k = d.shape[-1]
    return d[..., :, None] * xp.eye(k, dtype=d.dtype, device=array_device(d))


def _phase_scale(grad_u, grad_vh, xp):
    """Per singular pair, ``‖ḡu_j‖ + ‖ḡv_j‖``: the size of round-off in the phase term."""
    total = 0.0
    if grad_u is not None:
        total = total + column_norms(grad_u, xp)
    if grad_vh is not None:
        total = total + column_norms(xp.matrix_transpose(grad_vh), xp)
    return total


def phase_term(x_u: Array | None, x_v: Array | None, xp: Namespace) -> Array:
    """``Im diag(Uᴴ ḡU + Vᴴ ḡV)``: the derivative along ``(u_j, v_j) → e^{iφ} (u_j, v_j)``."""
    term = 0.0
    if x_u is not None:
        term = term + _diagonal_phase(x_u, xp)
    if x_v is not None:
        term = term + _diagonal_phase(x_v, xp)
    return term


_PHASE_MESSAGE = (
    "the cotangents grad_u / grad_vh depend on the arbitrary phase of the complex "
    "singular vectors (Im diag(Uᴴ grad_u + Vh grad_vhᴴ) is not zero), so the loss is not "
    "a function of the matrix and has no gradient. Use a loss that is invariant under "
    "(u_j, v_j) -> e^(iφ) (u_j, v_j) (e.g. of U diag(S) Vh, |U|, U Uᴴ), or fix the phase "
    "with canonical=True"
)


def vjp(
    u: Array,
    s: Array,
    vh: Array,
    grad_u: Array | None,
    grad_s: Array | None,
    grad_vh: Array | None,
    *,
    method: str,
    num_iters: int,
    canonical: bool,
    phase: str,
    xp: Namespace,
) -> Array:
    """:func:`svd_vjp` after the argument checks; ``phase`` in ``svdpi._complex.PHASE_ACTIONS``.

    ``phase`` says what to do, for complex input, when the cotangents depend
    on the singular vectors' phase: ``"raise"`` (reads one boolean on the
    host), ``"nan"`` (that matrix's gradient becomes NaN; no host read) or
    ``"off"`` (the phase-dependent part is dropped: the exact transpose of
    :func:`svd_jvp`).
    """
    m, n = u.shape[-2], vh.shape[-1]
    k = s.shape[-1]
    batch = tuple(u.shape[:-2])
    if k == 0 or (grad_u is None and grad_s is None and grad_vh is None):
        return xp.zeros((*batch, m, n), dtype=u.dtype, device=array_device(u))
    complex_input = is_complex(u, xp)
    u_h = adjoint(u, xp)
    x_u = None if grad_u is None else u_h @ grad_u
    # Vᴴ ḡV with ḡV = ḡVhᴴ, as Vh ḡVhᴴ.
    x_v = None if grad_vh is None else vh @ adjoint(grad_vh, xp)
    poisoned = None
    if complex_input and (x_u is not None or x_v is not None):
        gamma = phase_term(x_u, x_v, xp)
        if canonical:
            # The canonical factors depend on a through their phase too: that
            # derivative is a cotangent −i·γ_j/|U[i*, j]| at the pivot entry of
            # ḡU (see docs/theory_complex.rst), which makes the phase term vanish.
            correction = canonical_cotangent(u, gamma, xp)
            grad_u = correction if grad_u is None else grad_u + correction
            x_u = u_h @ grad_u
        else:
            bad = phase_violations(gamma, _phase_scale(grad_u, grad_vh, xp), xp)
            poisoned = phase_action(bad, phase, _PHASE_MESSAGE, xp)
    coefficients = _Coefficients(s, (m, n), method, num_iters, xp)
    inner = None
    if x_u is not None or x_v is not None:
        total = x_u if x_v is None else (x_v if x_u is None else x_u + x_v)
        inner = coefficients.minus_times_hermitian(total)
        difference = x_u if x_v is None else (-x_v if x_u is None else x_u - x_v)
        skew = (difference - adjoint(difference, xp)) * 0.5
        inner = inner + coefficients.plus * skew
    if grad_s is not None:
        # In the coefficients' units, as the rest of inner: ḡσ · c.
        diagonal = _diag_embed(grad_s * coefficients.unit, xp)
        if complex_input:
            diagonal = xp.astype(diagonal, u.dtype)
        inner = diagonal if inner is None else inner + diagonal
    inverse = coefficients.inverse
    if m > k and grad_u is not None:
        # U inner Vᴴ + (ḡU − U Uᴴ ḡU) Σ⁻¹ Vᴴ
        left = u @ (inner - x_u * inverse[..., None, :]) + grad_u * inverse[..., None, :]
        result = left @ vh
    elif n > k and grad_vh is not None:
        # U inner Vᴴ + U Σ⁻¹ ḡVh (I − V Vᴴ), with ḡVh V = X_Vᴴ
        right = (inner - inverse[..., :, None] * adjoint(x_v, xp)) @ vh
        result = u @ (right + inverse[..., :, None] * grad_vh)
    elif m >= n:
        result = u @ (inner @ vh)
    else:
        result = (u @ inner) @ vh
    return poison(coefficients.rescale(result), poisoned, xp)


def jvp(
    u: Array,
    s: Array,
    vh: Array,
    tangent_a: Array,
    *,
    method: str,
    num_iters: int,
    canonical: bool,
    xp: Namespace,
) -> tuple[Array, Array, Array]:
    """:func:`svd_jvp` after the argument checks."""
    m, n = u.shape[-2], vh.shape[-1]
    k = s.shape[-1]
    if k == 0:
        return xp.zeros_like(u), xp.zeros_like(s), xp.zeros_like(vh)
    complex_input = is_complex(u, xp)
    u_h, v = adjoint(u, xp), adjoint(vh, xp)
    if m > k:
        da_v = tangent_a @ v
        dp = u_h @ da_v
    else:
        uh_da = u_h @ tangent_a
        dp = uh_da @ v
    dp_h = adjoint(dp, xp)
    herm = (dp + dp_h) * 0.5
    skew = (dp - dp_h) * 0.5
    coefficients = _Coefficients(s, (m, n), method, num_iters, xp)
    tangent_s = xp.linalg.diagonal(herm)
    if complex_input:
        tangent_s = xp.real(tangent_s)
    omega_s = coefficients.minus_times(herm)
    omega_k = coefficients.plus * skew
    omega_u = omega_s + omega_k
    omega_v = omega_s - omega_k
    inverse = coefficients.inverse
    tangent_u = u @ omega_u
    if m > k:
        tangent_u = tangent_u + (da_v - u @ dp) * inverse[..., None, :]
    # dVh = (V Ω_V)ᴴ (+ Σ⁻¹ Uᴴ da (I − V Vᴴ) when n > k)
    tangent_vh = adjoint(omega_v, xp) @ vh
    if n > k:
        tangent_vh = tangent_vh + (uh_da - dp @ vh) * inverse[..., :, None]
    # Computed in the coefficients' units (degree −1 in σ): back to true values.
    tangent_u = coefficients.rescale(tangent_u)
    tangent_vh = coefficients.rescale(tangent_vh)
    if canonical and complex_input:
        # Keep U[i*, j] real: add the phase rotation i·θ_j to (u_j, v_j).
        rotation = canonical_rotation(u, tangent_u, xp)
        tangent_u = tangent_u + u * rotation[..., None, :]
        tangent_vh = tangent_vh - vh * rotation[..., :, None]
    return tangent_u, tangent_s, tangent_vh


def _checked(u, s, vh, method, num_iters, canonical, xp):
    method = check_svd_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    check_factors(u, s, vh, xp)
    return method, num_iters


def svd_vjp(
    u: Array,
    s: Array,
    vh: Array,
    grad_u: Array | None,
    grad_s: Array | None,
    grad_vh: Array | None,
    /,
    *,
    method: str = "pi",
    num_iters: int = 19,
    canonical: bool = False,
    xp: Namespace | None = None,
) -> Array:
    r"""Gradient with respect to ``a`` of a loss of ``svd(a)`` (vector-Jacobian product).

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it: ``(..., m, k)``,
        ``(..., k)`` (real, descending), ``(..., k, n)``.
    grad_u, grad_s, grad_vh : array or None
        Cotangents of ``u``, ``s`` and ``vh`` (shapes and dtypes of those);
        ``None`` means zero. For complex input they follow PyTorch's
        convention: ``dL = Re Σ conj(ḡ) · dx`` (the ``.grad`` PyTorch would
        pass).
    method : {"pi", "taylor", "analytic"}, default "pi"
        ``"analytic"``: the classical derivative, equal to
        ``torch.linalg.svd``'s backward (infinite for equal or, with
        ``m ≠ n`` or complex input, zero singular values). ``"pi"``: the
        coefficients ``1/(σ_j² − σ_i²)`` of pairs of singular values become
        the power-iteration coefficients of the Gram matrix's eigenvalues
        ``σ²`` (:func:`eig_vjp`'s); ``"taylor"`` their Taylor series. Both
        are finite for repeated and zero singular values (see Notes).
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    canonical : bool, default False
        Differentiate the canonical factors of ``svd(a, canonical=True)``
        (pass the factors it returned): the phase they fix depends on ``a``,
        so every loss of them has a gradient.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        The gradient with respect to ``a`` (PyTorch's convention for complex ``a``).

    Raises
    ------
    ValueError
        For complex input (without ``canonical``) when the cotangents depend
        on the singular vectors' arbitrary phase, as PyTorch does: such a loss
        is not a function of ``a``. This reads one boolean on the host; for
        lazy arrays (JAX, Dask), which are not read, that matrix's gradient
        is NaN instead.

    Notes
    -----
    With ``X_U = Uᴴ ḡU``, ``X_V = Vᴴ ḡV``, ``ḡV = ḡVhᴴ`` the gradient is::

        U [herm(M ∘ (X_U + X_V)) + P ∘ skew(X_U − X_V) + diag(ḡσ)] Vᴴ
          + (I − UUᴴ) ḡU Σ⁻¹ Vᴴ + U Σ⁻¹ ḡVh (I − VVᴴ)

    with ``P_ij = 1/(σ_i + σ_j)`` and ``M_ij = 1/(σ_j − σ_i)`` for
    ``"analytic"``; for ``"pi"`` / ``"taylor"`` ``M_ij = (σ_i + σ_j)·A_ji``
    with ``A`` the coefficients of :func:`eig_vjp` for the eigenvalues
    ``σ²``. Those methods raise singular values below
    ``max(m, n) · eps · σ_max`` to that floor in ``P``, ``Σ⁻¹`` and ``M``
    (and ``A`` floors ``σ²`` as :func:`eig_vjp` does), so that the gradient
    is finite for every finite input. That floor is scale-free: a numerically
    zero matrix (``σ_max`` below the smallest normal number) is raised to
    ``smallest_normal / eps`` instead. Every method computes its coefficients
    on ``σ / c`` with ``c = min(σ_max, 1)`` and divides the finished
    gradient by ``c``, as :func:`eig_vjp` does, so it is right at every
    scale, finite wherever its true value is representable and ``±inf``
    where it overflows. (The ``ḡσ`` term is carried in those units as
    ``ḡσ · c``: within a few orders of magnitude of the smallest normal
    number, on platforms that flush subnormal numbers to zero, such as
    XLA's, it loses relative accuracy.) No value is read on the host for
    real input.

    Examples
    --------
    Two equal singular values: the classical gradient is infinite, this one
    is finite.

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> u, s, vh = svdpi.svd(a)
    >>> g_u = np.zeros_like(u)
    >>> g_u[0, 1] = 1.0  # d loss / d U[0, 1]
    >>> g_a = svdpi.svd_vjp(u, s, vh, g_u, None, None)
    >>> g_a.shape, bool(np.isfinite(g_a).all())
    ((3, 2), True)
    """
    if xp is None:
        xp = array_namespace(u, s, vh, grad_u, grad_s, grad_vh)
    method, num_iters = _checked(u, s, vh, method, num_iters, canonical, xp)
    check_cotangent(grad_u, "grad_u", u.shape, u.dtype)
    check_cotangent(grad_s, "grad_s", s.shape, s.dtype)
    check_cotangent(grad_vh, "grad_vh", vh.shape, vh.dtype)
    arrays = (u, grad_u, grad_vh)
    lazy = any(x is not None and is_lazy_array(x) for x in arrays)
    return vjp(
        u,
        s,
        vh,
        grad_u,
        grad_s,
        grad_vh,
        method=method,
        num_iters=num_iters,
        canonical=canonical,
        phase="nan" if lazy else "raise",
        xp=xp,
    )


def svd_jvp(
    u: Array,
    s: Array,
    vh: Array,
    tangent_a: Array,
    /,
    *,
    method: str = "pi",
    num_iters: int = 19,
    canonical: bool = False,
    xp: Namespace | None = None,
) -> tuple[Array, Array, Array]:
    """Forward-mode derivative of :func:`svd` (Jacobian-vector product).

    The exact transpose of :func:`svd_vjp` with the same options:
    ``Re<svd_vjp(ḡU, ḡS, ḡVh), t> == Re<ḡU, dU> + <ḡS, dS> + Re<ḡVh, dVh>``
    (for complex input, with cotangents that do not depend on the phase).

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    tangent_a : array, shape (..., m, n)
        Perturbation of ``a``, its dtype.
    method : {"pi", "taylor", "analytic"}, default "pi"
        See :func:`svd_vjp`.
    num_iters : int, default 19
        See :func:`svd_vjp`.
    canonical : bool, default False
        Differentiate the canonical factors of ``svd(a, canonical=True)``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    tangent_u : array, shape (..., m, k)
        The tangent of ``U``.
    tangent_s : array, shape (..., k)
        ``dσ_j = Re(u_jᴴ da v_j)``.
    tangent_vh : array, shape (..., k, n)
        The tangent of ``Vh``.

    Notes
    -----
    For complex input the phase of each singular pair is a choice: this
    derivative rotates ``u_j`` and ``v_j`` by opposite phases,
    ``Im(u_jᴴ du_j) = −Im(v_jᴴ dv_j) = Im(u_jᴴ da v_j) / (2σ_j)``
    (with ``canonical=True``: the rotation that keeps ``U[i*, j]`` real).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> u, s, vh = svdpi.svd(a)
    >>> du, ds, dvh = svdpi.svd_jvp(u, s, vh, a)  # a + t·a scales the singular values
    >>> ds
    array([3., 1.])
    >>> bool(np.allclose(du, 0.0)) and bool(np.allclose(dvh, 0.0))
    True
    """
    if xp is None:
        xp = array_namespace(u, s, vh, tangent_a)
    method, num_iters = _checked(u, s, vh, method, num_iters, canonical, xp)
    shape = (*u.shape[:-2], u.shape[-2], vh.shape[-1])
    if tangent_a is None:
        raise TypeError("tangent_a must be an array, got None")
    check_cotangent(tangent_a, "tangent_a", shape, u.dtype)
    return jvp(u, s, vh, tangent_a, method=method, num_iters=num_iters, canonical=canonical, xp=xp)
