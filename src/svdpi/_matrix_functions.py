"""Matrix functions ``F(A) = V diag(f(λ)) Vᵀ`` (powers, logarithm) and their derivatives.

The derivatives come in two kinds, from the same forward eigenpairs:

* ``method="pi" | "taylor" | "analytic"``: the chain rule through the
  eigenvalues and eigenvectors, with the eigenvector coefficients of
  :func:`svdpi.eig_vjp`. This is what the paper's layers differentiate.
* ``method="exact"``: the Daleckii–Krein formula
  ``dF = V (G ∘ Vᵀ dA V) Vᵀ`` with the divided differences
  ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)``, ``G_ii = φ'(λ_i)``, of the function
  ``φ`` actually applied to each eigenvalue (eigenvalue floor and mask
  included). ``G`` is symmetric, so the VJP and the JVP are the same map.

Divided differences are evaluated without cancellation: with
``big = max(x, y)``, ``small = min(x, y)`` and ``r = small / big`` in ``(0, 1]``,

* power ``p > 0``: ``big^(p−1) · S(r, p)``,
* power ``p < 0``: ``−(small^p / big) · S(r, −p)``,
* log: ``L(r) / big``,

where ``S(r, q) = (1 − r^q) / (1 − r)`` lies between ``min(q, 1)`` and
``max(q, 1)`` and ``L(r) = log(r) / (r − 1)`` in ``[1, 1 / r]``. Both are
formed from ``r − 1 = −|x − y| / big`` (no ``1 − r`` by subtraction) and an
accurate ``log r`` (``log1p(r − 1)`` for ``r >= 1/2``, where ``big − small``
is exact, ``log(small / big)`` below), then ``expm1``; at ``r = 1`` both
``r − 1`` and ``log r`` are capped at ``−eps²`` as in
:func:`svdpi._coefficients.geometric_sum`, which turns ``S`` into ``q`` and
``L`` into 1 with no ``0 / 0``. The ``p < 0`` form never raises ``r`` to a
negative power, so it overflows only where ``small^p`` (the forward's own
value) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace

from ._coefficients import eigenvalue_floor
from ._compat import array_device
from ._gradient import _coefficient_product, project_symmetric, vjp_from_projected
from ._validation import (
    MATRIX_FUNCTION_METHODS,
    check_eigenpairs,
    check_exponent,
    check_like,
    check_mask,
    check_method,
    check_num_iters,
)


@dataclass(frozen=True)
class _Function:
    """A scalar function applied to the eigenvalues: ``λ^p`` (``kind="power"``) or ``log λ``."""

    kind: str
    p: float = 0.0

    @property
    def floored(self) -> bool:
        """Raised to :func:`eigenvalue_floor` (``p < 0``, log), else clamped at zero."""
        return self.kind == "log" or self.p < 0

    def lower(self, eigenvalues: Any, xp: Any) -> Any:
        if self.floored:
            return eigenvalue_floor(eigenvalues, xp)
        return xp.zeros_like(eigenvalues[..., :1])

    def values(self, c: Any, xp: Any) -> Any:
        if self.kind == "log":
            return xp.log(c)
        return c**self.p

    def derivative_at_zero(self) -> float:
        """``f'(0)`` from the right for ``p >= 0`` (the only case where ``c`` can be 0)."""
        if self.p == 0.0 or self.p > 1.0:
            return 0.0
        return 1.0 if self.p == 1.0 else float("inf")

    def derivatives(self, c: Any, xp: Any) -> Any:
        if self.kind == "log":
            return 1.0 / c
        if self.p == 0.0:
            return xp.zeros_like(c)
        if self.floored:
            return self.p * c ** (self.p - 1.0)
        positive = c > 0
        safe = xp.where(positive, c, xp.ones_like(c))
        at_zero = xp.full_like(c, self.derivative_at_zero())
        return xp.where(positive, self.p * safe ** (self.p - 1.0), at_zero)

    def divided_differences(self, c_i: Any, c_j: Any, xp: Any) -> Any:
        """``(f(c_i) − f(c_j)) / (c_i − c_j)``, ``f'(c_i)`` where equal; see the module docstring.

        ``c_i`` of shape ``(..., n, 1)`` and ``c_j`` of shape ``(..., 1, n)``:
        what depends on one eigenvalue only is computed on those vectors.
        Finite wherever ``big > 0``; where ``big == 0`` (both clamped to zero,
        ``p > 0`` only) the value is a placeholder the caller replaces.
        """
        if self.kind == "power" and self.p == 0.0:
            return xp.zeros_like(c_i * c_j)
        big = xp.maximum(c_i, c_j)
        small = xp.minimum(c_i, c_j)
        difference = xp.abs(c_i - c_j)
        if not self.floored:  # p > 0: eigenvalues clamped at 0, so big or small may be 0
            # A zero eigenvalue: r = 0 takes the placeholder 1 in the logarithm
            # and its limit S = 1 below; big = 0 (both zero) a placeholder 1.
            some_zero = small == 0
            big = xp.where(big > 0, big, xp.ones_like(big))
            small = xp.where(some_zero, big, small)
        ratio_minus_one = -difference / big
        eps = xp.finfo(big.dtype).eps
        cap = xp.asarray(-(eps * eps), dtype=big.dtype, device=array_device(big))
        # An array, not a Python -0.5: array-api-compat's scalar promotion
        # stops torch.compile(fullgraph=True).
        half = xp.asarray(-0.5, dtype=big.dtype, device=array_device(big))
        # log r: log1p(r − 1) for r >= 1/2 (big − small is exact there);
        # below, log(small / big) keeps the relative accuracy of a small r
        # that 1 + (r − 1) has lost. (log1p never sees −1.)
        far = ratio_minus_one < half
        log_ratio = xp.where(far, xp.log(small / big), xp.log1p(xp.maximum(ratio_minus_one, half)))
        log_ratio = xp.minimum(log_ratio, cap)
        denominator = xp.minimum(ratio_minus_one, cap)
        if self.kind == "log":
            return log_ratio / (denominator * big)
        series = xp.expm1(abs(self.p) * log_ratio) / denominator  # S(r, |p|)
        if self.p > 0:
            series = xp.where(some_zero, xp.ones_like(series), series)
            return big ** (self.p - 1.0) * series
        # small^p / big with small^p = the larger of c_i^p, c_j^p (p < 0).
        return -(xp.maximum(c_i**self.p, c_j**self.p) / big) * series


def _check_common(eigenvalues, eigenvectors, mask, method, num_iters, xp):
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    num_iters = check_num_iters(num_iters)
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    if mask is not None:
        check_mask(mask, tuple(eigenvalues.shape), xp)
    return method, num_iters


def _spectrum(function: _Function, eigenvalues: Any, mask: Any, xp: Any):
    """Clamped eigenvalues, which of them are above the clamp, and ``φ`` (masked ``f``)."""
    lower = function.lower(eigenvalues, xp)
    clamped = xp.maximum(eigenvalues, lower)
    live = eigenvalues >= lower
    phi = function.values(clamped, xp)
    if mask is not None:
        phi = xp.where(mask, phi, xp.zeros_like(phi))
    return clamped, live, phi


def _apply(eigenvectors: Any, weights: Any, xp: Any) -> Any:
    """``V diag(weights) Vᵀ``."""
    return (eigenvectors * weights[..., None, :]) @ xp.matrix_transpose(eigenvectors)


def _forward(function, eigenvalues, eigenvectors, mask, xp):
    check_eigenpairs(eigenvalues, eigenvectors, xp, allow_empty=True)
    if mask is not None:
        check_mask(mask, tuple(eigenvalues.shape), xp)
    if eigenvectors.shape[-1] == 0:
        # n = 0: an empty result, like eigh-based code (the floor would take
        # a maximum over no eigenvalues).
        return xp.zeros_like(eigenvectors)
    _, _, phi = _spectrum(function, eigenvalues, mask, xp)
    return _apply(eigenvectors, phi, xp)


def _pairs(x: Any) -> tuple[Any, Any]:
    return x[..., :, None], x[..., None, :]


def masked_kernel(eigenvalues: Any, phi: Any, kept: Any, kept_kernel: Any, xp: Any) -> Any:
    """Daleckii–Krein kernel ``G`` of ``φ_i = kept_i · f_i`` given ``G`` among kept pairs.

    Between a kept and a dropped eigenpair ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)``
    with one of ``φ_i, φ_j`` zero (no cancellation); it is 0 if both ``φ`` are
    zero and NaN where there is no gap: eigenvalues closer than
    :func:`eigenvalue_floor` (``n · eps · max|λ|``, what a backward-stable
    eigensolver can resolve) count as equal, and the truncated function is
    not differentiable there. Between two dropped pairs it is 0.
    ``kept=None`` keeps everything.
    """
    if kept is None:
        return kept_kernel
    lam_i, lam_j = _pairs(eigenvalues)
    kept_i, kept_j = _pairs(kept)
    phi_i, phi_j = _pairs(phi)
    resolution = eigenvalue_floor(eigenvalues, xp)[..., None]
    same = xp.abs(lam_i - lam_j) < resolution
    gap = xp.where(same, xp.ones_like(lam_i), lam_i - lam_j)
    numerator = phi_i - phi_j
    nan = xp.full_like(numerator, float("nan"))
    zero = xp.zeros_like(numerator)
    across = xp.where(numerator == 0, zero, xp.where(same, nan, numerator / gap))
    return xp.where(kept_i & kept_j, kept_kernel, xp.where(kept_i != kept_j, across, zero))


def _exact_kernel(function, eigenvalues, clamped, live, phi, mask, xp):
    """``G`` of the module docstring for ``φ = mask · f(max(λ, lower))``, shape (..., n, n)."""
    lam_i, lam_j = _pairs(eigenvalues)
    c_i, c_j = _pairs(clamped)
    live_i, _ = _pairs(live)
    divided = function.divided_differences(c_i, c_j, xp)
    difference = lam_i - lam_j
    same_lam = difference == 0
    # (f(c_i) − f(c_j)) / (λ_i − λ_j) = D(c_i, c_j) · (c_i − c_j) / (λ_i − λ_j):
    # the second factor is exactly 1 above the clamp, in [0, 1] across it,
    # 0 below it; for equal eigenvalues, 1 above the clamp and 0 below.
    gap = difference + xp.astype(same_lam, difference.dtype)
    across = xp.where(same_lam, xp.astype(live_i, gap.dtype), (c_i - c_j) / gap)
    kernel = divided * across
    if not function.floored and function.p != 0.0:
        # An eigenvalue exactly 0 (p > 0): f'(0) from the right, inf for p < 1.
        at_zero = xp.full_like(kernel, function.derivative_at_zero())
        kernel = xp.where(same_lam & live_i & (c_i == 0), at_zero, kernel)
    return masked_kernel(eigenvalues, phi, mask, kernel, xp)


def _floor_term(function, eigenvalues, clamped, live, mask, xp):
    """How the floor's own level moves ``φ``: ``dφ = weight · <direction, dλ>``.

    The floor is ``max(n · eps · max|λ|, tiny / eps)``; while its first term
    is the larger, eigenpairs below it (and kept) have
    ``φ_j = f(floor)`` and so ``dφ_j = f'(floor) · n · eps · sign(λ_k) dλ_k``
    for ``k`` the eigenvalue of largest magnitude. Returns ``(weight,
    direction)``, each of shape ``(..., n)``, or ``None`` without a floor.
    """
    if not function.floored:
        return None
    dtype = eigenvalues.dtype
    n = eigenvalues.shape[-1]
    finfo = xp.finfo(dtype)
    magnitude = xp.abs(eigenvalues)
    largest = xp.max(magnitude, axis=-1, keepdims=True)
    active = largest * (n * finfo.eps) >= finfo.smallest_normal / finfo.eps
    index = xp.arange(n, device=array_device(eigenvalues))
    top = index == xp.argmax(magnitude, axis=-1, keepdims=True)
    # sign(λ) as a where: array-api-compat's torch sign indexes with a boolean
    # mask, which torch.func.vmap cannot batch. Only the top eigenvalue's
    # slope is used, and only while the floor is active, so λ != 0 there.
    unit = xp.full_like(eigenvalues, n * finfo.eps)
    slope = xp.where(eigenvalues < 0, -unit, unit)
    slope = xp.where(top & active, slope, xp.zeros_like(slope))
    below = ~live if mask is None else ~live & mask
    derivatives = function.derivatives(clamped, xp)
    weight = xp.where(below, derivatives, xp.zeros_like(derivatives))
    return weight, slope


def _sandwich(eigenvectors: Any, kernel: Any, x: Any, floor_term: Any, transpose: bool, xp: Any):
    """``V (G ∘ Vᵀ sym(X) V + diag(floor part)) Vᵀ``: the exact map (``transpose``: its VJP).

    ``G`` is symmetric, so the Daleckii–Krein part is its own transpose; the
    rank-one floor part (see :func:`_floor_term`) is transposed explicitly.
    """
    projected = project_symmetric(eigenvectors, x, xp)
    left = eigenvectors @ (kernel * projected)
    if floor_term is not None:
        weight, direction = floor_term
        if transpose:
            weight, direction = direction, weight
        diagonal = xp.linalg.diagonal(projected)
        amount = xp.sum(direction * diagonal, axis=-1, keepdims=True)
        left = left + eigenvectors * (weight * amount)[..., None, :]
    return left @ xp.matrix_transpose(eigenvectors)


def function_vjp(
    function, eigenvalues, eigenvectors, grad, grad_name, mask, method, num_iters, xp
):
    """VJP of ``V diag(φ) Vᵀ`` (``φ = mask · f(clamped λ)``); ``grad=None`` means zero."""
    method, num_iters = _check_common(eigenvalues, eigenvectors, mask, method, num_iters, xp)
    if grad is not None:
        check_like(grad, grad_name, eigenvectors.shape, eigenvectors.dtype, xp)
    if grad is None or eigenvectors.shape[-1] == 0:  # a zero cotangent, or n = 0
        return xp.zeros_like(eigenvectors)
    clamped, live, phi = _spectrum(function, eigenvalues, mask, xp)
    if method == "exact":
        kernel = _exact_kernel(function, eigenvalues, clamped, live, phi, mask, xp)
        floor = _floor_term(function, eigenvalues, clamped, live, mask, xp)
        return _sandwich(eigenvectors, kernel, grad, floor, True, xp)
    projected = project_symmetric(eigenvectors, grad, xp)
    # F = V Φ Vᵀ: <Ḡ, dF> = <2 Ḡ V Φ, dV> + <diag(Vᵀ Ḡ V), dφ> for symmetric Ḡ.
    vt_grad_vectors = 2.0 * projected * phi[..., None, :]
    grad_values = xp.linalg.diagonal(projected) * _masked_derivatives(
        function, clamped, live, mask, xp
    )
    return vjp_from_projected(
        eigenvalues,
        eigenvectors,
        grad_values,
        vt_grad_vectors,
        method=method,
        num_iters=num_iters,
        xp=xp,
    )


def function_jvp(
    function, eigenvalues, eigenvectors, tangent, tangent_name, mask, method, num_iters, xp
):
    """JVP of ``V diag(φ) Vᵀ``, the exact transpose of :func:`function_vjp`."""
    method, num_iters = _check_common(eigenvalues, eigenvectors, mask, method, num_iters, xp)
    check_like(tangent, tangent_name, eigenvectors.shape, eigenvectors.dtype, xp)
    if eigenvectors.shape[-1] == 0:
        return xp.zeros_like(eigenvectors)
    clamped, live, phi = _spectrum(function, eigenvalues, mask, xp)
    if method == "exact":
        kernel = _exact_kernel(function, eigenvalues, clamped, live, phi, mask, xp)
        floor = _floor_term(function, eigenvalues, clamped, live, mask, xp)
        return _sandwich(eigenvectors, kernel, tangent, floor, False, xp)
    projected = project_symmetric(eigenvectors, tangent, xp)
    # dV = V P with P = Aᵀ ∘ E (as eig_jvp), dλ = diag(E):
    # dF = V (P Φ + Φ Pᵀ + diag(dφ)) Vᵀ.
    product = _coefficient_product(
        eigenvalues, projected, method, num_iters, symmetrize=False, xp=xp
    )
    half = product * phi[..., None, :]
    dphi = xp.linalg.diagonal(projected) * _masked_derivatives(function, clamped, live, mask, xp)
    v = eigenvectors
    left = v @ (half + xp.matrix_transpose(half)) + v * dphi[..., None, :]
    return left @ xp.matrix_transpose(v)


def _masked_derivatives(function, clamped, live, mask, xp):
    """``dφ/dλ``: ``f'`` above the clamp and on kept pairs, 0 elsewhere."""
    derivatives = function.derivatives(clamped, xp)
    keep = live if mask is None else live & mask
    return xp.where(keep, derivatives, xp.zeros_like(derivatives))


# ----------------------------------------------------------------- public API


def matrix_power(
    eigenvalues: Any, eigenvectors: Any, p: float, /, *, mask: Any = None, xp: Any = None
) -> Any:
    """Matrix power ``A^p = V diag(λ^p) Vᵀ`` of a symmetric PSD matrix from its eigenpairs.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of ``A`` (a batch of them), as returned by :func:`eig`.
    p : float
        Any finite real exponent (a Python or NumPy scalar): ``0.5`` is the
        matrix square root, ``-0.5`` the ZCA whitening matrix
        (:func:`zca_whitening_matrix`), ``-1`` the inverse.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use (e.g. from :func:`truncation_mask`); the others are
        left out of the sum. All are used when omitted.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``Σ_j mask_j · max(λ_j, c)^p · v_j v_jᵀ`` (symmetric).

    Notes
    -----
    The eigenvalue clamp ``c``:

    * ``p < 0``: eigenvalues below the floor ``n · eps · max|λ|`` (zero,
      negative or lost to round-off, see :func:`eig_vjp`) are raised to it,
      as :func:`zca_whitening_matrix` does, so a singular ``A`` gives a large
      but finite result.
    * ``p >= 0``: negative eigenvalues (round-off of a PSD matrix) are
      clamped to zero, so ``A^p`` is real and ``0^p = 0`` for ``p > 0``
      (``A^0`` is the identity on the kept eigenpairs). For an indefinite
      ``A`` this is the power of its PSD part, also for integer ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> root = svdpi.matrix_power(*svdpi.eig(a), 0.5)
    >>> bool(np.allclose(root @ root, a))
    True
    >>> inverse = svdpi.matrix_power(*svdpi.eig(a), -1)
    >>> bool(np.allclose(inverse @ a, np.eye(2)))
    True
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors)
    p = check_exponent(p)
    return _forward(_Function("power", p), eigenvalues, eigenvectors, mask, xp)


def matrix_power_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    p: float,
    grad: Any,
    /,
    *,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to ``A`` of a loss of :func:`matrix_power` (vector-Jacobian product).

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    p : float
        The exponent the forward used.
    grad : array, shape (..., n, n), or None
        Cotangent of ``A^p``; ``None`` means zero.
    mask : array of bool, shape (..., n), optional
        The mask the forward used.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        ``"pi"``, ``"taylor"``, ``"analytic"``: the chain rule through the
        eigenvalues and eigenvectors, with the eigenvector gradient of
        :func:`eig_vjp` (the paper's route; it depends on the basis chosen
        inside a repeated eigenspace, except for ``"analytic"``, which is
        infinite there). ``"exact"``: the Daleckii–Krein derivative of the
        function as computed (see Notes), basis-independent and finite at
        repeated eigenvalues.
    num_iters : int, default 19
        See :func:`eig_vjp`; ignored by ``"analytic"`` and ``"exact"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric gradient with respect to ``A``.

    Notes
    -----
    ``"exact"`` returns ``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` with
    ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)`` and ``G_ii = φ'(λ_i)`` for
    ``φ_j = mask_j · max(λ_j, c)^p`` (the clamp ``c`` of
    :func:`matrix_power`). It is the derivative of exactly what the forward
    computes, with the mask held constant (no gradient through the choice
    of the mask): an eigenvalue below the clamp contributes no ``φ'`` of its
    own and divided differences across it see the clamped value. Where the
    floor is active (``p < 0``), ``"exact"`` also differentiates the floor's
    level ``n · eps · max|λ|``, so it matches finite differences of the
    forward there too; that term moves only the eigenvalue of largest
    magnitude. The chain-rule methods hold the floor constant, as the paper's
    clamp does, which keeps them bounded by ``(num_iters + 1) / floor``. Between a kept and a
    dropped eigenpair ``G_ij`` is ``φ_kept / (λ_i − λ_j)``, finite only with a
    gap: if the mask cuts through a repeated eigenvalue (two eigenvalues
    closer than ``n · eps · max|λ|``, which the eigensolver cannot tell
    apart) the truncated function has no derivative and the result is NaN. For ``0 < p < 1`` the
    derivative of ``λ^p`` is unbounded near ``λ = 0`` (infinite at an
    eigenvalue exactly 0): add ``eps · I`` to ``A`` as the whitening layers
    do. The default stays ``"pi"``, the gradient of the paper's layers.

    Examples
    --------
    At a repeated eigenvalue the exact gradient is finite and does not depend
    on the eigenbasis the solver returned:

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([2.0, 1.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> c, s = np.cos(0.3), np.sin(0.3)
    >>> v_rotated = v @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    >>> g = np.ones((3, 3))
    >>> exact = svdpi.matrix_power_vjp(w, v, -0.5, g, method="exact")
    >>> rotated = svdpi.matrix_power_vjp(w, v_rotated, -0.5, g, method="exact")
    >>> bool(np.allclose(exact, rotated, rtol=0, atol=1e-14))
    True
    >>> pi = svdpi.matrix_power_vjp(w, v, -0.5, g)
    >>> pi_rotated = svdpi.matrix_power_vjp(w, v_rotated, -0.5, g)
    >>> bool(np.allclose(pi, pi_rotated))
    False
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors, grad)
    p = check_exponent(p)
    return function_vjp(
        _Function("power", p), eigenvalues, eigenvectors, grad, "grad", mask, method, num_iters, xp
    )


def matrix_power_jvp(
    eigenvalues: Any,
    eigenvectors: Any,
    p: float,
    tangent_a: Any,
    /,
    *,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Forward-mode derivative of :func:`matrix_power` (Jacobian-vector product).

    The exact transpose of :func:`matrix_power_vjp` with the same ``method``
    and ``num_iters``: ``<matrix_power_vjp(Ḡ), T> == <Ḡ, matrix_power_jvp(T)>``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    p : float
        The exponent the forward used.
    tangent_a : array, shape (..., n, n)
        Perturbation of ``A``; only its symmetric part matters.
    mask, method, num_iters : optional
        See :func:`matrix_power_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The perturbation of ``A^p`` (symmetric).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w, v = svdpi.eig(np.diag([4.0, 1.0]))
    >>> svdpi.matrix_power_jvp(w, v, 0.5, np.eye(2), method="exact")  # d√λ = dλ / (2√λ)
    array([[0.25, 0.  ],
           [0.  , 0.5 ]])
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors, tangent_a)
    p = check_exponent(p)
    return function_jvp(
        _Function("power", p),
        eigenvalues,
        eigenvectors,
        tangent_a,
        "tangent_a",
        mask,
        method,
        num_iters,
        xp,
    )


def matrix_log(eigenvalues: Any, eigenvectors: Any, /, *, mask: Any = None, xp: Any = None) -> Any:
    """Matrix logarithm ``log A = V diag(log λ) Vᵀ`` of a symmetric positive definite matrix.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of ``A`` (a batch of them), as returned by :func:`eig`.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use; the others are left out of the sum.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``Σ_j mask_j · log(max(λ_j, floor)) · v_j v_jᵀ`` (symmetric).

    Notes
    -----
    Eigenvalues below ``n · eps · max|λ|`` are raised to that floor, as in
    :func:`matrix_power` with ``p < 0``: a singular ``A`` gives large negative
    but finite entries. Add ``eps · I`` for a meaningful log-Euclidean metric.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> log_a = svdpi.matrix_log(*svdpi.eig(a))
    >>> bool(np.allclose(svdpi.matrix_power(*svdpi.eig(log_a), 1.0), log_a))
    True
    >>> np.round(np.linalg.eigvalsh(log_a), 6)  # log 1, log 3
    array([0.      , 1.098612])
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors)
    return _forward(_Function("log"), eigenvalues, eigenvectors, mask, xp)


def matrix_log_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    grad: Any,
    /,
    *,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to ``A`` of a loss of :func:`matrix_log` (vector-Jacobian product).

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    grad : array, shape (..., n, n), or None
        Cotangent of ``log A``; ``None`` means zero.
    mask, method, num_iters : optional
        As in :func:`matrix_power_vjp`; with ``"exact"`` the divided
        differences are those of ``log(max(λ, floor))``,
        ``(log λ_i − log λ_j) / (λ_i − λ_j)``, formed without cancellation.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric gradient with respect to ``A``.

    Examples
    --------
    ``d trace(log A) = trace(A^{-1} dA)``, whatever the spectrum:

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([3.0, 1.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> g = svdpi.matrix_log_vjp(w, v, np.eye(3), method="exact")
    >>> bool(np.allclose(g, np.linalg.inv(a)))
    True
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors, grad)
    return function_vjp(
        _Function("log"), eigenvalues, eigenvectors, grad, "grad", mask, method, num_iters, xp
    )


def matrix_log_jvp(
    eigenvalues: Any,
    eigenvectors: Any,
    tangent_a: Any,
    /,
    *,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Forward-mode derivative of :func:`matrix_log`, the transpose of :func:`matrix_log_vjp`.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    tangent_a : array, shape (..., n, n)
        Perturbation of ``A``; only its symmetric part matters.
    mask, method, num_iters : optional
        See :func:`matrix_log_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The perturbation of ``log A`` (symmetric).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w, v = svdpi.eig(np.diag([np.e, 1.0]))
    >>> t = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> dlog = svdpi.matrix_log_jvp(w, v, t, method="exact")  # (log e − log 1) / (e − 1)
    >>> bool(np.isclose(dlog[0, 1], 1 / (np.e - 1)))
    True
    """
    if xp is None:
        xp = array_namespace(eigenvalues, eigenvectors, tangent_a)
    return function_jvp(
        _Function("log"),
        eigenvalues,
        eigenvectors,
        tangent_a,
        "tangent_a",
        mask,
        method,
        num_iters,
        xp,
    )
