"""Scalar functions applied to the eigenvalues of a symmetric matrix (spectral functions).

A :class:`SpectralFunction` is what :func:`svdpi.spectral_map` applies to the
eigenvalues: ``F(A) = V diag(f(λ)) Vᵀ``. Besides the value it gives
everything the derivatives of ``F`` need, evaluated elementwise on arrays of
any array API library:

* ``derivative`` and ``second_derivative``: ``f'`` and ``f''``;
* ``divided_difference``: ``f[x, y] = (f(x) − f(y)) / (x − y)``, ``f'(x)``
  where ``x == y``, the entries of the Daleckii–Krein kernel;
* ``second_divided_difference``: ``f[x, y, z]``, the entries of the second
  derivative of ``F``;
* ``domain``: where ``f`` is applied (see :class:`SpectralFunction`).

Divided differences are the whole difficulty: ``(f(x) − f(y)) / (x − y)``
as written loses every digit when ``x`` and ``y`` are close, which is exactly
where eigenvalue-based layers live (repeated and clustered eigenvalues). The
built-ins evaluate them in closed forms free of cancellation; a user's
function (:class:`Custom`, or a subclass that defines only ``value`` and
``derivative``) goes through a generic scheme.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from array_api_compat import array_namespace

from ._compat import array_device
from ._typing import Array, Namespace
from ._validation import check_exponent

#: The values of :attr:`SpectralFunction.domain`.
DOMAINS = ("real", "nonnegative", "positive")


def _namespace(xp: Namespace | None, *arrays: Array) -> Namespace:
    return array_namespace(*arrays) if xp is None else xp


class SpectralFunction:
    """A scalar function ``f`` applied to the eigenvalues of a symmetric matrix.

    Subclasses are frozen dataclasses (hashable and compared by value, so a
    function is a constant to ``torch.compile`` and a static argument to
    ``jax.jit``). Every method is elementwise and takes arrays of one array
    API namespace, broadcast against each other, already inside
    :attr:`domain`.

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
        """``f[x, y] = (f(x) − f(y)) / (x − y)``, and ``f'(x)`` where ``x == y``."""
        raise NotImplementedError(f"{type(self).__name__} does not define divided_difference")

    def second_divided_difference(
        self, x: Array, y: Array, z: Array, /, *, xp: Namespace | None = None
    ) -> Array:
        """``f[x, y, z] = (f[x, y] − f[y, z]) / (x − z)``, with its confluent limits.

        Symmetric in its arguments; ``f[x, x, z] = (f'(x) − f[x, z]) / (x − z)``
        and ``f[x, x, x] = f''(x) / 2``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define second_divided_difference, which "
            "second derivatives of a spectral map need"
        )


# ------------------------------------------------------------------ helpers


def _log_ratio(ratio_minus_one: Array, small: Array, big: Array, xp: Namespace) -> Array:
    """``log(small / big)`` accurately, given ``r − 1 = −|big − small| / big`` exactly.

    ``log1p(r − 1)`` for ``r >= 1/2`` (where ``big − small`` is exact), and
    ``log(small / big)`` below, which keeps the relative accuracy of a small
    ``r`` that ``1 + (r − 1)`` has lost. ``log1p`` never sees −1.
    """
    # An array, not a Python -0.5: array-api-compat's scalar promotion
    # stops torch.compile(fullgraph=True).
    half = xp.asarray(-0.5, dtype=big.dtype, device=array_device(big))
    far = ratio_minus_one < half
    return xp.where(far, xp.log(small / big), xp.log1p(xp.maximum(ratio_minus_one, half)))


def _capped(x: Array, xp: Namespace) -> Array:
    """``min(x, −eps²)``: turns an exact 0 (equal arguments) into a harmless tiny negative."""
    eps = xp.finfo(x.dtype).eps
    cap = xp.asarray(-(eps * eps), dtype=x.dtype, device=array_device(x))
    return xp.minimum(x, cap)


# ----------------------------------------------------------------- built-ins


@dataclasses.dataclass(frozen=True)
class Power(SpectralFunction):
    """``f(λ) = λ^p`` for any finite real ``p``.

    ``p > 0``: eigenvalues are clamped at 0 (``domain = "nonnegative"``, so
    ``0^p = 0``); ``p < 0``: raised to the eigenvalue floor (``"positive"``);
    ``p = 0``: the constant 1 (the projector on the kept eigenpairs when
    masked).

    Divided differences, with ``big = max(x, y)``, ``r = min(x, y) / big``
    and ``S(r, q) = (1 − r^q) / (1 − r)`` from ``r − 1 = −|x − y| / big``
    (never ``1 − r`` by subtraction) and an accurate ``log r``:
    ``big^(p−1) · S(r, p)`` for ``p > 0`` and ``−(small^p / big) · S(r, −p)``
    for ``p < 0`` (``r`` is never raised to a negative power, so nothing
    overflows that the values themselves do not).

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Power
    >>> sqrt = Power(0.5)
    >>> float(sqrt.divided_difference(np.float64(4.0), np.float64(1.0)))  # (2 − 1) / (4 − 1)
    0.3333333333333333
    >>> float(sqrt.divided_difference(np.float64(4.0), np.float64(4.0)))  # f'(4)
    0.25
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
        return x**self.p

    def derivative(self, x, /, *, xp=None):
        xp = _namespace(xp, x)
        if self.p == 0.0:
            return xp.zeros_like(x)
        if self.p < 0:
            return self.p * x ** (self.p - 1.0)
        # f'(0) from the right: 0 for p > 1, 1 for p = 1, inf for 0 < p < 1.
        positive = x > 0
        safe = xp.where(positive, x, xp.ones_like(x))
        at_zero = xp.full_like(x, self._derivative_at_zero())
        return xp.where(positive, self.p * safe ** (self.p - 1.0), at_zero)

    def _derivative_at_zero(self) -> float:
        if self.p > 1.0:
            return 0.0
        return 1.0 if self.p == 1.0 else float("inf")

    def divided_difference(self, x, y, /, *, xp=None):
        xp = _namespace(xp, x, y)
        if self.p == 0.0:
            return xp.zeros_like(x * y)
        big = xp.maximum(x, y)
        small = xp.minimum(x, y)
        difference = xp.abs(x - y)
        if self.p > 0:  # eigenvalues clamped at 0, so big or small may be 0
            # A zero argument: r = 0 takes the placeholder 1 in the logarithm
            # and its limit S = 1 below; big = 0 (both zero): f'(0).
            some_zero = small == 0
            both_zero = big == 0
            big = xp.where(both_zero, xp.ones_like(big), big)
            small = xp.where(some_zero, big, small)
        ratio_minus_one = -difference / big
        log_ratio = _capped(_log_ratio(ratio_minus_one, small, big, xp), xp)
        series = xp.expm1(abs(self.p) * log_ratio) / _capped(ratio_minus_one, xp)  # S(r, |p|)
        if self.p > 0:
            series = xp.where(some_zero, xp.ones_like(series), series)
            result = big ** (self.p - 1.0) * series
            at_zero = xp.full_like(result, self._derivative_at_zero())
            return xp.where(both_zero, at_zero, result)
        # small^p / big with small^p = the larger of x^p, y^p (p < 0).
        return -(xp.maximum(x**self.p, y**self.p) / big) * series


@dataclasses.dataclass(frozen=True)
class Log(SpectralFunction):
    """``f(λ) = log λ``, on eigenvalues raised to the floor (``domain = "positive"``).

    ``f[x, y] = L(r) / big`` with ``L(r) = log(r) / (r − 1)`` from the
    same accurate ``r − 1`` and ``log r`` as :class:`Power`.

    Examples
    --------
    >>> import numpy as np
    >>> from svdpi.functions import Log
    >>> float(Log().divided_difference(np.float64(np.e), np.float64(1.0)))  # 1 / (e − 1)
    0.5819767068693265
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
        log_ratio = _capped(_log_ratio(ratio_minus_one, small, big, xp), xp)
        return log_ratio / (_capped(ratio_minus_one, xp) * big)


__all__ = ["DOMAINS", "Log", "Power", "SpectralFunction"]
