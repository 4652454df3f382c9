r"""Functions of the singular values, ``a ↦ U f(Σ) Vᴴ``, with their exact derivatives.

For ``a = U Σ Vᴴ`` (reduced) and a scalar ``f`` with ``f(0) = 0`` (extended
oddly to negative arguments), ``F(a) = U diag(f(σ)) Vᴴ`` is a function of the
matrix, independent of the choice of singular vectors. Its derivative, with
``Y = Uᴴ X V``, is the rectangular Daleckii–Krein formula::

    dF = U [D⁻ ∘ herm(Y) + D⁺ ∘ skew(Y)] Vᴴ
         + (I − UUᴴ) X V diag(f(σ)/σ) Vᴴ + U diag(f(σ)/σ) Uᴴ X (I − VVᴴ)

    D⁻_ij = (f(σ_i) − f(σ_j)) / (σ_i − σ_j)    (f'(σ_i) where equal)
    D⁺_ij = (f(σ_i) + f(σ_j)) / (σ_i + σ_j)    (f'(0) where both are 0)

for a tangent ``X = da``. ``D⁻`` and ``D⁺`` are real and symmetric, so the
map is self-adjoint: the VJP is the same map applied to the cotangent.
``D⁻`` comes from the function's own cancellation-free
``divided_difference``; ``D⁺`` and ``f(σ)/σ`` involve no cancellation (a sum
over a sum) except at ``σ = 0``, where they take their limit ``f'(0)``.
The polar factor ``U Vᴴ`` (``f ≡ 1`` on ``σ > 0``) has ``D⁻ = 0``,
``D⁺ = 2/(σ_i + σ_j)`` and ``f(σ)/σ = 1/σ``.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, is_lazy_array

from ._compat import array_device
from ._complex import adjoint, is_complex
from ._dispatch import library_name
from ._svd import check_cotangent, check_factors
from ._svd_gradient import singular_value_floor
from ._typing import Array, Namespace
from .functions import SpectralFunction

# (function, library, dtype) -> whether f(0) == 0; filled on first use.
_zero_at_zero: dict[tuple[Any, str, str], bool] = {}


def check_function(fn: Any, xp: Namespace, dtype: Any) -> SpectralFunction:
    """Require a :class:`SpectralFunction` with ``f(0) = 0``.

    ``f(0)`` is evaluated once per function, library and dtype, on a 0-d
    array of the library's default device, and remembered; for lazy arrays
    (JAX under ``jax.jit``) it cannot be read and is not checked.
    """
    if not isinstance(fn, SpectralFunction):
        raise TypeError(f"fn must be a svdpi.functions.SpectralFunction, got {type(fn).__name__}")
    if fn.domain == "positive":
        raise ValueError(
            f"fn ({fn!r}) has domain 'positive' (it is not defined at 0); a function of the "
            "singular values needs f(0) = 0, because singular vectors of zero singular "
            "values are arbitrary"
        )
    try:
        key = (fn, library_name(xp), str(dtype))
        known = _zero_at_zero.get(key)
    except TypeError:  # an unhashable function: check every time
        key, known = None, None
    if known is None:
        value = fn.value(xp.zeros((), dtype=dtype), xp=xp)
        if is_lazy_array(value):
            return fn
        known = bool(value == 0)
        if key is not None:
            _zero_at_zero[key] = known
    if not known:
        raise ValueError(
            f"fn must satisfy f(0) = 0 (got f(0) = {float(fn.value(xp.zeros((), dtype=dtype)))} "
            f"for {fn!r}): U f(Σ) Vᴴ would otherwise depend on the arbitrary singular vectors "
            "of zero singular values (and on the padding of a rectangular matrix)"
        )
    return fn


def _check_mask(mask: Any, s: Array, xp: Namespace) -> None:
    if mask is None:
        return
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        raise TypeError(f"mask must be a boolean array, got {type(mask).__name__}")
    if not xp.isdtype(mask.dtype, "bool"):
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(s.shape):
        raise ValueError(
            f"mask must have the shape of s {tuple(s.shape)}, got {tuple(mask.shape)}"
        )


def _pairs(x: Array) -> tuple[Array, Array]:
    return x[..., :, None], x[..., None, :]


def _over(numerator: Array, denominator: Array, xp: Namespace) -> Array:
    """``numerator / denominator`` with 0 where the denominator is 0 (no 0/0 formed)."""
    zero = denominator == 0
    safe = xp.where(zero, xp.ones_like(denominator), denominator)
    return xp.where(zero, xp.zeros_like(numerator), numerator / safe)


def _kernels(s: Array, shape, fn: SpectralFunction, mask: Any, xp: Namespace):
    """``(D⁻, D⁺, f(σ)/σ)`` for ``φ = mask · f(σ)``.

    Between a kept and a dropped singular value ``D⁻ = (φ_i − φ_j)/(σ_i − σ_j)``
    has one of ``φ_i, φ_j`` zero (no cancellation); it is NaN where the two
    are equal (no gap: the truncated function has no derivative) unless its
    numerator is 0, and finite for any two distinct singular values, however
    close (issue 18: a gap below the floor is still a gap).
    """
    value = fn.value(s, xp=xp)
    # f(σ)/σ, and its limit f'(0) at σ = 0.
    zero = s == 0
    ratio = xp.where(zero, fn.derivative(xp.zeros_like(s), xp=xp), _over(value, s, xp))
    s_i, s_j = _pairs(s)
    minus = fn.divided_difference(s_i, s_j, xp=xp)
    if mask is not None:
        value = xp.where(mask, value, xp.zeros_like(value))
        ratio = xp.where(mask, ratio, xp.zeros_like(ratio))
        kept_i, kept_j = _pairs(mask)
        value_i, value_j = _pairs(value)
        same = s_i == s_j
        numerator = value_i - value_j
        across = xp.where(
            numerator == 0,
            xp.zeros_like(numerator),
            xp.where(same, xp.full_like(numerator, math.nan), _over(numerator, s_i - s_j, xp)),
        )
        minus = xp.where(
            kept_i & kept_j, minus, xp.where(kept_i != kept_j, across, xp.zeros_like(minus))
        )
    value_i, value_j = _pairs(value)
    ratio_i, ratio_j = _pairs(ratio)
    total = s_i + s_j
    plus = xp.where(total == 0, (ratio_i + ratio_j) * 0.5, _over(value_i + value_j, total, xp))
    return minus, plus, ratio


def _polar_kernels(s: Array, shape, xp: Namespace):
    """``(None, D⁺, 1/σ)`` of the polar factor; NaN for a numerically rank-deficient matrix."""
    floor = singular_value_floor(s, shape, xp)
    deficient = s[..., -1:] < floor  # the polar factor is not determined by a there
    safe = xp.where(deficient, xp.full_like(s, math.nan), s)
    inverse = 1.0 / safe
    s_i, s_j = _pairs(safe)
    return None, 2.0 / (s_i + s_j), inverse


def apply_kernels(u, vh, x, minus, plus, ratio, xp):
    """The map of the module docstring: ``dF`` for a tangent ``x`` (or the VJP of a cotangent)."""
    m, n, k = u.shape[-2], vh.shape[-1], vh.shape[-2]
    u_h, v = adjoint(u, xp), adjoint(vh, xp)
    if m > k:
        x_v = x @ v
        y = u_h @ x_v
    else:
        uh_x = u_h @ x
        y = uh_x @ v
    y_h = adjoint(y, xp)
    skew = (y - y_h) * 0.5
    inner = plus * skew
    if minus is not None:
        inner = inner + minus * ((y + y_h) * 0.5)
    if m > k:
        # U inner Vᴴ + (I − UUᴴ) X V φ Vᴴ = (U (inner − Y φ) + X V φ) Vᴴ
        return (u @ (inner - y * ratio[..., None, :]) + x_v * ratio[..., None, :]) @ vh
    if n > k:
        # U inner Vᴴ + U φ Uᴴ X (I − VVᴴ) = U ((inner − φ Y) Vᴴ + φ Uᴴ X)
        return u @ ((inner - ratio[..., :, None] * y) @ vh + ratio[..., :, None] * uh_x)
    return u @ (inner @ vh)


def _prepare(u, s, vh, fn, mask, xp):
    check_factors(u, s, vh, xp)
    if fn is not None:
        check_function(fn, xp, s.dtype)
    _check_mask(mask, s, xp)


def _shape(u, vh):
    return (*u.shape[:-2], u.shape[-2], vh.shape[-1])


def _empty(u, vh, xp):
    return xp.zeros(_shape(u, vh), dtype=u.dtype, device=array_device(u))


def _map_derivative(u, s, vh, fn, x, mask, name, xp):
    _prepare(u, s, vh, fn, mask, xp)
    check_cotangent(x, name, _shape(u, vh), u.dtype)
    if s.shape[-1] == 0:
        return _empty(u, vh, xp)
    shape = (u.shape[-2], vh.shape[-1])
    if fn is None:
        minus, plus, ratio = _polar_kernels(s, shape, xp)
    else:
        minus, plus, ratio = _kernels(s, shape, fn, mask, xp)
    return apply_kernels(u, vh, x, minus, plus, ratio, xp)


def _weighted(u, weights, vh, xp):
    if is_complex(u, xp):
        weights = xp.astype(weights, u.dtype)
    m, n = u.shape[-2], vh.shape[-1]
    if m >= n:
        return u @ (weights[..., :, None] * vh)
    return (u * weights[..., None, :]) @ vh


def singular_value_map(
    u: Array,
    s: Array,
    vh: Array,
    fn: SpectralFunction,
    /,
    *,
    mask: Array | None = None,
    xp: Namespace | None = None,
) -> Array:
    """``U diag(mask · f(σ)) Vh``: a function of the singular values, from an SVD.

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    fn : svdpi.functions.SpectralFunction
        The scalar function, with ``f(0) = 0`` (checked once per function and
        dtype where the value can be read), e.g. ``Power(p)`` for ``p > 0``.
    mask : array of bool, shape (..., k), optional
        Singular values to keep; the others contribute 0 (``None`` keeps all).
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        ``F(a)``, the same for every choice of singular vectors.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Power
    >>> a = np.array([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])
    >>> u, s, vh = svdpi.svd(a)
    >>> svdpi.singular_value_map(u, s, vh, Power(0.5))
    array([[1.73205081, 0.        ],
           [0.        , 2.        ],
           [0.        , 0.        ]])
    """
    if xp is None:
        xp = array_namespace(u, s, vh)
    _prepare(u, s, vh, fn, mask, xp)
    if s.shape[-1] == 0:
        return _empty(u, vh, xp)
    values = fn.value(s, xp=xp)
    if mask is not None:
        values = xp.where(mask, values, xp.zeros_like(values))
    return _weighted(u, values, vh, xp)


def singular_value_map_vjp(
    u: Array,
    s: Array,
    vh: Array,
    fn: SpectralFunction,
    grad: Array,
    /,
    *,
    mask: Array | None = None,
    xp: Namespace | None = None,
) -> Array:
    """Gradient with respect to ``a`` of ``Re<grad, singular_value_map(...)>`` (exact).

    The rectangular Daleckii–Krein derivative: the same for every choice of
    singular vectors, repeated singular values included.

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    fn : svdpi.functions.SpectralFunction
        As in :func:`singular_value_map`; ``f`` must be differentiable on the
        singular values (at 0 too, if one is 0).
    grad : array, shape (..., m, n)
        Cotangent of the map's value (PyTorch's convention for complex input).
    mask : array of bool, shape (..., k), optional
        As in :func:`singular_value_map`. The mask is held constant; between
        a kept and a dropped singular value that are equal the truncated
        function has no derivative and the result is NaN (two distinct ones,
        however close, give ``φ_kept`` over their gap).
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        The gradient with respect to ``a`` (PyTorch's convention for complex ``a``).

    Notes
    -----
    With ``Y = Uᴴ ḡ V``, the gradient is
    ``U [D⁻ ∘ herm(Y) + D⁺ ∘ skew(Y)] Vᴴ + (I − UUᴴ) ḡ V φ Vᴴ + U φ Uᴴ ḡ (I − VVᴴ)``
    with ``D⁻_ij = f[σ_i, σ_j]`` (``fn.divided_difference``),
    ``D⁺_ij = (f(σ_i) + f(σ_j)) / (σ_i + σ_j)`` and ``φ = f(σ)/σ`` (both
    ``f'(0)`` at zero singular values). The map is self-adjoint:
    :func:`singular_value_map_jvp` applies the same formula to a tangent.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Power
    >>> a = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # a repeated singular value
    >>> u, s, vh = svdpi.svd(a)
    >>> svdpi.singular_value_map_vjp(u, s, vh, Power(2.0), np.ones((3, 2)))
    array([[4., 4.],
           [4., 4.],
           [2., 2.]])
    """
    if xp is None:
        xp = array_namespace(u, s, vh, grad)
    return _map_derivative(u, s, vh, fn, grad, mask, "grad", xp)


def singular_value_map_jvp(
    u: Array,
    s: Array,
    vh: Array,
    fn: SpectralFunction,
    tangent: Array,
    /,
    *,
    mask: Array | None = None,
    xp: Namespace | None = None,
) -> Array:
    """Forward-mode derivative of :func:`singular_value_map` along ``tangent`` (exact).

    The same formula as :func:`singular_value_map_vjp` (the map is self-adjoint).

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    fn : svdpi.functions.SpectralFunction
        As in :func:`singular_value_map`.
    tangent : array, shape (..., m, n)
        Perturbation of ``a``.
    mask : array of bool, shape (..., k), optional
        As in :func:`singular_value_map_vjp`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        The tangent of the map's value.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> from svdpi.functions import Power
    >>> a = np.diag([3.0, 2.0])
    >>> u, s, vh = svdpi.svd(a)
    >>> svdpi.singular_value_map_jvp(u, s, vh, Power(2.0), np.eye(2))  # d(σ²) = 2σ dσ
    array([[6., 0.],
           [0., 4.]])
    """
    if xp is None:
        xp = array_namespace(u, s, vh, tangent)
    return _map_derivative(u, s, vh, fn, tangent, mask, "tangent", xp)


def polar(u: Array, s: Array, vh: Array, /, *, xp: Namespace | None = None) -> Array:
    """The polar factor ``U Vh`` (orthogonal or unitary; a partial isometry if m ≠ n).

    ``a = (U Vh)(V diag(σ) Vh)``: the orthogonal (unitary) matrix nearest to
    ``a`` in the Frobenius norm. Unique when ``a`` has full rank.

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        ``U Vh``, with orthonormal columns (``m >= n``) or rows (``m <= n``).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> q = svdpi.polar(*svdpi.svd(np.array([[2.0, 1.0], [0.0, 1.0]])))
    >>> np.allclose(q.T @ q, np.eye(2))
    True
    """
    if xp is None:
        xp = array_namespace(u, s, vh)
    check_factors(u, s, vh, xp)
    return u @ vh


def polar_vjp(
    u: Array, s: Array, vh: Array, grad: Array, /, *, xp: Namespace | None = None
) -> Array:
    """Gradient with respect to ``a`` of ``Re<grad, polar(...)>`` (exact).

    Finite and independent of the singular vectors at repeated singular
    values; NaN for a matrix whose smallest singular value is below
    ``max(m, n) · eps · σ_max``, whose polar factor is not determined by it.

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    grad : array, shape (..., m, n)
        Cotangent of the polar factor.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        The gradient with respect to ``a``; NaN for a rank-deficient matrix.

    Notes
    -----
    The singular-value map of ``f ≡ 1``: with ``Y = Uᴴ ḡ V`` the gradient is
    ``U [2/(σ_i + σ_j) ∘ skew(Y)] Vᴴ + (I − UUᴴ) ḡ V Σ⁻¹ Vᴴ + U Σ⁻¹ Uᴴ ḡ (I − VVᴴ)``:
    only the skew part of ``Y`` matters, and ``σ_i + σ_j`` never vanishes
    for a full-rank matrix.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> u, s, vh = svdpi.svd(2.0 * np.eye(2))  # a repeated singular value
    >>> svdpi.polar_vjp(u, s, vh, np.array([[0.0, 1.0], [0.0, 0.0]]))
    array([[ 0.  ,  0.25],
           [-0.25,  0.  ]])
    """
    if xp is None:
        xp = array_namespace(u, s, vh, grad)
    return _map_derivative(u, s, vh, None, grad, None, "grad", xp)


def polar_jvp(
    u: Array, s: Array, vh: Array, tangent: Array, /, *, xp: Namespace | None = None
) -> Array:
    """Forward-mode derivative of :func:`polar` along ``tangent`` (exact; see :func:`polar_vjp`).

    Parameters
    ----------
    u, s, vh : array
        The reduced SVD of ``a`` as :func:`svd` returns it.
    tangent : array, shape (..., m, n)
        Perturbation of ``a``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., m, n)
        The tangent of the polar factor; NaN for a rank-deficient matrix.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> u, s, vh = svdpi.svd(np.eye(2))
    >>> svdpi.polar_jvp(u, s, vh, np.array([[0.0, 1.0], [-1.0, 0.0]]))  # a rotation
    array([[ 0.,  1.],
           [-1.,  0.]])
    """
    if xp is None:
        xp = array_namespace(u, s, vh, tangent)
    return _map_derivative(u, s, vh, None, tangent, None, "tangent", xp)
