"""Elementwise building blocks of the divided differences in :mod:`svdpi.functions`.

Everything here is branch-free (``xp.where``, never a Python ``if`` on array
values, never boolean-mask indexing) and warning-free on NumPy: each
division has a safe denominator, each ``log`` a safe argument and each
``exp`` a bounded one, also in the lanes a ``where`` throws away (NumPy warns
about those too, and JAX and PyTorch would carry their NaN into gradients).
Constants are arrays of the input's dtype and device, never Python floats
passed to ``xp`` functions: array-api-compat's scalar promotion stops
``torch.compile(fullgraph=True)``. Python floats appear only in arithmetic
operators, which every array library takes natively.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ._compat import array_device
from ._typing import Array, Namespace


def constant(value: float, like: Array, xp: Namespace) -> Array:
    """``value`` as a 0-d array of ``like``'s dtype and device.

    ``full``, not ``asarray``: on a GPU, ``asarray`` of a Python number is a
    blocking host-to-device copy (a synchronisation per call, measured with
    ``torch.cuda.set_sync_debug_mode``), ``full`` a fill on the device.
    """
    return xp.full((), value, dtype=like.dtype, device=array_device(like))


def nonzero(x: Array, xp: Namespace) -> Array:
    """``x`` with its zeros replaced by 1: a denominator whose zero lanes a ``where`` discards."""
    return xp.where(x == 0, constant(1.0, x, xp), x)


def horner(coefficients: tuple[float, ...], t: Array) -> Array:
    """``Σ_k coefficients[k] · t^k`` (at least two coefficients)."""
    result = t * coefficients[-1] + coefficients[-2]
    for c in reversed(coefficients[:-2]):
        result = result * t + c
    return result


def ordered_triple(x: Array, y: Array, z: Array, xp: Namespace) -> tuple[Array, Array, Array]:
    """The largest, middle and smallest of ``x, y, z``, elementwise (selections, no rounding)."""
    low_xy = xp.minimum(x, y)
    high_xy = xp.maximum(x, y)
    return (
        xp.maximum(high_xy, z),
        xp.maximum(low_xy, xp.minimum(high_xy, z)),
        xp.minimum(low_xy, z),
    )


# ----------------------------------------------------------- ratio variables


def log_ratio(ratio_minus_one: Array, small: Array, big: Array, xp: Namespace) -> Array:
    """``log(small / big)`` accurately, given ``r − 1 = −|big − small| / big``.

    ``log1p(r − 1)`` for ``r >= 1/2`` (where ``big − small`` is exact), and
    ``log(small / big)`` below, which keeps the relative accuracy of a small
    ``r`` that ``1 + (r − 1)`` has lost. ``log1p`` never sees −1.
    """
    half = constant(-0.5, big, xp)
    far = ratio_minus_one < half
    return xp.where(far, xp.log(small / big), xp.log1p(xp.maximum(ratio_minus_one, half)))


def capped(x: Array, xp: Namespace) -> Array:
    """``min(x, −eps²)``: turns an exact 0 (equal arguments) into a harmless tiny negative."""
    eps = xp.finfo(x.dtype).eps
    return xp.minimum(x, constant(-(eps * eps), x, xp))


# -------------------------------------------------------- exponential series
#
# Series coefficients are Python floats, computed with plain loops (no
# generator passed to a builtin, no fractions): ``torch.compile`` may trace
# this code when a function is built inside a compiled region.


def series_length(coefficients: tuple[float, ...], radius: float, eps: float) -> int:
    """How many leading terms leave a tail below ``eps / 8`` of the first for ``|t| <= radius``."""
    target = abs(coefficients[0]) * eps / 8
    tail = 0.0
    length = len(coefficients)
    for k in range(len(coefficients) - 1, 1, -1):
        tail = tail + abs(coefficients[k]) * radius**k
        if tail > target:
            break
        length = k
    return length


def is_single(x: Array, xp: Namespace) -> bool:
    """Whether ``x`` has float32 precision (or less), which needs fewer series terms."""
    return float(xp.finfo(x.dtype).eps) > 1e-10


_SINGLE_EPS = 2.0**-23
_DOUBLE_EPS = 2.0**-52

#: ``1 / (k + 2)!``: the Taylor coefficients of ``φ2(z) = (e^z − 1 − z) / z²``.
_PHI2_TAYLOR = tuple([1.0 / math.factorial(k + 2) for k in range(24)])
_PHI2_SINGLE = _PHI2_TAYLOR[: series_length(_PHI2_TAYLOR, 1.0, _SINGLE_EPS)]
_PHI2_DOUBLE = _PHI2_TAYLOR[: series_length(_PHI2_TAYLOR, 1.0, _DOUBLE_EPS)]


def phi2(z: Array, xp: Namespace) -> Array:
    """``φ2(z) = (e^z − 1 − z) / z²`` (``1/2`` at 0) for real ``z <= ~700``, to a few ulps.

    Its Taylor series where ``|z| <= 1``; the quotient of ``expm1(z) − z``
    beyond, where the subtraction loses at most a factor 2.7 (``e^z − 1`` and
    ``z`` have opposite signs for ``z < 0``, and ``e^z − 1 − z >= z²/2`` for
    ``z > 0``). The caller bounds ``z`` above: ``e^z`` overflows first.
    """
    one = constant(1.0, z, xp)
    small = xp.abs(z) <= one
    near = horner(_PHI2_SINGLE if is_single(z, xp) else _PHI2_DOUBLE, xp.where(small, z, one))
    far_z = xp.where(small, one, z)
    far = (xp.expm1(far_z) - far_z) / (far_z * far_z)
    return xp.where(small, near, far)


# ------------------------------------------------------ power / log series


def ratio_series(numerator: list[float]) -> tuple[float, ...]:
    """Taylor coefficients of ``N(λ) / φ1(λ)²`` from those of ``N``.

    ``φ1(λ)² = ((e^λ − 1) / λ)²`` has the coefficients ``(2^(k+2) − 2) / (k+2)!``;
    the quotient's follow by the recurrence of series division. Used for the
    confluent second divided differences of powers and the logarithm, which
    are ``a^(p−2) · K(log(b / a))`` with ``K = N / φ1²`` (see
    :class:`svdpi.functions.Power`). ``K`` is analytic for ``|λ| < 2π``
    (the zeros of ``e^λ − 1``), so the coefficients decay like ``(2π)^−k``.
    """
    terms = len(numerator)
    square = [(2.0 ** (k + 2) - 2.0) / math.factorial(k + 2) for k in range(terms)]
    quotient: list[float] = []
    for k in range(terms):
        value = numerator[k]
        for j in range(1, k + 1):
            value = value - square[j] * quotient[k - j]
        quotient.append(value)
    return tuple(quotient)


def truncated(coefficients: tuple[float, ...], radius: float, single: bool) -> tuple[float, ...]:
    """The leading coefficients enough for float32 (``single``) or float64 at ``radius``."""
    eps = _SINGLE_EPS if single else _DOUBLE_EPS
    return coefficients[: series_length(coefficients, radius, eps)]


# -------------------------------------------------- second differences


def from_confluent(
    confluent: Callable[[Array, Array], Array], x: Array, y: Array, z: Array, xp: Namespace
) -> Array:
    """``f[x, y, z]`` from ``C(a, b) = f[a, a, b]``, taken at the middle point.

    With ``hi >= mid >= lo`` the three points, ``u = hi − mid``, ``v = mid − lo``::

        f[hi, mid, lo] = (u · f[mid, mid, hi] + v · f[mid, mid, lo]) / (u + v)

    because ``f[hi, mid] − f'(mid) = u · f[mid, mid, hi]`` and
    ``f'(mid) − f[mid, lo] = v · f[mid, mid, lo]``. Both weights are
    nonnegative, so where ``f''`` keeps one sign between ``lo`` and ``hi``
    (convex or concave ``f``: powers, log, exp, softplus) the two terms have
    the same sign and nothing cancels; the result is as accurate as ``C``.
    Exactly symmetric in ``x, y, z``. Ties need no special case beyond
    ``u + v = 0`` (``f''(mid) / 2 = C(mid, mid)``); a term with weight 0 is
    dropped before it multiplies, so an infinite ``C`` there (a power's
    ``f''`` at 0) does not turn into NaN.

    ``C`` depends on two of the points only. Where ``x, y, z`` broadcast
    from smaller arrays (``(n, 1, 1)``, ``(1, n, 1)``, ``(1, 1, n)``: the
    triples of a second derivative), ``C`` is evaluated on the six ordered
    pairs (``n²`` entries each) and looked up per triple, instead of twice
    on all ``n³`` triples.
    """
    shape = _broadcast_shape(x.shape, y.shape, z.shape)
    pairs = [_broadcast_shape(a.shape, b.shape) for a, b in ((x, y), (x, z), (y, z))]
    hi, mid, lo = ordered_triple(x, y, z, xp)
    if None not in shape and all(None not in p and 2 * _size(p) < _size(shape) for p in pairs):
        # C(mid, hi) and C(mid, lo) from the tables of the variable that is the middle.
        yx, yz = confluent(y, x), confluent(y, z)
        xy, xz = confluent(x, y), confluent(x, z)
        zx, zy = confluent(z, x), confluent(z, y)
        is_y, is_x = y == mid, x == mid
        x_over_z, y_over_z, x_over_y = x >= z, y >= z, x >= y
        up = xp.where(
            is_y,
            xp.where(x_over_z, yx, yz),
            xp.where(is_x, xp.where(y_over_z, xy, xz), xp.where(x_over_y, zx, zy)),
        )
        down = xp.where(
            is_y,
            xp.where(x_over_z, yz, yx),
            xp.where(is_x, xp.where(y_over_z, xz, xy), xp.where(x_over_y, zy, zx)),
        )
    else:
        up = confluent(mid, hi)
        down = confluent(mid, lo)
    upper = hi - mid
    lower = mid - lo
    zero = constant(0.0, upper, xp)
    total = nonzero(upper + lower, xp)
    # Weights in [0, 1] first: u · C could underflow where the result does not.
    combined = (upper / total) * xp.where(upper > 0, up, zero) + (lower / total) * xp.where(
        lower > 0, down, zero
    )
    return xp.where(upper + lower > 0, combined, up)


def _broadcast_shape(*shapes: tuple) -> tuple:
    """The broadcast of ``shapes`` (``None`` for a dimension any of them does not know)."""
    ndim = max(len(shape) for shape in shapes)
    result = []
    for axis in range(ndim):
        size = 1
        for shape in shapes:
            index = axis - ndim + len(shape)
            if index < 0:
                continue
            dimension = shape[index]
            if dimension is None:
                size = None
                break
            if dimension != 1:
                size = dimension
        result.append(size)
    return tuple(result)


def _size(shape: tuple) -> int:
    size = 1
    for dimension in shape:
        size = size * dimension
    return size


def hinge_second_difference(
    x: Array, y: Array, z: Array, kink: Array, slope_at_kink: float, xp: Namespace
) -> Array:
    """``g[x, y, z]`` of the hinge ``g(t) = max(t − kink, 0)``, with ``g'(kink) = slope_at_kink``.

    Nonzero only where the points straddle the kink; with ``hi >= mid >= lo``::

        (kink − lo) / ((mid − lo)(hi − lo))   if mid >= kink > lo
        (hi − kink) / ((hi − mid)(hi − lo))   if hi > kink > mid

    (each a product and quotient of differences: no cancellation). Ties at
    the kink follow from the recursive definition with ``g'(kink)``:
    ``g[hi, kink, kink] = (1 − s) / (hi − kink)``,
    ``g[kink, kink, lo] = s / (kink − lo)``, and ``g[kink, kink, kink] = 0``
    (``g'' = 0``, the convention of autograd frameworks at a kink).
    """
    hi, mid, lo = ordered_triple(x, y, z, xp)
    zero = constant(0.0, hi, xp)
    left = (mid >= kink) & (kink > lo)
    right = (hi > kink) & (kink > mid)
    span = nonzero(hi - lo, xp)
    result = xp.where(left, (kink - lo) / (nonzero(mid - lo, xp) * span), zero)
    result = xp.where(right, (hi - kink) / (nonzero(hi - mid, xp) * span), result)
    at_kink_below = (mid == kink) & (lo == kink) & (hi > kink)
    result = xp.where(at_kink_below, (1.0 - slope_at_kink) / nonzero(hi - kink, xp), result)
    at_kink_above = (hi == kink) & (mid == kink) & (lo < kink)
    return xp.where(at_kink_above, slope_at_kink / nonzero(kink - lo, xp), result)
