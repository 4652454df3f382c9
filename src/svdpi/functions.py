"""Scalar functions applied to the eigenvalues of a symmetric matrix (spectral functions).

A :class:`SpectralFunction` is what :func:`svdpi.spectral_map` applies to the
eigenvalues: ``F(A) = V diag(f(λ)) Vᵀ``. Besides the value it gives
everything the derivatives of ``F`` need, evaluated elementwise on arrays of
any array API library:

* ``derivative`` and ``second_derivative``: ``f'`` and ``f''``;
* ``divided_difference``: ``f[x, y] = (f(x) − f(y)) / (x − y)``, ``f'(x)``
  where ``x == y``, the entries of the Daleckii–Krein kernel;
* ``second_divided_difference``: ``f[x, y, z]``, the entries of the second
  derivative of ``F``, and ``confluent_divided_difference``:
  ``f[x, x, y]``, from which it is built;
* ``domain``: where ``f`` is applied (see :class:`SpectralFunction`).

Divided differences are the whole difficulty: ``(f(x) − f(y)) / (x − y)``
as written loses every digit when ``x`` and ``y`` are close, which is exactly
where eigenvalue-based layers live (repeated and clustered eigenvalues). The
built-ins (:class:`Power`, :class:`Log`, :class:`Exp`, :class:`Clamp`,
:class:`Softplus`, :class:`Abs`) evaluate them in closed forms free of
cancellation; a user's function (:class:`Custom`, or a subclass that defines
only ``value`` and ``derivative``) goes through a generic scheme, a
difference quotient or a Gauss–Kronrod rule, whichever has the smaller
estimated error. The maths, and the measured accuracy, are on the theory
page (:doc:`/theory_functions`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

from array_api_compat import array_namespace

from . import _quadrature
from ._divided_differences import (
    capped,
    constant,
    from_confluent,
    hinge_second_difference,
    horner,
    is_single,
    log_ratio,
    nonzero,
    ordered_triple,
    phi2,
    ratio_series,
    truncated,
)
from ._typing import Array, Namespace
from ._validation import check_exponent

#: The values of ``SpectralFunction.domain``.
DOMAINS = ("real", "nonnegative", "positive")


def _namespace(xp: Namespace | None, *arrays: Array) -> Namespace:
    return array_namespace(*arrays) if xp is None else xp


def _eps(x: Array, xp: Namespace) -> float:
    return float(xp.finfo(x.dtype).eps)


class SpectralFunction:
    """A scalar function ``f`` applied to the eigenvalues of a symmetric matrix.

    Every method is elementwise and takes arrays of one array API namespace,
    broadcast against each other, already inside ``domain`` (the
    spectral maps clamp the eigenvalues first). Built-in subclasses are
    frozen dataclasses, hashable and compared by value, so that a function
    is a constant to ``torch.compile`` and a static argument to ``jax.jit``.

    A subclass must define ``value`` and ``derivative``; it then gets
    divided differences from the generic scheme of :class:`Custom` (accurate
    to about 1e-13 relative in float64), and second divided differences too
    if it defines ``second_derivative``. A closed form of
    ``divided_difference`` (and of ``confluent_divided_difference``, from
    which ``second_divided_difference`` is built at the middle point) is
    faster and, written without cancellation, exact to a few ulps.

    Attributes
    ----------
    domain : {"real", "nonnegative", "positive"}
        Where ``f`` is applied. ``"real"``: to every eigenvalue as it is.
        ``"nonnegative"``: eigenvalues below 0 (round-off of a PSD matrix)
        are clamped to 0 first (positive powers). ``"positive"``: eigenvalues
        are raised to svdpi's eigenvalue floor first, the smallest eigenvalue
        a backward-stable eigensolver can tell from zero (the logarithm,
        negative powers). The derivatives of :func:`svdpi.spectral_map` are
        those of the function as computed, clamp included.

    Examples
    --------
    A function of one's own: ``value`` and ``derivative`` are enough for
    first derivatives, ``second_derivative`` adds second ones.

    >>> import dataclasses
    >>> import numpy as np
    >>> from svdpi.functions import SpectralFunction
    >>> @dataclasses.dataclass(frozen=True)
    ... class Cube(SpectralFunction):
    ...     def value(self, x, /, *, xp=None):
    ...         return x**3
    ...
    ...     def derivative(self, x, /, *, xp=None):
    ...         return 3 * x**2
    ...
    ...     def second_derivative(self, x, /, *, xp=None):
    ...         return 6 * x
    >>> x, y = np.array([2.0, 1.0]), np.array([1.0, 1.0 + 1e-12])
    >>> Cube().divided_difference(x, y)  # x² + xy + y²
    array([7., 3.])
    >>> Cube().second_divided_difference(x, y, np.array([0.0, 1.0]))  # x + y + z
    array([3., 3.])
    """

    domain: ClassVar[str] = "real"

    def value(self, x: Array, /, *, xp: Namespace | None = None) -> Array:
        """``f(x)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define value")

    def derivative(self, x: Array, /, *, xp: Namespace | None = None) -> Array:
        """``f'(x)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define derivative")

    def second_derivative(self, x: Array, /, *, xp: Namespace | None = None) -> Array:
        """``f''(x)``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define second_derivative, which second "
            "derivatives of a spectral map need"
        )

    def divided_difference(self, x: Array, y: Array, /, *, xp: Namespace | None = None) -> Array:
        """``f[x, y] = (f(x) − f(y)) / (x − y)``, and ``f'(x)`` where ``x == y``.

        Exactly symmetric in ``x`` and ``y``. Here: the generic scheme of
        :class:`Custom`, from ``value`` and ``derivative``.
        """
        xp = _namespace(xp, x, y)
        return _quadrature.divided_difference(
            self._bound("value", xp), self._bound("derivative", xp), x, y, xp
        )[0]

    def confluent_divided_difference(
        self, x: Array, y: Array, /, *, xp: Namespace | None = None
    ) -> Array:
        """``f[x, x, y] = (f[x, y] − f'(x)) / (y − x)``, and ``f''(x) / 2`` where ``x == y``.

        The second divided difference with its first point repeated; here
        from the generic scheme (``second_derivative`` near ``x``, the
        quotient far from it).
        """
        xp = _namespace(xp, x, y)
        first, error = self._divided_difference_and_error(x, y, xp)
        return _quadrature.confluent_divided_difference(
            self._bound("derivative", xp), self._bound("second_derivative", xp), x, y, first,
            error, xp,
        )  # fmt: skip

    def second_divided_difference(
        self, x: Array, y: Array, z: Array, /, *, xp: Namespace | None = None
    ) -> Array:
        """``f[x, y, z] = (f[x, y] − f[y, z]) / (x − z)``, with its confluent limits.

        Symmetric in its arguments; ``f[x, x, z] = (f'(x) − f[x, z]) / (x − z)``
        and ``f[x, x, x] = f''(x) / 2``. Here: ``confluent_divided_difference``
        at the middle of the three points, ``f[hi, mid, lo] =
        (u · f[mid, mid, hi] + v · f[mid, mid, lo]) / (u + v)`` with
        ``u = hi − mid`` and ``v = mid − lo``, two terms of one sign where
        ``f''`` keeps its sign.
        """
        xp = _namespace(xp, x, y, z)
        return from_confluent(
            lambda a, b: self.confluent_divided_difference(a, b, xp=xp), x, y, z, xp
        )

    # ------------------------------------------------------------- internals

    def _bound(self, name: str, xp: Namespace) -> Callable[[Array], Array]:
        method = getattr(self, name)
        return lambda t: method(t, xp=xp)

    def _divided_difference_and_error(
        self, x: Array, y: Array, xp: Namespace
    ) -> tuple[Array, Array]:
        """``f[x, y]`` and an estimate of its absolute error (a few ulps for a closed form)."""
        if type(self).divided_difference is SpectralFunction.divided_difference:
            return _quadrature.divided_difference(
                self._bound("value", xp), self._bound("derivative", xp), x, y, xp
            )
        value = self.divided_difference(x, y, xp=xp)
        return value, xp.abs(value) * (4 * _eps(value, xp))


def _zeros(xp: Namespace, *arrays: Array) -> Array:
    """Zeros of the broadcast shape of ``arrays``."""
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a
    return xp.zeros_like(total)


def _sign(x: Array, xp: Namespace) -> Array:
    """``sign(x)`` with ``sign(0) = 0``, by ``where``.

    Not ``xp.sign``: array-api-compat's torch ``sign`` indexes with a boolean
    mask, which ``torch.func.vmap`` cannot batch.
    """
    zero = constant(0.0, x, xp)
    one = constant(1.0, x, xp)
    return xp.where(x > 0, one, xp.where(x < 0, -one, zero))


# ----------------------------------------------------------------- built-ins


@dataclasses.dataclass(frozen=True)
class Power(SpectralFunction):
    """``f(λ) = λ^p`` for any finite real ``p``.

    ``p > 0``: eigenvalues are clamped at 0 (``domain = "nonnegative"``, so
    ``0^p = 0``, and ``f'(0)`` is its limit from the right: infinite for
    ``p < 1``); ``p < 0``: raised to the eigenvalue floor (``"positive"``);
    ``p = 0``: the constant 1 (the projector on the kept eigenpairs when
    masked).

    Parameters
    ----------
    p : float
        The exponent, a finite real Python or NumPy scalar.

    Notes
    -----
    Divided differences, with ``big = max(x, y)``, ``r = min(x, y) / big``
    and ``S(r, q) = (1 − r^q) / (1 − r)`` from ``r − 1 = −|x − y| / big``
    (never ``1 − r`` by subtraction) and an accurate ``log r``:
    ``big^(p−1) · S(r, p)`` for ``p > 0`` and ``−(small^p / big) · S(r, −p)``
    for ``p < 0`` (``r`` is never raised to a negative power, so nothing
    overflows that the values themselves do not; ``big^(p−1)`` and
    ``small^p`` are maxima of powers of the arguments, one power per
    eigenvalue). Below ``r = 1/16`` and for ``|p| < 1``, the quotient or
    ``log(small / big)`` takes over (see :doc:`/theory_functions`).
    ``p = ±1/2, ±1, 2`` have shorter exact forms, ``1 / (√x + √y)`` for the
    square root.

    Second divided differences are built from ``f[a, a, b] =
    a^(p−2) · K(log(b / a))``, ``K(λ) = p (p φ2(pλ) − φ2(λ)) / φ1(λ)²``
    (a Taylor series whose coefficients follow from ``p``, with ``p − 1``
    factored exactly) where ``|log(b / a)| <= min(1, 1/|p|)``, and
    ``(f[a, b] − f'(a)) / (b − a)`` farther apart; near ``p = 1`` through
    the product rule for ``λ · λ^(p−1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Power
    >>> sqrt = Power(0.5)
    >>> float(sqrt.divided_difference(np.float64(4.0), np.float64(1.0)))  # (2 − 1) / (4 − 1)
    0.3333333333333333
    >>> float(sqrt.divided_difference(np.float64(4.0), np.float64(4.0)))  # f'(4)
    0.25
    >>> float(Power(-1.5).divided_difference(np.float64(1.0), np.float64(1.0 + 1e-12)))  # ≈ f'(1)
    -1.49999999999812...
    """

    p: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_exponent(self.p))

    @property
    def domain(self) -> str:  # type: ignore[override]
        return "positive" if self.p < 0 else "nonnegative"

    def value(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        if self.p == 0.0:
            return xp.ones_like(x)
        if self.p == 0.5:
            return xp.sqrt(x)
        return x**self.p

    def derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        if self.p == 0.0:
            return xp.zeros_like(x)
        if self.p < 0:
            return self.p * self._shifted(x, 1)
        # f'(0) from the right: 0 for p > 1, 1 for p = 1, inf for 0 < p < 1.
        return self._at_positive(
            x, lambda t: self.p * self._shifted(t, 1), _right_limit(self.p, 1), xp
        )

    def second_derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        p = self.p
        if p in (0.0, 1.0):
            return xp.zeros_like(x)
        if p < 0:
            return (p * (p - 1.0)) * self._shifted(x, 2)
        return self._at_positive(
            x, lambda t: (p * (p - 1.0)) * self._shifted(t, 2), _right_limit(p, 2), xp
        )

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        p = self.p
        if p == 0.0:
            return _zeros(xp, x, y)
        if p == 1.0:
            return xp.ones_like(x + y)
        if p == 2.0:
            return x + y
        if p == -1.0:
            return -(1.0 / x) * (1.0 / y)
        if p == 0.5:
            # (√x − √y) / (x − y) = 1 / (√x + √y): one sum and one quotient per
            # pair, exact to a few ulps; infinite (f'(0)) where both are 0.
            # A sum of square roots is 0 or above √(smallest subnormal), far
            # above `tiny`: the maximum changes only the lanes the where sets.
            total = xp.sqrt(x) + xp.sqrt(y)
            tiny = constant(xp.finfo(total.dtype).smallest_normal, total, xp)
            inf = constant(math.inf, total, xp)
            return xp.where(total > 0, 1.0 / xp.maximum(total, tiny), inf)
        if p == -0.5:
            # (1/√x − 1/√y) / (x − y) = −1 / (√x √y (√x + √y)).
            root_x, root_y = xp.sqrt(x), xp.sqrt(y)
            return (-1.0 / root_x) * (1.0 / root_y) / (root_x + root_y)
        return self._general_divided_difference(x, y, xp)

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        p = self.p
        if p in _POWER_CLOSED_FORMS:
            return self.second_divided_difference(x, x, y, xp=xp)
        if p < 0:  # domain "positive": no zeros
            return self._positive_confluent(x, y, xp)
        # p > 0, zeros allowed. x = 0: f[0, 0, y] = (y^(p−1) − f'(0)) / y, or
        # f''(0) / 2 at y = 0; y = 0 < x: (p − 1) x^(p−2). The general forms
        # see a placeholder pair (x, x) there, with x = 1 if x = 0.
        # (Each form sees 1 in the lanes it does not serve: nothing overflows there.)
        one = constant(1.0, x, xp)
        x_zero = x == 0
        y_zero = y == 0
        if p < 1:
            at_x_zero = xp.full_like(x + y, -math.inf)
        else:
            only_x_zero = x_zero & ~y_zero
            at_x_zero = xp.where(
                y_zero,
                xp.full_like(x + y, _right_limit(p, 2) / 2),
                self._shifted(xp.where(only_x_zero, y, one), 2),
            )
        at_y_zero = (p - 1.0) * self._shifted(xp.where(y_zero & ~x_zero, x, one), 2)
        safe_x = xp.where(x_zero | y_zero, one, x)
        safe_y = xp.where(x_zero | y_zero, one, y)
        result = self._positive_confluent(safe_x, safe_y, xp)
        return xp.where(x_zero, at_x_zero, xp.where(y_zero, at_y_zero, result))

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        xp = _namespace(xp, x, y, z)
        p = self.p
        if p in (0.0, 1.0):
            return _zeros(xp, x, y, z)
        if p == 2.0:
            return xp.ones_like(x + y + z)
        # The closed forms below are products: the points are ordered first,
        # so that every permutation of the arguments gives the same bits.
        if p == -1.0:
            hi, mid, lo = ordered_triple(1.0 / x, 1.0 / y, 1.0 / z, xp)
            return (hi * mid) * lo
        if p in (0.5, -0.5):
            rx, ry, rz = ordered_triple(xp.sqrt(x), xp.sqrt(y), xp.sqrt(z), xp)
            # Reciprocals of (√x + √y), (√y + √z), (√z + √x), multiplied one
            # at a time: no intermediate overflows where the result does not.
            xy, yz, zx = rx + ry, ry + rz, rz + rx
            if p == 0.5:
                # −1 / ((√x + √y)(√y + √z)(√z + √x)); −inf where two are 0.
                product = (-1.0 / nonzero(xy, xp)) * (1.0 / nonzero(yz, xp)) / nonzero(zx, xp)
                two_zero = xp.minimum(xp.minimum(xy, yz), zx) == 0
                return xp.where(two_zero, constant(-math.inf, product, xp), product)
            # (√x + √y + √z) / (√x √y √z (√x + √y)(√y + √z)(√z + √x)).
            return ((rx + ry + rz) / xy / rx) * ((1.0 / yz) / ry) * ((1.0 / zx) / rz)
        return from_confluent(
            lambda a, b: self.confluent_divided_difference(a, b, xp=xp), x, y, z, xp
        )

    # ------------------------------------------------------------- internals

    def _positive_confluent(self, a: Array, b: Array, xp: Namespace) -> Array:
        """``f[a, a, b]`` for ``a, b > 0`` (``p`` not a closed form)."""
        p = self.p
        if abs(p - 1.0) < 0.5:
            # Near p = 1, f[a, a, b] ∝ p − 1 and the quotient would lose digits
            # to it; with g = λ^(p−1) (p − 1 exact here, and far from 1), the
            # product rule for λ^p = λ · g gives f[a, a, b] = a · g[a, a, b] + g[a, b],
            # two terms of different sizes (−1/2 and 1 times p a^(p−2) at b = a).
            g = Power(p - 1.0)
            return g._scaled_confluent(a, b, xp) + g.divided_difference(a, b, xp=xp)
        return self._scaled_confluent(a, b, xp) / a

    def _scaled_confluent(self, a: Array, b: Array, xp: Namespace) -> Array:
        """``a · f[a, a, b]`` for ``a, b > 0``: the series near ``a``, the quotient far."""
        gap = b - a
        ratio_minus_one = gap / a
        # The series in λ = log(b / a) converges for |λ| < 2π; its terms go
        # like (|p| |λ|)^k / k! too, hence the radius 1/|p| for large |p|.
        radius = min(1.0, 1.0 / abs(self.p))
        low = constant(math.expm1(-radius), a, xp)
        high = constant(math.expm1(radius), a, xp)
        near = (ratio_minus_one >= low) & (ratio_minus_one <= high)
        log_ratio_ = xp.log1p(xp.minimum(xp.maximum(ratio_minus_one, low), high))
        coefficients = truncated(_power_series(self.p), radius, is_single(a, xp))
        series = horner(coefficients, log_ratio_)
        close = self._shifted(a, 1) * series
        # (f[a, b] − f'(a)) · (a / (b − a)): the second factor is O(1) here.
        difference = self.divided_difference(a, b, xp=xp) - self.derivative(a, xp=xp)
        far = difference * (a / nonzero(gap, xp))
        return xp.where(near, close, far)

    def _shifted(self, x: Array, k: int) -> Array:
        """``x^(p − k)``, to about an ulp also where ``|log x|`` is large.

        ``p − k`` is rounded unless it is exact in binary (``p >= k/2``, by
        Sterbenz's lemma, or ``p`` dyadic enough); a rounded exponent costs
        ``|log x|`` ulps (40 ulps at ``x = 1e-18``), so then
        ``x^p / x^k`` by divisions, whose intermediates overflow only
        where the result does (``p < k``).
        """
        exponent = self.p - k
        if _exact_difference(self.p, k):
            return x**exponent
        result = x**self.p
        for _ in range(k):
            result = result / x
        return result

    def _at_positive(self, x, formula, at_zero, xp):
        positive = x > 0
        safe = xp.where(positive, x, constant(1.0, x, xp))
        return xp.where(positive, formula(safe), xp.full_like(x, at_zero))

    def _general_divided_difference(self, x, y, xp):
        """``f[x, y]`` for ``p`` not a closed form; see the class notes.

        With ``r = small / big`` and ``S(r, q) = (1 − r^q) / (1 − r)``,
        ``f[x, y] = big^(p−1) · S(r, p)`` (``p > 0``) or
        ``−(small^p / big) · S(r, −p)`` (``p < 0``), where ``big^(p−1)`` and
        ``small^p`` are maxima of powers of the inputs (vectors, when ``x``
        and ``y`` broadcast to a matrix): one power per eigenvalue, not per
        pair. ``S = expm1(|p| log1p(r − 1)) / (r − 1)`` from
        ``r − 1 = −|x − y| / big``, whose relative error ``eps`` is an absolute
        error ``eps (1 − r) / r`` in ``log r``: it costs ``S`` at most
        ``|p| eps r^(|p|−1)`` relative, a few ulps at every ``r`` for ``|p| > 1``.
        For ``|p| < 1`` it grows as ``r → 0``, so there, below ``r = 1/16``:
        the quotient ``(x^p − y^p) / (x − y)`` itself (``|p| >= 1/4``: the
        subtraction loses at most a factor ``1 / (1 − 16^(−1/4)) = 2``), or
        ``log r = log(small / big)`` below ``r = 1/2`` (``|p| < 1/4``, where
        ``r^|p|`` stays near 1 far down; one more logarithm per pair).
        """
        p = self.p
        q = abs(p)
        gap = xp.abs(x - y)
        big = xp.maximum(x, y)
        tiny = constant(xp.finfo(big.dtype).smallest_normal, big, xp)
        if p > 0:  # eigenvalues clamped at 0: big = 0 (both zero) gives r − 1 = 0.
            big = xp.maximum(big, tiny)
        ratio_minus_one = -gap / big
        if q > 1:
            # r = 0 (p > 1, a zero eigenvalue) as r = eps/2: r^p is negligible.
            floor = constant(float(xp.finfo(big.dtype).eps) / 2 - 1.0, big, xp)
            log_r = xp.log1p(xp.maximum(ratio_minus_one, floor))
        elif q >= 0.25:
            cut = constant(-15.0 / 16.0, big, xp)
            log_r = xp.log1p(xp.maximum(ratio_minus_one, cut))
        else:
            small = xp.minimum(x, y)
            if p > 0:
                small = xp.maximum(small, tiny)
            log_r = log_ratio(ratio_minus_one, small, big, xp)
        series = xp.expm1(q * capped(log_r, xp)) / capped(ratio_minus_one, xp)
        # At r = 1 the capped form gives expm1(−q eps²) / (−eps²), which is q
        # only while q eps² << 1: exactly q for any exponent (p = 1e300 gave
        # f[1, 1] = 2e31 in float64; float32 fails from |p| ~ 1e13).
        series = xp.where(gap == 0, constant(q, series, xp), series)
        if p > 1:
            # p − 1 is exact for p >= 1, and big^(p−1) = max(x^(p−1), y^(p−1)).
            return xp.maximum(x ** (p - 1.0), y ** (p - 1.0)) * series
        power_x, power_y = x**p, y**p
        result = (xp.maximum(power_x, power_y) * series) / big
        if p < 0:
            result = -result
        if 0.25 <= q < 1:
            # x^p − y^p has the sign of p (x − y): its magnitude over |x − y|.
            quotient = xp.abs(power_x - power_y) / xp.maximum(gap, tiny)
            far = ratio_minus_one < constant(-15.0 / 16.0, big, xp)
            result = xp.where(far, quotient if p > 0 else -quotient, result)
        if 0 < p < 1:  # both zero: f'(0) = inf
            result = xp.where(big == tiny, constant(math.inf, result, xp), result)
        return result


#: Exponents whose divided differences have short exact forms (no series).
_POWER_CLOSED_FORMS = (0.0, 1.0, 2.0, -1.0, 0.5, -0.5)


def _exact_difference(p: float, k: int) -> bool:
    """Whether ``p − k`` is exact in binary64 (so ``x ** (p − k)`` uses the true exponent).

    Knuth's TwoSum: the rounding error of ``p + (−k)``, computed exactly.
    """
    total = p - k
    back = total - p
    return (p - (total - back)) + (-k - back) == 0.0


def _right_limit(p: float, order: int) -> float:
    """The ``order``-th derivative (1 or 2) of ``λ^p`` at 0 from the right (``p > 0``)."""
    coefficient = p if order == 1 else p * (p - 1.0)
    if coefficient == 0.0 or p > order:
        return 0.0
    if p == order:
        return 1.0 if order == 1 else 2.0
    return math.inf if coefficient > 0 else -math.inf


def _power_series(p: float, terms: int = 40) -> tuple[float, ...]:
    """Taylor coefficients of ``K(λ) = p (p φ2(pλ) − φ2(λ)) / φ1(λ)²`` (see :class:`Power`).

    The numerator's coefficients are ``p (p^(k+1) − 1) / (k+2)!``, with
    ``p^(k+1) − 1`` by ``expm1`` where it can cancel, so that ``K``
    keeps its relative accuracy as ``p → 1`` (where ``K → 0``).
    """
    numerator = []
    log_p = math.log(abs(p))
    for k in range(terms):
        if p > 0 or (k + 1) % 2 == 0:
            power_minus_one = math.expm1((k + 1) * log_p)
        else:
            power_minus_one = -(abs(p) ** (k + 1)) - 1.0
        numerator.append(p * power_minus_one / math.factorial(k + 2))
    return ratio_series(numerator)


#: Taylor coefficients of ``−φ2(λ) / φ1(λ)²`` (the logarithm's ``f[a, a, b] · a²``).
_LOG_SERIES = ratio_series([-1.0 / math.factorial(k + 2) for k in range(40)])
_LOG_SINGLE = truncated(_LOG_SERIES, 1.0, single=True)
_LOG_DOUBLE = truncated(_LOG_SERIES, 1.0, single=False)


@dataclasses.dataclass(frozen=True)
class Log(SpectralFunction):
    """``f(λ) = log λ``, on eigenvalues raised to the floor (``domain = "positive"``).

    Notes
    -----
    ``f[x, y] = L(r) / big`` with ``L(r) = log(r) / (r − 1)`` from the
    same accurate ``r − 1`` and ``log r`` as :class:`Power`.
    ``f[a, a, b] = K(log(b / a)) / a²`` with ``K(λ) = −φ2(λ) / φ1(λ)²`` (a
    Taylor series) where ``|log(b / a)| <= 1``, ``(f[a, b] − 1/a) / (b − a)``
    farther apart.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Log
    >>> float(Log().divided_difference(np.float64(np.e), np.float64(1.0)))  # 1 / (e − 1)
    0.5819767068693265
    >>> float(Log().second_divided_difference(*np.float64([2.0, 2.0, 2.0])))  # f''(2) / 2
    -0.125
    """

    domain: ClassVar[str] = "positive"

    def value(self, x, /, *, xp=None):
        return _namespace(xp, x).log(x)

    def derivative(self, x, /, *, xp=None):
        return 1.0 / x

    def second_derivative(self, x, /, *, xp=None):
        return -1.0 / (x * x)

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        big = xp.maximum(x, y)
        small = xp.minimum(x, y)
        ratio_minus_one = -xp.abs(x - y) / big
        log_r = capped(log_ratio(ratio_minus_one, small, big, xp), xp)
        # L(r) = log(r) / (r − 1) in [1, 1/r] first: (r − 1)·big could underflow.
        return (log_r / capped(ratio_minus_one, xp)) / big

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        gap = y - x
        ratio_minus_one = gap / x
        low = constant(math.expm1(-1.0), x, xp)
        high = constant(math.expm1(1.0), x, xp)
        near = (ratio_minus_one >= low) & (ratio_minus_one <= high)
        log_r = xp.log1p(xp.minimum(xp.maximum(ratio_minus_one, low), high))
        close = horner(_LOG_SINGLE if is_single(x, xp) else _LOG_DOUBLE, log_r) / x / x
        far = (self.divided_difference(x, y, xp=xp) - 1.0 / x) / nonzero(gap, xp)
        return xp.where(near, close, far)


@dataclasses.dataclass(frozen=True)
class Exp(SpectralFunction):
    """``f(λ) = e^λ`` (``domain = "real"``): the matrix exponential.

    Notes
    -----
    ``f[x, y] = e^big · φ1(−h)`` with ``h = |x − y|`` and
    ``φ1(z) = expm1(z) / z``; ``f[a, a, b] = e^a φ2(b − a)`` with
    ``φ2(z) = (e^z − 1 − z) / z²`` (a Taylor series for ``|z| <= 1``).
    Both are formed as ``e^(m/2) · (e^(m/2) · ...)`` with ``m`` the larger
    argument, so they are finite wherever the result is, even where
    ``e^m`` itself overflows.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Exp
    >>> float(Exp().divided_difference(np.float64(1.0), np.float64(0.0)))  # e − 1
    1.71828182845904...
    >>> float(Exp().divided_difference(np.float64(710.0), np.float64(0.0)))  # e^710 / 710
    3.14647...e+305
    """

    def value(self, x, /, *, xp=None):
        return _namespace(xp, x).exp(x)

    def derivative(self, x, /, *, xp=None):
        return _namespace(xp, x).exp(x)

    def second_derivative(self, x, /, *, xp=None):
        return _namespace(xp, x).exp(x)

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        half_x, half_y = xp.exp(x * 0.5), xp.exp(y * 0.5)
        step = capped(-xp.abs(x - y), xp)
        half = xp.maximum(half_x, half_y)
        return half * (half * (xp.expm1(step) / step))

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        gap = y - x
        zero = constant(0.0, gap, xp)
        one = constant(1.0, gap, xp)
        # e^(x − m) φ2(gap) with m = max(x, y): φ2(gap) for gap <= 0,
        # e^(−gap) φ2(gap) for 0 < gap <= 1, (1 − e^(−gap)(1 + gap)) / gap² beyond.
        within = xp.minimum(gap, one)
        close = xp.exp(-xp.maximum(within, zero)) * phi2(within, xp)
        beyond = xp.maximum(gap, one)
        decay = xp.exp(-beyond)
        far = (-xp.expm1(-beyond) - beyond * decay) / (beyond * beyond)
        scaled = xp.where(gap > one, far, close)
        half = xp.exp(xp.maximum(x, y) * 0.5)
        return half * (half * scaled)


@dataclasses.dataclass(frozen=True)
class Clamp(SpectralFunction):
    """``f(λ) = max(λ, minimum)``: eigenvalue rectification (ReEig), ``domain = "real"``.

    ``Clamp(0.0)`` projects onto the positive semi-definite cone; ReEig
    layers of SPD networks use a small positive ``minimum`` (1e-4 is
    common). The derivative at ``λ == minimum`` is 0, as the gradient of
    ``torch.clamp(x, min=minimum)`` (and of ``relu`` at 0) there;
    ``f'' = 0``, also at the kink, as autograd frameworks have it.

    Parameters
    ----------
    minimum : float
        The floor, a finite real Python or NumPy scalar.

    Notes
    -----
    ``f[x, y]`` is the difference quotient itself, exact in floating point
    for a piecewise-linear function: 1 (both above the floor), 0 (both
    below), ``(big − minimum) / (big − small)`` across. Second divided
    differences are nonzero only for three points around the floor, each a
    product and quotient of differences (no cancellation).

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Clamp
    >>> reeig = Clamp(1e-4)
    >>> reeig.value(np.array([2.0, 1e-6]))
    array([2.e+00, 1.e-04])
    >>> reeig.divided_difference(np.array([3.0, 3.0, 3.0]), np.array([1.0, 0.0, 3.0]))
    array([1.        , 0.99996667, 1.        ])
    """

    minimum: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "minimum", check_exponent(self.minimum, "minimum"))

    def value(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        return xp.maximum(x, constant(self.minimum, x, xp))

    def derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        return xp.astype(x > self.minimum, x.dtype)

    def second_derivative(self, x, /, *, xp=None):
        return _namespace(xp, x).zeros_like(x)

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        gap = x - y
        quotient = (self.value(x, xp=xp) - self.value(y, xp=xp)) / nonzero(gap, xp)
        return xp.where(gap == 0, self.derivative(x, xp=xp), quotient)

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        xp = _namespace(xp, x, y, z)
        floor = constant(self.minimum, x, xp)
        return hinge_second_difference(x, y, z, floor, 0.0, xp)

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        return self.second_divided_difference(x, x, y, xp=xp)


@dataclasses.dataclass(frozen=True)
class Abs(SpectralFunction):
    """``f(λ) = |λ|`` (``domain = "real"``): with :func:`svdpi.spectral_map`, ``(A²)^(1/2)``.

    ``f'(0) = 0`` and ``f''(0) = 0``, as ``torch.abs`` differentiates; the
    second divided differences at ties at 0 follow from that ``f'(0)``.

    Notes
    -----
    ``f[x, y] = (|x| − |y|) / (x − y)``: exactly ±1 for arguments of one
    sign, and no cancellation across 0 (``x − y`` adds magnitudes).
    ``f[x, y, z] = 2 g[x, y, z]`` of the hinge ``g(t) = max(t, 0)``.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Abs
    >>> Abs().divided_difference(np.array([2.0, 1.0, -1.0]), np.array([1.0, -1.0, -1.0]))
    array([ 1.,  0., -1.])
    >>> float(Abs().second_divided_difference(*np.float64([1.0, 0.0, -1.0])))
    1.0
    """

    def value(self, x, /, *, xp=None):
        return _namespace(xp, x).abs(x)

    def derivative(self, x, /, *, xp=None):
        return _sign(x, _namespace(xp, x))

    def second_derivative(self, x, /, *, xp=None):
        return _namespace(xp, x).zeros_like(x)

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        gap = x - y
        quotient = (xp.abs(x) - xp.abs(y)) / nonzero(gap, xp)
        return xp.where(gap == 0, _sign(x, xp), quotient)

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        xp = _namespace(xp, x, y, z)
        return 2.0 * hinge_second_difference(x, y, z, constant(0.0, x, xp), 0.5, xp)

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        return self.second_divided_difference(x, x, y, xp=xp)


@dataclasses.dataclass(frozen=True)
class Softplus(SpectralFunction):
    """``f(λ) = log(1 + e^(βλ)) / β`` (``domain = "real"``), a smooth ReEig.

    As ``torch.nn.functional.softplus(x, beta)``, but exact everywhere:
    torch switches to the identity above ``βx > threshold`` (20), a jump of
    about ``e^(−20) / β``; here no threshold is needed, nothing overflows.

    Parameters
    ----------
    beta : float, default 1.0
        The sharpness, a positive finite real Python or NumPy scalar.

    Notes
    -----
    With ``u, v`` the scaled arguments ``βx, βy``, ``h = |u − v|`` and
    ``σ`` the logistic function, ``f[x, y] = (log1p(w) / w) · σ(min(u, v)) ·
    φ1(h)`` with ``w = σ(min(u, v)) · expm1(h) >= 0`` (a product of
    well-conditioned factors) for ``h <= 4``; beyond, the quotient of
    ``max(t, 0) + log1p(e^(−|t|))`` taken part by part. ``f[a, a, b]``:
    ``f''`` is even, so it is evaluated at ``(−a, −b)`` where ``a + b > 0``,
    then by the generic scheme of :class:`Custom` on the exact ``f''``
    (Gauss–Kronrod near ``a``, the quotient of the exact ``f[a, b]``
    farther).

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Softplus
    >>> float(Softplus().value(np.float64(0.0)))  # log 2
    0.6931471805599453
    >>> float(Softplus().divided_difference(np.float64(0.0), np.float64(0.0)))  # σ(0)
    0.5
    >>> float(Softplus(beta=2.0).divided_difference(np.float64(1e3), np.float64(0.0)))
    0.99965...
    """

    beta: float = 1.0

    def __post_init__(self) -> None:
        beta = check_exponent(self.beta, "beta")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        object.__setattr__(self, "beta", beta)

    def _scaled(self, x: Array) -> Array:
        return x if self.beta == 1.0 else x * self.beta

    def value(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        u = self._scaled(x)
        result = xp.maximum(u, constant(0.0, u, xp)) + xp.log1p(xp.exp(-xp.abs(u)))
        return result if self.beta == 1.0 else result / self.beta

    def derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        return _logistic(self._scaled(x), xp)

    def second_derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        decay = xp.exp(-xp.abs(self._scaled(x)))
        result = decay / ((1.0 + decay) * (1.0 + decay))
        return result if self.beta == 1.0 else result * self.beta

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        return _softplus_divided_difference(self._scaled(x), self._scaled(y), xp)

    def confluent_divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        u, v = self._scaled(x), self._scaled(y)
        flip = (u + v) > 0
        u, v = xp.where(flip, -u, u), xp.where(flip, -v, v)
        first = _softplus_divided_difference(u, v, xp)
        result = _quadrature.confluent_divided_difference(
            lambda t: _logistic(t, xp), None, u, v, first,
            xp.abs(first) * (4 * _eps(first, xp)), xp,
            second_derivative_at=lambda a, offset: _logistic_slope_at(a, offset, xp),
            switch=_SOFTPLUS_RULE_WIDTH,
        )  # fmt: skip
        return result if self.beta == 1.0 else result * self.beta


#: Where the Kronrod rule takes over ``f[a, a, b]`` of the unit softplus: ``σ'`` is
#: analytic within ``π`` of the real axis, so over ``|b − a| <= 1/2`` the 7-point
#: rule is exact to rounding (Bernstein ellipse ``ρ > 25``, error ``< ρ^−12``), and
#: beyond, the quotient loses at most ``2 / (|b − a| (1 − σ(a))) < 10`` ulps
#: (``σ(a) <= σ(1/4)`` after the reflection to ``a + b <= 0``).
_SOFTPLUS_RULE_WIDTH = 0.5


def _logistic_slope_at(start: Array, offset: Array, xp: Namespace) -> Array:
    """``σ'(t) = q / (1 + q)²``, ``q = e^(−|t|)``, at ``t = start + offset``, unrounded.

    ``e^t = e^start · e^offset``: the offset is small next to ``start`` where
    it matters, and ``start + offset`` rounded to ``start``'s grid would cost
    ``|start|`` ulps. The arguments of ``exp`` are capped at half the
    logarithm of the largest float (no overflow); the capped lanes are far
    from ``start``, where the caller takes the quotient instead.
    """
    cap = constant(math.log(float(xp.finfo(start.dtype).max)) / 2 - 1, start, xp)
    growth = xp.exp(xp.minimum(start, cap)) * xp.exp(xp.minimum(offset, cap))
    one = constant(1.0, growth, xp)
    decay = xp.where(growth > one, one / xp.maximum(growth, one), growth)
    return decay / ((1.0 + decay) * (1.0 + decay))


def _logistic(u: Array, xp: Namespace) -> Array:
    """``σ(u) = 1 / (1 + e^(−u))`` without overflow."""
    decay = xp.exp(-xp.abs(u))
    return xp.where(u >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def _softplus_divided_difference(u: Array, v: Array, xp: Namespace) -> Array:
    """``sp[u, v]`` of ``sp(t) = log(1 + e^t)``; see :class:`Softplus`."""
    # Close (|u − v| <= 4): sp(big) − sp(small) = log1p(σ(small) · expm1(h)).
    logistic_small = xp.minimum(_logistic(u, xp), _logistic(v, xp))
    bound = constant(4.0, u, xp)
    tiny = constant(xp.finfo(u.dtype).smallest_normal, u, xp)
    gap = u - v
    step = xp.maximum(xp.minimum(xp.abs(gap), bound), tiny)
    growth = xp.expm1(step)
    w = xp.maximum(logistic_small * growth, tiny)
    close = (xp.log1p(w) / w) * logistic_small * (growth / step)
    # Far: (relu(u) − relu(v) + l(u) − l(v)) / (u − v), l(t) = log1p(e^(−|t|)) <= log 2.
    zero = constant(0.0, u, xp)
    relu = xp.maximum(u, zero) - xp.maximum(v, zero)
    tail = xp.log1p(xp.exp(-xp.abs(u))) - xp.log1p(xp.exp(-xp.abs(v)))
    far = (relu + tail) / nonzero(gap, xp)
    return xp.where(xp.abs(gap) > bound, far, close)


@dataclasses.dataclass(frozen=True, eq=False)
class Custom(SpectralFunction):
    """A user's function, given as callables on arrays: ``f``, ``f'`` and optionally ``f''``.

    Each callable takes an array of the namespace in use and returns one of
    the same shape (a framework's own functions, ``torch.tanh``, or code
    written against ``array_api_compat.array_namespace(x)``). Divided
    differences come from a generic scheme accurate to about 1e-13 relative
    in float64 at every gap (see :mod:`svdpi._quadrature` and the theory
    page); second divided differences, for second derivatives of a spectral
    map, need ``d2f``. Two ``Custom`` are equal when they hold the same
    callable objects and domain.

    Parameters
    ----------
    f : callable
        ``f(x)``, elementwise.
    df : callable
        ``f'(x)``, elementwise.
    d2f : callable, optional
        ``f''(x)``, elementwise; without it, second divided differences raise
        ``NotImplementedError``.
    domain : {"real", "nonnegative", "positive"}, default "real"
        Where ``f`` is applied (see :class:`SpectralFunction`).

    Notes
    -----
    The scheme assumes that ``f`` is evaluated to about one ulp and that
    ``f'`` (and ``f''``) are smooth between the points compared: near a
    kink of ``f'`` its accuracy is that of the difference quotient. For a
    function svdpi has built in, the built-in is faster and exact.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Custom
    >>> tanh = Custom(np.tanh, lambda x: 1 / np.cosh(x) ** 2, domain="real")
    >>> tanh
    Custom(f=tanh, df=<lambda>, d2f=None, domain='real')
    >>> x = np.array([0.5, 0.5])
    >>> tanh.divided_difference(x, x + np.array([1e-9, 0.0]))  # ≈ 1 / cosh(0.5)²
    array([0.78644773, 0.78644773])
    """

    f: Callable[[Array], Array]
    df: Callable[[Array], Array]
    d2f: Callable[[Array], Array] | None = None
    domain: str = "real"  # type: ignore[misc]

    def __post_init__(self) -> None:
        for name in ("f", "df"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable, got {getattr(self, name)!r}")
        if self.d2f is not None and not callable(self.d2f):
            raise TypeError(f"d2f must be callable or None, got {self.d2f!r}")
        if not isinstance(self.domain, str) or self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Custom):
            return NotImplemented
        return (
            self.f is other.f
            and self.df is other.df
            and self.d2f is other.d2f
            and self.domain == other.domain
        )

    def __hash__(self) -> int:
        return hash((Custom, id(self.f), id(self.df), id(self.d2f), self.domain))

    def __repr__(self) -> str:
        d2f = "None" if self.d2f is None else _callable_name(self.d2f)
        return (
            f"Custom(f={_callable_name(self.f)}, df={_callable_name(self.df)}, d2f={d2f}, "
            f"domain={self.domain!r})"
        )

    def value(self, x, /, *, xp=None):
        return self.f(x)

    def derivative(self, x, /, *, xp=None):
        return self.df(x)

    def second_derivative(self, x, /, *, xp=None):
        if self.d2f is None:
            raise NotImplementedError(
                f"{self!r} has no d2f: second divided differences (second derivatives of "
                "a spectral map) need f''; pass it as Custom(f, df, d2f)"
            )
        return self.d2f(x)


def _callable_name(function: Any) -> str:
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) else repr(function)


__all__ = [
    "DOMAINS",
    "Abs",
    "Clamp",
    "Custom",
    "Exp",
    "Log",
    "Power",
    "Softplus",
    "SpectralFunction",
]
