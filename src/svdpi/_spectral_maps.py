"""Spectral maps ``F(A) = V diag(φ) Vᵀ`` of any spectral function, and their derivatives.

One implementation for every function of a symmetric matrix: the matrix
functions (:func:`svdpi.matrix_power`, :func:`svdpi.matrix_log`), the ZCA
whitening matrix and the PCA projector are calls of these with a
``SpectralFunction`` and a mask. With
``φ_j = mask_j · f(clamp(λ_j))`` (the clamp of the function's domain, see
:mod:`svdpi._spectrum`):

* ``method="exact"``: the Daleckii–Krein derivative of ``F`` as computed,
  ``V (G ∘ Vᵀ dA V) Vᵀ`` with ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)``,
  ``G_ii = φ'(λ_i)``, from the function's divided differences (plus the
  motion of the eigenvalue floor, see :func:`_floor_term`). ``G`` is
  symmetric: the VJP and the JVP are the same map.
* ``method="pi" | "taylor" | "analytic"``: the chain rule through the
  eigenvalues and eigenvectors with the eigenvector coefficients of
  :func:`svdpi.eig_vjp`: what the paper's layers differentiate.
* the second derivative (``"exact"`` only): :func:`spectral_map_hvp`.

Complex Hermitian input (complex eigenvectors, real eigenvalues) runs the
same code with ``Vᴴ`` for ``Vᵀ`` and Hermitian for symmetric parts: ``G``
and the coefficients are real, and act on the real and imaginary parts of
``Vᴴ X V`` apart (``docs/theory_complex.rst``).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import is_array_api_strict_namespace, is_numpy_namespace

from . import functions
from ._compat import array_device
from ._complex import adjoint, real_diagonal
from ._divided_differences import constant
from ._gradient import _coefficient_product, coefficient_scale, project_symmetric
from ._scaling import rescale
from ._spectrum import (
    Spectrum,
    coefficient_eigenvalues,
    derivative_degree,
    derivative_weights,
    homogeneity,
    large_form,
    nan_like,
    spectrum,
    values,
)
from ._typing import Array, Namespace
from ._validation import (
    MATRIX_FUNCTION_METHODS,
    check_eigenpairs,
    check_like,
    check_mask,
    check_method,
    check_num_iters,
    namespace_of,
)


def check_function(fn: Any, name: str = "fn") -> functions.SpectralFunction:
    """Require a ``SpectralFunction`` with a known domain."""
    if not isinstance(fn, functions.SpectralFunction):
        raise TypeError(
            f"{name} must be a svdpi.functions.SpectralFunction (e.g. svdpi.functions.Power(0.5) "
            f"or svdpi.functions.Custom(f, df)), got {type(fn).__name__}"
        )
    if fn.domain not in functions.DOMAINS:
        raise ValueError(
            f"{name}.domain must be one of {', '.join(map(repr, functions.DOMAINS))}, "
            f"got {fn.domain!r}"
        )
    return fn


def _check(eigenvalues, eigenvectors, fn, mask, xp):
    check_function(fn)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    if mask is not None:
        check_mask(mask, tuple(eigenvalues.shape), xp, like=eigenvectors)


def _pairs(x: Array) -> tuple[Array, Array]:
    return x[..., :, None], x[..., None, :]


def _apply(eigenvectors: Array, weights: Array, xp: Namespace) -> Array:
    """``V diag(weights) Vᴴ`` (real weights)."""
    return (eigenvectors * weights[..., None, :]) @ adjoint(eigenvectors, xp)


# ----------------------------------------------------------------- forward


def apply_function(
    eigenvalues: Array,
    eigenvectors: Array,
    fn: functions.SpectralFunction,
    mask: Array | None,
    xp: Namespace,
) -> Array:
    """``V diag(φ) Vᵀ`` (arguments already checked)."""
    if eigenvectors.shape[-1] == 0:
        # n = 0: an empty result, like eigh-based code (there is no max|λ|).
        return xp.zeros_like(eigenvectors)
    # Evaluated at the eigenvalues themselves, as eigh-based code does. A
    # power with |p| <= 1 or the logarithm cannot overflow there (at worst
    # smallest_normal^-1 on clamped eigenvalues, a normal number).
    phi = values(fn, spectrum(fn, eigenvalues, mask, xp, units=False), xp)
    large = large_form(fn, eigenvalues, mask, xp)
    if large is None:
        return _apply(eigenvectors, phi, xp)
    # A larger power or the exponential may overflow on some eigenvalues:
    # their terms are summed in the large form (units of max|λ|, or e^λ over
    # a power of two near e^max λ) and scaled back at the end (±inf where the
    # entry overflows, 0 where their eigenvectors vanish), the others
    # directly, so that no inf · 0 = NaN forms and small terms keep their
    # digits. Where nothing overflows the second product adds zeros.
    finite = xp.isfinite(phi)
    if _host_eager(xp) and bool(xp.all(finite)):
        # Host memory, eager: reading one flag costs nothing next to a second
        # product (NumPy Exp at 32 x 64 x 64: 0.87 -> 0.34 ms). Elsewhere
        # (GPU, JAX, compiled torch) a read would synchronise or break tracing.
        return _apply(eigenvectors, phi, xp)
    zero = xp.zeros_like(phi)
    direct = _apply(eigenvectors, xp.where(finite, phi, zero), xp)
    scaled = _apply(eigenvectors, xp.where(finite, zero, values(fn, large.spec, xp)), xp)
    return direct + large.value_back(scaled)


def _host_eager(xp: Namespace) -> bool:
    """Whether values of arrays of ``xp`` can be read for free (NumPy, array-api-strict)."""
    return is_numpy_namespace(xp) or is_array_api_strict_namespace(xp)


def spectral_map(
    eigenvalues: Array,
    eigenvectors: Array,
    fn: functions.SpectralFunction,
    /,
    *,
    mask: Array | None = None,
    xp: Namespace | None = None,
) -> Array:
    """A spectral function ``F(A) = V diag(f(λ)) Vᴴ`` of a symmetric or Hermitian matrix.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of ``A`` (a batch of them), as returned by :func:`eig`:
        real eigenvalues, real or complex (Hermitian ``A``) eigenvectors.
    fn : svdpi.functions.SpectralFunction
        The function applied to the eigenvalues: a built-in of
        ``svdpi.functions`` (``Power(0.5)``, ``Log()``, ...) or a user's
        (``Custom(f, df)`` or a subclass of ``SpectralFunction``).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use (e.g. from :func:`truncation_mask`); the others
        are left out of the sum. All are used when omitted.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``Σ_j mask_j · f(c_j) · v_j v_jᴴ`` (symmetric, or Hermitian with
        the eigenvectors' complex dtype), where ``c_j`` is ``λ_j`` after
        the clamp of ``fn.domain``.

    Notes
    -----
    The clamp of the function's domain:

    * ``"positive"`` (the logarithm, negative powers): eigenvalues below the
      floor ``max(n · eps · max|λ|, smallest normal)`` are raised to it.
      ``n · eps · max|λ|`` is what a backward-stable eigensolver can tell
      from zero, so the floor is scale-free for every spectrum of normal
      numbers; a numerically zero spectrum (every ``|λ|`` subnormal or 0)
      is raised to the smallest normal number, so ``F`` is constant near the
      zero matrix. A singular ``A`` gives a large but finite result where
      ``f(floor)`` is representable.
    * ``"nonnegative"`` (positive powers): negative eigenvalues (round-off
      of a PSD matrix) count as 0.
    * ``"real"``: every eigenvalue as it is.

    Values that overflow (a large power of a large eigenvalue, ``e^λ`` for
    ``λ`` above about 88 in float32, 709 in float64) give ``±inf`` entries
    where the true entry overflows, finite ones where it does not, and 0
    where it is 0, never NaN: their terms are summed in a scale where they
    are representable and scaled back. A user's function (``Custom``) that
    returns ``±inf`` has no known scale: its infinite terms meet the exact
    zeros of the eigenvectors, and those entries are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Log, Power
    >>> w, v = svdpi.eig(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> root = svdpi.spectral_map(w, v, Power(0.5))
    >>> bool(np.allclose(root @ root, [[2.0, 1.0], [1.0, 2.0]]))
    True
    >>> np.round(np.linalg.eigvalsh(svdpi.spectral_map(w, v, Log())), 6)  # log 1, log 3
    array([0.      , 1.098612])

    A complex Hermitian matrix:

    >>> h = np.array([[2.0, 1 + 1j], [1 - 1j, 3.0]])
    >>> root = svdpi.spectral_map(*svdpi.eig(h), Power(0.5))
    >>> bool(np.allclose(root @ root, h)), bool(np.allclose(root, root.conj().T))
    (True, True)
    """
    return forward(eigenvalues, eigenvectors, fn, mask, xp)


def forward(eigenvalues, eigenvectors, fn, mask, xp):
    """:func:`spectral_map` (the shared body of the public forwards)."""
    if xp is None:
        xp = namespace_of(eigenvectors, eigenvalues=eigenvalues, mask=mask)
    _check(eigenvalues, eigenvectors, fn, mask, xp)
    return apply_function(eigenvalues, eigenvectors, fn, mask, xp)


# ------------------------------------------------------- the exact kernel


def exact_kernel(fn: functions.SpectralFunction, spec: Spectrum, xp: Namespace) -> Array:
    """``G`` of the module docstring in units (shape ``(..., n, n)``), floor term excluded.

    Kept pairs: the function's divided differences of the clamped values,
    times ``(c_i − c_j) / (λ_i − λ_j)``: exactly 1 above the clamp, in
    ``[0, 1]`` across it, 0 below it (and for equal eigenvalues 1 above the
    clamp, 0 below), so that ``G`` is the divided difference of ``f ∘ clamp``.
    Between a kept and a dropped pair ``(φ_i − φ_j) / (λ_i − λ_j)`` with one
    ``φ`` zero (no cancellation): 0 if both ``φ`` are 0, NaN where the two
    eigenvalues are *equal* (the mask cuts through a repeated eigenvalue: the
    truncated function has no derivative there), however close they are
    otherwise. Between two dropped pairs 0.
    """
    lam_i, lam_j = _pairs(spec.lam)
    c_i, c_j = _pairs(spec.clamped)
    difference = lam_i - lam_j
    same = difference == 0
    gap = difference + xp.astype(same, difference.dtype)
    kernel = fn.divided_difference(c_i, c_j, xp=xp)
    if spec.live is not None:
        live_i, _ = _pairs(spec.live)
        across = xp.where(same, xp.astype(live_i, gap.dtype), (c_i - c_j) / gap)
        # Both below the clamp: f ∘ clamp is constant there, whatever f's own
        # slope at the clamp (infinite for √ at 0).
        kernel = xp.where(across == 0, xp.zeros_like(kernel), kernel) * across
    if spec.kept is None:
        return kernel
    phi_i, phi_j = _pairs(values(fn, spec, xp))
    kept_i, kept_j = _pairs(spec.kept)
    numerator = phi_i - phi_j
    zero = xp.zeros_like(numerator)
    cut = xp.where(numerator == 0, zero, xp.where(same, nan_like(numerator, xp), numerator / gap))
    return xp.where(kept_i & kept_j, kernel, xp.where(kept_i != kept_j, cut, zero))


def _floor_term(fn: functions.SpectralFunction, spec: Spectrum, xp: Namespace):
    """How the floor's own level moves ``φ``: ``dφ = weight · <slope, dλ>``, or ``None``.

    The ``"positive"`` floor is ``max(n · eps · max|λ|, smallest normal)``.
    While its first term is the larger, kept eigenpairs below it have
    ``φ_j = f(floor)`` and so ``dφ_j = f'(floor) · n · eps · sign(λ_k) dλ_k``
    for ``k`` the eigenvalue of largest magnitude. Returns ``(weight,
    slope)``, each of shape ``(..., n)``, in units.

    If that largest magnitude is shared by two eigenvalues (a repeated top
    eigenvalue, or ``±`` the same value), ``max|λ|`` is not differentiable,
    and neither is ``F`` where the floor acts on a kept eigenvalue: the slope
    is NaN there, so the derivative is NaN rather than a one-sided value.
    """
    if spec.floor_active is None:
        return None
    dtype = spec.lam.dtype
    n = spec.lam.shape[-1]
    eps = xp.finfo(dtype).eps
    magnitude = xp.abs(spec.lam)
    index = xp.arange(n, device=array_device(spec.lam))
    top = index == xp.argmax(magnitude, axis=-1, keepdims=True)
    below = ~spec.live if spec.kept is None else ~spec.live & spec.kept
    # sign(λ) as a where: array-api-compat's torch sign indexes with a boolean
    # mask, which torch.func.vmap cannot batch. Only the top eigenvalue's
    # slope is used, and only while the floor is active, so λ != 0 there.
    unit = xp.full_like(spec.lam, n * eps)
    zero = xp.zeros_like(unit)
    slope = xp.where(spec.lam < 0, zero - unit, unit)
    # Where the top magnitude is shared, max|λ| has no derivative: NaN.
    ties = xp.sum(xp.astype(magnitude == spec.largest, dtype), axis=-1, keepdims=True)
    slope = xp.where(ties > 1, nan_like(slope, xp), slope)
    slope = xp.where(top & spec.floor_active & xp.any(below, axis=-1, keepdims=True), slope, zero)
    weight = xp.where(below, fn.derivative(spec.clamped, xp=xp), zero)
    return weight, slope


def _exact_map(fn, spec, eigenvectors, x, transpose, xp):
    """``V (G ∘ Vᵀ sym(X) V + diag(floor part)) Vᵀ`` in units (``transpose``: the VJP).

    ``G`` is symmetric, so the Daleckii–Krein part is its own transpose; the
    rank-one floor part is transposed explicitly.
    """
    kernel = exact_kernel(fn, spec, xp)
    projected = project_symmetric(eigenvectors, x, xp)
    left = eigenvectors @ (kernel * projected)
    floor = _floor_term(fn, spec, xp)
    if floor is not None:
        weight, slope = floor
        if transpose:
            weight, slope = slope, weight
        diagonal = real_diagonal(projected, xp)
        amount = xp.sum(slope * diagonal, axis=-1, keepdims=True)
        left = left + eigenvectors * (weight * amount)[..., None, :]
    return left @ adjoint(eigenvectors, xp)


# ------------------------------------------------- the chain-rule methods


def _coefficients_in_units(spec, method, xp):
    """Eigenvalues for the coefficient product and the unit ``m`` it works in (or None)."""
    coefficients = coefficient_eigenvalues(spec, method, xp)
    if spec.exponent is not None:
        return coefficients, None  # already in units of the spectrum's scale
    # Not homogeneous: the values are those of the true eigenvalues; the
    # coefficients are computed in units of m as svdpi.eig_vjp does.
    scale = coefficient_scale(coefficients, xp)
    return coefficients / scale, scale


def _chain_rule_vjp(fn, spec, eigenvectors, grad, method, num_iters, xp):
    """``V herm(diag(ḡλ) + Aᵀ ∘ Vᴴ ḡV) Vᴴ`` for ``F = V Φ Vᴴ``, in units."""
    v = eigenvectors
    projected = project_symmetric(v, grad, xp)
    # F = V Φ Vᴴ: Re<Ḡ, dF> = Re<2 Ḡ V Φ, dV> + <Re diag(Vᴴ Ḡ V), dφ> for Hermitian
    # Ḡ. Vᴴ(2 Ḡ V Φ) has a real diagonal: F does not depend on the phase.
    vt_grad_vectors = 2.0 * projected * values(fn, spec, xp)[..., None, :]
    grad_values = real_diagonal(projected, xp) * derivative_weights(fn, spec, xp)
    coefficients, scale = _coefficients_in_units(spec, method, xp)
    inner = _coefficient_product(
        coefficients, vt_grad_vectors, method, num_iters, symmetrize=True, xp=xp
    )
    if scale is not None:
        grad_values = grad_values * scale
    left = v @ inner + v * grad_values[..., None, :]
    result = left @ adjoint(v, xp)
    return result if scale is None else result / scale[..., None]


def _chain_rule_jvp(fn, spec, eigenvectors, tangent, method, num_iters, xp):
    """``V (P Φ + Φ Pᴴ + diag(dφ)) Vᴴ`` with ``P = Aᵀ ∘ E``, in units."""
    v = eigenvectors
    projected = project_symmetric(v, tangent, xp)
    coefficients, scale = _coefficients_in_units(spec, method, xp)
    product = _coefficient_product(
        coefficients, projected, method, num_iters, symmetrize=False, xp=xp
    )
    half = product * values(fn, spec, xp)[..., None, :]
    dphi = real_diagonal(projected, xp) * derivative_weights(fn, spec, xp)
    if scale is not None:
        dphi = dphi * scale
    left = v @ (half + adjoint(half, xp)) + v * dphi[..., None, :]
    result = left @ adjoint(v, xp)
    return result if scale is None else result / scale[..., None]


def first_derivative(fn, eigenvalues, eigenvectors, x, mask, method, num_iters, transpose, xp):
    """The VJP (``transpose``) or JVP of the spectral map (arguments already checked)."""
    if eigenvectors.shape[-1] == 0:  # n = 0
        return xp.zeros_like(eigenvectors)
    spec = spectrum(fn, eigenvalues, mask, xp)
    if method == "exact" and _kernel_may_overflow(fn):
        return _exact_split(fn, eigenvalues, eigenvectors, x, mask, xp)
    result = _first_in_units(fn, spec, eigenvectors, x, method, num_iters, transpose, xp)
    if spec.exponent is None:
        return result
    # Derivatives of degree <= 0 (λ^p with p <= 1, log) are bounded below in
    # units (by f' near max|λ|, a number near 1) and above by their value at
    # the floor: computed in units, rescaled once, they overflow only where
    # the true result does. (For p > 1 the chain-rule methods are computed in
    # units too; terms of eigenvalues below eps · max|λ| may underflow there.)
    return rescale(result, spec.exponent[..., None], derivative_degree(spec), xp)


def _kernel_may_overflow(fn: functions.SpectralFunction) -> bool:
    """Whether ``fn``'s divided differences may overflow at finite eigenvalues.

    ``λ^p`` for ``p > 1`` and ``e^λ``; for ``p <= 1`` and the logarithm
    they are computed in units (see :func:`first_derivative`).
    """
    if isinstance(fn, functions.Power):
        return fn.p > 1
    return isinstance(fn, functions.Exp)


def _exact_split(fn, eigenvalues, eigenvectors, x, mask, xp):
    """The exact map of ``λ^p`` (``p > 1``) or ``e^λ``: large kernel entries summed apart.

    The divided differences of a large eigenvalue may overflow while those of
    small ones are representable; in the large form (:func:`large_form`:
    units of ``max|λ|``, or ``e^λ`` over a power of two) the first are right
    and the second may underflow. Entries up to ``√max`` of the dtype at the
    true eigenvalues are used as they are (times a cotangent below ``√max``
    they cannot overflow); the others are summed in the large form and
    scaled back at the end, so that no ``inf · 0 = NaN`` forms: the result
    is ``±inf`` where the true derivative overflows, finite where it does
    not. (No floor term: the domains are ``"nonnegative"`` and ``"real"``.)
    """
    projected = project_symmetric(eigenvectors, x, xp)
    direct = exact_kernel(fn, spectrum(fn, eigenvalues, mask, xp, units=False), xp)
    bound = constant(math.sqrt(float(xp.finfo(direct.dtype).max)), direct, xp)
    moderate = xp.abs(direct) <= bound  # NaN (a cut through a tie) goes to the large part
    zero = xp.zeros_like(direct)
    small = _sandwich(eigenvectors, xp.where(moderate, direct, zero) * projected, xp)
    large = large_form(fn, eigenvalues, mask, xp)
    scaled = xp.where(moderate, zero, exact_kernel(fn, large.spec, xp)) * projected
    return small + large.first_back(_sandwich(eigenvectors, scaled, xp))


def _sandwich(eigenvectors: Array, inner: Array, xp: Namespace) -> Array:
    """``V inner Vᴴ``."""
    return eigenvectors @ inner @ adjoint(eigenvectors, xp)


def _first_in_units(fn, spec, eigenvectors, x, method, num_iters, transpose, xp):
    if method == "exact":
        return _exact_map(fn, spec, eigenvectors, x, transpose, xp)
    if transpose:
        return _chain_rule_vjp(fn, spec, eigenvectors, x, method, num_iters, xp)
    return _chain_rule_jvp(fn, spec, eigenvectors, x, method, num_iters, xp)


def derivative(eigenvalues, eigenvectors, fn, x, name, mask, method, num_iters, transpose, xp):
    """The VJP (``transpose``) or JVP of :func:`spectral_map`, checks included.

    The shared body of the public derivatives; ``name`` is the cotangent's
    or tangent's argument name for errors. ``x=None`` means zero.
    """
    if xp is None:
        xp = namespace_of(eigenvectors, eigenvalues=eigenvalues, mask=mask, **{name: x})
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    num_iters = check_num_iters(num_iters)
    _check(eigenvalues, eigenvectors, fn, mask, xp)
    if x is None:
        return xp.zeros_like(eigenvectors)
    check_like(x, name, eigenvectors.shape, eigenvectors.dtype, xp, like=eigenvectors)
    return first_derivative(
        fn, eigenvalues, eigenvectors, x, mask, method, num_iters, transpose, xp
    )


def spectral_map_vjp(
    eigenvalues: Array,
    eigenvectors: Array,
    fn: functions.SpectralFunction,
    grad: Array | None,
    /,
    *,
    mask: Array | None = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Namespace | None = None,
) -> Array:
    """Gradient with respect to ``A`` of a loss of :func:`spectral_map` (vector-Jacobian product).

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    fn : svdpi.functions.SpectralFunction
        The function the forward applied.
    grad : array, shape (..., n, n), or None
        Cotangent of ``F(A)``, of the eigenvectors' dtype; ``None`` means
        zero. For complex input it follows PyTorch's convention (for
        ``L = Re Σ F(A) ∘ G`` pass ``conj(G)``).
    mask : array of bool, shape (..., n), optional
        The mask the forward used (held constant: no gradient flows through
        the choice of the kept pairs).
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        ``"exact"``: the Daleckii–Krein derivative of ``F`` as computed
        (clamp and mask included): the true derivative, finite and
        independent of the eigenbasis at repeated eigenvalues.
        ``"pi"``, ``"taylor"``, ``"analytic"``: the chain rule through the
        eigenvalues and eigenvectors, with the eigenvector gradient of
        :func:`eig_vjp` (the paper's route for ``"pi"``; it depends on the
        basis chosen inside a repeated eigenspace, and ``"analytic"`` is
        infinite there).
    num_iters : int, default 19
        See :func:`eig_vjp`; ignored by ``"analytic"`` and ``"exact"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian, for complex input) gradient with respect to ``A``.

    Notes
    -----
    ``"exact"`` returns ``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` (``Vᴴ herm(Ḡ) V`` for
    complex input) with
    ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)`` and ``G_ii = φ'(λ_i)`` for
    ``φ_j = mask_j · f(c_j)`` (``c`` the clamped eigenvalues of
    :func:`spectral_map`), the divided differences evaluated by
    ``fn.divided_difference`` without cancellation. Below the clamp ``φ``
    has no slope of its own. The ``"positive"`` floor's level
    ``n · eps · max|λ|`` moves with the eigenvalue of largest magnitude, and
    ``"exact"`` includes that term, so that it matches finite differences of
    the forward where the floor acts; where that largest magnitude is shared
    by two eigenvalues it is not differentiable and the result is NaN. The
    chain-rule methods hold the floor constant, as the paper's clamp does.
    Between a kept and a dropped eigenpair ``G_ij`` is
    ``φ_kept / (λ_i − λ_j)``: finite for every pair of distinct eigenvalues,
    however close, and NaN where a kept and a dropped eigenvalue are equal
    (the truncated function has no derivative there).

    At the zero matrix (a numerically zero spectrum) a ``"positive"``-domain
    function is constant (every eigenvalue is raised to the same floor), so
    ``"exact"`` and ``"taylor"`` give 0; ``"pi"``'s own formula is
    ``f(floor) / floor`` off the diagonal, which overflows for the negative
    powers and the logarithm (``±inf``, never NaN).

    The derivatives of ``Power`` and
    ``Log`` are computed on the eigenvalues divided by
    a power of two near ``max|λ|`` and rescaled at the end: finite where the
    true gradient is representable, ``±inf`` where it overflows. For
    ``"exact"``, kernel entries of ``λ^p`` (``p > 1``) and ``e^λ`` beyond
    ``√max`` of the dtype are summed apart in that scale (``e^λ`` over a
    power of two near ``e^max λ``), so that these too give ``±inf`` where
    the derivative overflows and finite entries where it does not (the
    cotangent below ``√max``).

    ``λ^p`` with ``0 < p < 1`` has an infinite slope at 0: where a zero
    eigenvalue is kept (a singular ``A``, and the zero matrix) ``F`` has no
    derivative, and every method gives NaN there, as autograd through
    ``torch.linalg.eigh`` does (no finite number stands for it). Add
    ``eps · I`` first, or use a ``"positive"``-domain function.

    Examples
    --------
    ``d trace(√A) = A^{-1/2} / 2``, also at a repeated eigenvalue:

    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Power
    >>> w, v = svdpi.eig(np.diag([4.0, 1.0, 1.0]))
    >>> np.diag(svdpi.spectral_map_vjp(w, v, Power(0.5), np.eye(3)))
    array([0.25, 0.5 , 0.5 ])
    """
    return derivative(
        eigenvalues, eigenvectors, fn, grad, "grad", mask, method, num_iters, True, xp
    )


def spectral_map_jvp(
    eigenvalues: Array,
    eigenvectors: Array,
    fn: functions.SpectralFunction,
    tangent: Array | None,
    /,
    *,
    mask: Array | None = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Namespace | None = None,
) -> Array:
    """Forward-mode derivative of :func:`spectral_map` (Jacobian-vector product).

    The exact transpose of :func:`spectral_map_vjp` with the same ``method``
    and ``num_iters``: ``<spectral_map_vjp(Ḡ), T> == <Ḡ, spectral_map_jvp(T)>``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    fn : svdpi.functions.SpectralFunction
        The function the forward applied.
    tangent : array, shape (..., n, n), or None
        Perturbation of ``A``; only its symmetric (Hermitian) part matters. ``None``
        means zero.
    mask, method, num_iters : optional
        See :func:`spectral_map_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The perturbation of ``F(A)`` (symmetric, or Hermitian).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Log
    >>> w, v = svdpi.eig(np.diag([np.e, 1.0]))
    >>> t = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> d = svdpi.spectral_map_jvp(w, v, Log(), t)  # (log e − log 1) / (e − 1) off the diagonal
    >>> bool(np.isclose(d[0, 1], 1 / (np.e - 1)))
    True
    """
    return derivative(
        eigenvalues, eigenvectors, fn, tangent, "tangent", mask, method, num_iters, False, xp
    )


# --------------------------------------------------------- second order


def check_second_order(method: Any) -> None:
    """Require ``method="exact"``, the one first derivative that has a derivative here."""
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    if method != "exact":
        raise ValueError(
            f"second derivatives of a spectral map exist for method='exact' only, got "
            f"method={method!r}: the {method!r} gradient is a formula in the eigenpairs "
            "whose own derivative svdpi does not define (and autograd through it would be "
            "wrong at repeated eigenvalues); use method='exact'"
        )


def _groups(spec: Spectrum, xp: Namespace) -> Array | None:
    """Per eigenpair: 0 kept above the clamp (``f``), 1 kept below it (a constant), 2 dropped.

    ``None`` when every pair is kept and none clamped: the whole spectrum
    takes ``f``'s own second divided differences.
    """
    if spec.live is None and spec.kept is None:
        return None
    dtype = spec.lam.dtype
    group = xp.zeros_like(spec.lam)
    if spec.live is not None:
        group = xp.where(spec.live, group, xp.ones_like(group))
    if spec.kept is not None:
        group = xp.where(spec.kept, group, xp.full_like(group, 2.0))
    return xp.astype(group, dtype)


def second_divided_differences(fn, spec: Spectrum, kernel: Array, xp: Namespace) -> Array:
    """``H_abc = g[λa, λb, λc]`` for ``g`` the function as computed, shape ``(..., n, n, n)``.

    Locally ``g`` is ``f`` on kept eigenvalues above the clamp, the constant
    ``f(clamp)`` below it and 0 on dropped ones: a triple within one of
    these groups takes ``fn.second_divided_difference`` (or 0); a mixed
    triple has two eigenvalues from different groups, which differ (a cut
    without a gap already made ``kernel`` NaN), and takes the recursion
    ``g[a, b, c] = (g[a, b] − g[b, c]) / (λa − λc)`` over that pair, from
    the first divided differences ``kernel`` (:func:`exact_kernel`).
    """
    c = spec.clamped
    c_a, c_b, c_c = c[..., :, None, None], c[..., None, :, None], c[..., None, None, :]
    inner = fn.second_divided_difference(c_a, c_b, c_c, xp=xp)
    group = _groups(spec, xp)
    if group is None:
        return inner
    g_a, g_b, g_c = group[..., :, None, None], group[..., None, :, None], group[..., None, None, :]
    lam = spec.lam
    l_a, l_b, l_c = lam[..., :, None, None], lam[..., None, :, None], lam[..., None, None, :]
    k_ab = kernel[..., :, :, None]
    k_bc = kernel[..., None, :, :]
    k_ac = kernel[..., :, None, :]
    # a and c in different groups: (g[a,b] − g[b,c]) / (λa − λc); otherwise b
    # differs from both: g[b, a, c] = (g[b,a] − g[a,c]) / (λb − λc).
    first = g_a != g_c
    numerator = xp.where(first, k_ab - k_bc, k_ab - k_ac)
    denominator = xp.where(first, l_a - l_c, l_b - l_c)
    one = xp.ones_like(denominator)
    mixed = numerator / xp.where(denominator == 0, one, denominator)
    uniform = (g_a == g_b) & (g_b == g_c)
    smooth = xp.where(g_a == 0, inner, xp.zeros_like(inner))
    return xp.where(uniform, smooth, mixed)


def spectral_map_hvp(
    eigenvalues: Array,
    eigenvectors: Array,
    fn: functions.SpectralFunction,
    grad: Array | None,
    tangent: Array | None,
    /,
    *,
    mask: Array | None = None,
    method: str = "exact",
    xp: Namespace | None = None,
) -> Array:
    """Second derivative of :func:`spectral_map`: the derivative of its exact VJP along a tangent.

    ``d/dt spectral_map_vjp(eig(A + t·T), fn, Ḡ, method="exact")`` at
    ``t = 0``: the Hessian of the loss ``<Ḡ, F(A)>`` applied to ``T``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs of ``A``.
    fn : svdpi.functions.SpectralFunction
        The function; it must define ``second_divided_difference`` (the
        built-ins do).
    grad : array, shape (..., n, n), or None
        The cotangent ``Ḡ`` of ``F(A)``; ``None`` means zero.
    tangent : array, shape (..., n, n), or None
        The direction ``T`` of ``A``; ``None`` means zero.
    mask : array of bool, shape (..., n), optional
        The mask the forward used.
    method : {"exact"}, default "exact"
        The first derivative being differentiated. Only ``"exact"`` has a
        second derivative; ``"pi"``, ``"taylor"`` and ``"analytic"`` raise
        ``ValueError`` (adapters pass their own ``method`` here to get that
        error).
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian); ``V M Vᴴ`` with, for ``X = Vᴴ herm(Ḡ) V`` and
        ``Ẽ = Vᴴ herm(T) V``,
        ``M_ab = Σ_c g[λa, λb, λc] (Ẽ_ac X_cb + X_ac Ẽ_cb)``.

    Notes
    -----
    ``g[x, y, z]`` is the second divided difference of the function as
    computed (clamp and mask included; see the theory page), finite and
    independent of the eigenbasis at repeated eigenvalues, like the first.
    The result is **symmetric in ``grad`` and ``tangent``**: ``hvp(Ḡ, T) == hvp(T, Ḡ)``, because
    ``<S, hvp(Ḡ, T)> = Σ_abc g[λa, λb, λc] X_ab Ẽ_bc S̃_ca`` is symmetric in
    its three arguments. So ``hvp(T2, T1)`` is also the second directional
    derivative ``d²F[T1, T2]``: what a torch double backward (the derivative
    of the VJP along the incoming cotangent) and a JAX jvp-of-jvp (the
    derivative of the JVP) both need. It costs ``O(n³)`` time and memory per
    matrix.

    Only ``"exact"`` has a second derivative here: the ``"pi"``, ``"taylor"``
    and ``"analytic"`` gradients are formulas in the eigenpairs whose own
    derivative is not defined by svdpi. Where the ``"positive"`` floor's
    level moves with ``max|λ|`` and holds a kept eigenvalue (a singular or
    near-singular ``A`` under the logarithm or a negative power, without
    ``eps · I``), the second derivative would have terms in the second
    derivative of ``max|λ|``, with no symmetry between ``grad`` and
    ``tangent``: svdpi does not compute them, and the result is NaN there.
    Eigenvalues raised to the floor's constant term (the zero matrix) or
    clamped at 0 (positive powers) are constants of the function and are
    handled.

    Examples
    --------
    For ``F(A) = A²`` the Hessian of ``<Ḡ, A²>`` is ``T Ḡ + Ḡ T`` (symmetrised):

    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import SpectralFunction
    >>> class Square(SpectralFunction):
    ...     def value(self, x, /, *, xp=None):
    ...         return x * x
    ...     def derivative(self, x, /, *, xp=None):
    ...         return 2 * x
    ...     def divided_difference(self, x, y, /, *, xp=None):
    ...         return x + y
    ...     def second_divided_difference(self, x, y, z, /, *, xp=None):
    ...         return x * 0 + y * 0 + z * 0 + 1
    >>> a = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 1.0]])
    >>> g = np.array([[1.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 2.0]])
    >>> t = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    >>> w, v = svdpi.eig(a)
    >>> h = svdpi.spectral_map_hvp(w, v, Square(), g, t)
    >>> bool(np.allclose(h, t @ g + g @ t))
    True
    """
    if xp is None:
        xp = namespace_of(
            eigenvectors, eigenvalues=eigenvalues, grad=grad, tangent=tangent, mask=mask
        )
    check_second_order(method)
    _check(eigenvalues, eigenvectors, fn, mask, xp)
    for x, name in ((grad, "grad"), (tangent, "tangent")):
        if x is not None:
            check_like(x, name, eigenvectors.shape, eigenvectors.dtype, xp, like=eigenvectors)
    v = eigenvectors
    if grad is None or tangent is None or v.shape[-1] == 0:
        return xp.zeros_like(v)
    # Second derivatives of negative degree (λ^p with p < 2, the logarithm)
    # grow at the smallest eigenvalues: in units of max|λ| a spectrum
    # spanning 1e25 in float32 overflowed there where the true values do
    # not. Units of min(max|λ|, 1) keep them as they are above 1 and scale
    # a small spectrum up (the normalisation of svdpi.eig_vjp).
    scaling = homogeneity(fn)
    negative = scaling is not None and scaling.value_degree < 2
    spec = spectrum(fn, eigenvalues, mask, xp, unit_at_most_one=negative)
    x = project_symmetric(v, grad, xp)
    e = project_symmetric(v, tangent, xp)
    kernel = exact_kernel(fn, spec, xp)
    h = second_divided_differences(fn, spec, kernel, xp)
    # M_ab = Σ_c H_abc (E_ac X_cb + X_ac E_cb), contracted over the last axis:
    # X_cb as the (b, c) entry of Xᵀ (which is conj(X) for Hermitian X).
    e_ac, x_ac = e[..., :, None, :], x[..., :, None, :]
    x_cb = xp.matrix_transpose(x)[..., None, :, :]
    e_cb = xp.matrix_transpose(e)[..., None, :, :]
    inner = xp.sum(h * (e_ac * x_cb + x_ac * e_cb), axis=-1)
    if spec.floor_active is not None:
        # Second derivatives through the moving floor are not computed: NaN
        # where it holds a kept eigenvalue (see Notes).
        below = ~spec.live if spec.kept is None else ~spec.live & spec.kept
        moving = spec.floor_active & xp.any(below, axis=-1, keepdims=True)
        inner = xp.where(moving[..., None], nan_like(inner, xp), inner)
    result = v @ inner @ adjoint(v, xp)
    if spec.exponent is None:
        return result
    degree = spec.homogeneity.value_degree - 2.0
    return rescale(result, spec.exponent[..., None], degree, xp)
