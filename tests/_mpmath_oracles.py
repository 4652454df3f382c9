"""High-precision oracles for divided differences (mpmath, 80 digits), for any test module.

``divided_difference(function, points)`` evaluates ``f[x0, ..., xk]`` (k = 1
or 2) at the exact binary values of ``points`` (Python or NumPy floats of
either precision), by the recursive definition in 80-digit arithmetic, with
the confluent limits taken from the function's own derivatives:
``f[x, x] = f'(x)``, ``f[x, x, z] = (f'(x) − f[x, z]) / (x − z)``,
``f[x, x, x] = f''(x) / 2``. The precision starts at 80 digits and is
doubled until two successive precisions agree to 40 digits (80 digits leave
more than 45 after two nested differences at a relative gap of 1e-16, but
not where ``f`` is much larger than ``f''``).

A function is an :class:`MpFunction`: its value and first two derivatives as
callables on ``mpmath.mpf``. The built-ins of :mod:`svdpi.functions` have
their counterparts in :func:`oracle_for`; results are cached, so a test
module can ask for the same points repeatedly.

``relative_error(actual, exact)`` measures ``|actual − exact| / |exact|`` in
high precision (``inf`` and NaN are compared exactly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import mpmath

DIGITS = 80


@dataclass(frozen=True)
class MpFunction:
    """A scalar function with its first two derivatives, on ``mpmath.mpf``."""

    name: str
    f: Callable[[mpmath.mpf], mpmath.mpf]
    df: Callable[[mpmath.mpf], mpmath.mpf]
    d2f: Callable[[mpmath.mpf], mpmath.mpf]


def _mpf(x: float) -> mpmath.mpf:
    return mpmath.mpf(float(x))


def _exact(function: MpFunction, points: tuple[float, ...]) -> mpmath.mpf:
    values = sorted((_mpf(p) for p in points), reverse=True)
    if len(values) == 2:
        x, y = values
        return function.df(x) if x == y else (function.f(x) - function.f(y)) / (x - y)
    hi, mid, lo = values
    if hi == lo:
        return function.d2f(hi) / 2

    def first(a, b):
        return function.df(a) if a == b else (function.f(a) - function.f(b)) / (a - b)

    return (first(hi, mid) - first(mid, lo)) / (hi - lo)


@functools.cache
def _cached(function: MpFunction, points: tuple[float, ...]) -> mpmath.mpf:
    # 80 digits, doubled until two precisions agree to 40 digits: nested
    # differences of a function far larger than its second derivative
    # (softplus at 90: f ≈ 90, f'' ≈ 1e-39) can lose more than 40.
    digits = DIGITS
    with mpmath.workdps(digits):
        previous = _exact(function, points)
    while True:
        digits *= 2
        with mpmath.workdps(digits):
            current = _exact(function, points)
            if current == previous or abs(current - previous) <= abs(current) * mpmath.mpf(10) ** (
                -40
            ):
                return current
        if digits > 1280:
            raise ArithmeticError(f"{function.name}{points}: no 40 digits at {digits} digits")
        previous = current


def divided_difference(function: MpFunction, *points: float) -> mpmath.mpf:
    """``f[points]`` (two or three points) in 80 digits; see the module docstring."""
    if len(points) not in (2, 3):
        raise ValueError(f"two or three points, got {len(points)}")
    return _cached(function, tuple(float(p) for p in points))


def relative_error(actual: float, exact: mpmath.mpf) -> float:
    """``|actual − exact| / |exact|`` (absolute where ``exact == 0``; 0 for equal infinities)."""
    actual = float(actual)
    if math.isnan(actual):
        return math.inf
    if mpmath.isinf(exact) or math.isinf(actual):
        return 0.0 if mpmath.mpf(actual) == exact else math.inf
    with mpmath.workdps(DIGITS):
        error = abs(mpmath.mpf(actual) - exact)
        return float(error / abs(exact)) if exact != 0 else float(error)


# ---------------------------------------------------------------- built-ins


@functools.cache
def power(p: float) -> MpFunction:
    """``x^p`` (``f(0)`` and its derivatives at 0 as their limits from the right)."""
    p = mpmath.mpf(p)

    def derivative(order):
        def at(x):
            coefficient = mpmath.fprod(p - k for k in range(order))
            if x == 0:
                if coefficient == 0 or p > order:
                    return mpmath.mpf(0)
                if p == order:
                    return mpmath.factorial(order)
                return mpmath.inf if coefficient > 0 else -mpmath.inf
            return coefficient * x ** (p - order)

        return at

    return MpFunction(f"power({float(p)})", derivative(0), derivative(1), derivative(2))


@functools.cache
def logarithm() -> MpFunction:
    return MpFunction("log", mpmath.log, lambda x: 1 / x, lambda x: -1 / x**2)


@functools.cache
def exponential() -> MpFunction:
    return MpFunction("exp", mpmath.exp, mpmath.exp, mpmath.exp)


@functools.cache
def clamp(minimum: float) -> MpFunction:
    """``max(x, minimum)`` with ``f'(minimum) = 0`` (torch.clamp's gradient) and ``f'' = 0``."""
    m = mpmath.mpf(minimum)
    return MpFunction(
        f"clamp({minimum})",
        lambda x: max(x, m),
        lambda x: mpmath.mpf(1 if x > m else 0),
        lambda x: mpmath.mpf(0),
    )


@functools.cache
def absolute() -> MpFunction:
    """``|x|`` with ``f'(0) = 0`` and ``f'' = 0`` (torch.abs's derivatives)."""
    return MpFunction("abs", abs, mpmath.sign, lambda x: mpmath.mpf(0))


@functools.cache
def softplus(beta: float = 1.0) -> MpFunction:
    b = mpmath.mpf(beta)

    def logistic(x):
        return 1 / (1 + mpmath.exp(-b * x))

    return MpFunction(
        f"softplus({beta})",
        lambda x: mpmath.log1p(mpmath.exp(b * x)) / b,
        logistic,
        lambda x: b * logistic(x) * (1 - logistic(x)),
    )


def oracle_for(function) -> MpFunction:
    """The oracle of a built-in :class:`svdpi.functions.SpectralFunction`."""
    from svdpi import functions

    if isinstance(function, functions.Power):
        return power(function.p)
    if isinstance(function, functions.Log):
        return logarithm()
    if isinstance(function, functions.Exp):
        return exponential()
    if isinstance(function, functions.Clamp):
        return clamp(function.minimum)
    if isinstance(function, functions.Abs):
        return absolute()
    if isinstance(function, functions.Softplus):
        return softplus(function.beta)
    raise TypeError(f"no oracle for {function!r}")
