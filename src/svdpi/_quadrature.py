"""The generic divided differences of a function known only through ``f``, ``f'`` and ``f''``.

Used by :class:`svdpi.functions.Custom` and by any
:class:`~svdpi.functions.SpectralFunction` subclass that defines ``value`` and
``derivative`` but no closed form. Two estimates are computed for every
entry, each with an estimate of its own error, and the better one is kept
(a ``where``; everything is vectorized and branch-free):

* the difference quotient ``(f(x) − f(y)) / (x − y)``, whose error is the
  rounding of ``f(x)`` and ``f(y)`` amplified by the subtraction,
  ``eps · (|f(x)| + |f(y)|) / |x − y|``: a bound that can be computed,
  since ``f(x)`` and ``f(y)`` are known (assuming ``f`` is evaluated to
  about an ulp, as library functions are);
* the integral ``f[x, y] = ∫₀¹ f'(y + t (x − y)) dt`` by the 7-point
  Gauss–Kronrod rule, whose embedded 3-point Gauss rule gives an error
  estimate: ``|K7 − G3| = δ·|K7|`` is about the Gauss rule's error, and for
  an integrand analytic around the interval the Kronrod rule's error is of
  order ``δ²·|K7|`` (its degree of exactness, 11, is about twice the Gauss
  rule's, 5); the estimate used is ``|K7 − G3| · min(1, 10 δ)``.

The quotient wins at large gaps, the rule at small ones. The switch needs no
assumption about the scale on which ``f`` varies (which a black box does not
reveal): it compares the two estimates entry by entry, so ``exp(100 x)`` is
switched at a hundred times smaller gaps than ``exp(x)``. Relative to the
scale ``s`` of ``f`` (the distance from the interval to the nearest
singularity of ``f`` in the complex plane, or ``1/c`` for ``e^(cx)``), the
Gauss rule's error is about ``(|x − y| / s)^6 · |f'|`` and the quotient's
``eps · |f| / |x − y|``; they cross near ``|x − y| ≈ eps^(1/7) · s``
(6e-3 · s in float64, 0.1 · s in float32), and the model ``10 δ²`` moves the
switch further out, where the quotient's error is smaller. The rule is taken
only where it also agrees with the quotient within 8 times the quotient's
bound, so two rules that agree on a wrong value (an integrand concentrated
between their nodes) lose to the quotient, whose bound is rigorous.

What is assumed, and documented for users, is that ``f`` is evaluated to a
few ulps and that ``f'`` is smooth between the two points (true for
functions analytic near the interval; a kink of ``f'`` between two close
points defeats any rule, and then the quotient's own accuracy is what one
gets). The nodes ``y + t (x − y)`` are rounded to the floating-point grid,
which costs about ``|x| · |f''/f'| · eps`` relative: nothing in float64 for
the functions of SPD networks, but ``exp`` at ``x = 30`` in float32 loses
about 30 ulps there, which is why the built-ins use closed forms.

Second divided differences go through ``C(a, b) = f[a, a, b]``, the same
pair of estimates one order up: ``∫₀¹ (1 − s) f''(a + s (b − a)) ds`` by the
same rule, against the quotient ``(f[a, b] − f'(a)) / (b − a)``; then
:func:`svdpi._divided_differences.from_confluent` at the middle point.
"""

from __future__ import annotations

from collections.abc import Callable

from ._divided_differences import constant, nonzero
from ._typing import Array, Namespace

Elementwise = Callable[[Array], Array]
#: ``f''(a + offset)`` from ``(a, offset)``; see :func:`confluent_divided_difference`.
Shifted = Callable[[Array, Array], Array]

# The 7-point Gauss–Kronrod rule on [-1, 1] (nodes ±t, then 0), with the
# weights of the embedded 3-point Gauss rule (±√(3/5), 0); checked against
# polynomial exactness (degrees 11 and 5) in the tests.
KRONROD_NODES = (
    0.9604912687080202834235071,
    0.7745966692414833770358531,
    0.4342437493468025580020715,
)
KRONROD_WEIGHTS = (
    0.1046562260264672651938239,
    0.2684880898683334407285693,
    0.4013974147759622229050518,
)
KRONROD_CENTER_WEIGHT = 0.4509165386584741423451101
GAUSS_WEIGHTS = (0.0, 5.0 / 9.0, 0.0)
GAUSS_CENTER_WEIGHT = 8.0 / 9.0


def _kronrod_error(kronrod: Array, gauss: Array, xp: Namespace) -> Array:
    """``|K − G| · min(1, 10 |K − G| / |K|)``: see the module docstring."""
    difference = xp.abs(kronrod - gauss)
    scaled = 10.0 * difference
    tiny = constant(xp.finfo(difference.dtype).smallest_normal, difference, xp)
    # A ratio in [0, 1] without a division that could overflow or be 0/0.
    ratio = scaled / xp.maximum(xp.maximum(xp.abs(kronrod), scaled), tiny)
    return difference * ratio


def _rule(integrand: Callable[[float], Array], xp: Namespace) -> tuple[Array, Array]:
    """The Kronrod mean of ``integrand(t)`` over ``t`` in [-1, 1], and its error estimate.

    Mirror nodes are added before they are weighted, so an integrand that
    is mirrored (``t → −t``) gives bitwise the same result.
    """
    middle = integrand(0.0)
    kronrod = middle * (KRONROD_CENTER_WEIGHT / 2)
    gauss = middle * (GAUSS_CENTER_WEIGHT / 2)
    for t, kronrod_weight, gauss_weight in zip(
        KRONROD_NODES, KRONROD_WEIGHTS, GAUSS_WEIGHTS, strict=True
    ):
        pair = integrand(t) + integrand(-t)
        kronrod = kronrod + pair * (kronrod_weight / 2)
        if gauss_weight:
            gauss = gauss + pair * (gauss_weight / 2)
    eps = float(xp.finfo(kronrod.dtype).eps)
    return kronrod, _kronrod_error(kronrod, gauss, xp) + xp.abs(kronrod) * eps


def _better(
    rule: Array, rule_error: Array, quotient: Array, quotient_error: Array, xp: Namespace
) -> tuple[Array, Array]:
    """The estimate with the smaller error, and that error.

    Where the quotient claims to be exact to 64 ulps, the rule must also
    agree with it (within 8 times its bound): two rules that agree on a
    value their nodes got wrong (an integrand concentrated between them)
    lose to a quotient that is right. The check is not applied where the
    quotient claims less, since its bound assumes ``f'`` to an ulp relative,
    which a user's ``f'`` near one of its zeros (``log x + 1`` near ``1/e``)
    is not.
    """
    eps = float(xp.finfo(quotient.dtype).eps)
    accurate = quotient_error <= xp.abs(quotient) * (64 * eps)
    inconsistent = xp.abs(rule - quotient) > quotient_error * 8.0
    use_rule = (rule_error <= quotient_error) & ~(accurate & inconsistent)
    return xp.where(use_rule, rule, quotient), xp.where(use_rule, rule_error, quotient_error)


def divided_difference(
    value: Elementwise, derivative: Elementwise, x: Array, y: Array, xp: Namespace
) -> tuple[Array, Array]:
    """``f[x, y]`` and an estimate of its absolute error, from ``f`` and ``f'``.

    Exactly symmetric in ``x`` and ``y``.
    """
    eps = float(xp.finfo(x.dtype).eps)
    fx = value(x)
    fy = value(y)
    gap = x - y
    denominator = nonzero(gap, xp)
    quotient = (fx - fy) / denominator
    inf = constant(float("inf"), quotient, xp)
    quotient_error = (
        xp.where(gap == 0, inf, (xp.abs(fx) + xp.abs(fy)) * eps / xp.abs(denominator))
        + xp.abs(quotient) * eps
    )
    # Halves first: (x + y) / 2 and (x − y) / 2 overflow only if x or y does.
    center = x * 0.5 + y * 0.5
    half_width = x * 0.5 - y * 0.5
    rule, rule_error = _rule(lambda t: derivative(center + half_width * t), xp)
    return _better(rule, rule_error, quotient, quotient_error, xp)


def confluent_divided_difference(
    derivative: Elementwise,
    second_derivative: Elementwise | None,
    a: Array,
    b: Array,
    first: Array,
    first_error: Array,
    xp: Namespace,
    *,
    second_derivative_at: Shifted | None = None,
    switch: float | None = None,
) -> Array:
    """``f[a, a, b]`` from ``f''`` (near) or from ``first = f[a, b]`` and ``f'(a)`` (far).

    ``first_error`` is an estimate of the absolute error of ``first``. The
    rule evaluates ``f''`` at ``a + s (b − a)``, ``s`` in (0, 1); a built-in
    that can evaluate ``f''(a + offset)`` without rounding ``a + offset``
    passes ``second_derivative_at(a, offset)`` instead of
    ``second_derivative``. A built-in that knows the scale on which ``f''``
    varies passes ``switch``: the rule for ``|b − a| <= switch``, the
    quotient beyond, instead of the comparison of estimates.
    """
    eps = float(xp.finfo(a.dtype).eps)
    gap = b - a
    if second_derivative_at is None:

        def second_derivative_at(start: Array, offset: Array) -> Array:
            return second_derivative(start + offset)

    # ∫₀¹ (1 − s) f''(a + s·gap) ds with s = (1 + t) / 2.
    rule, rule_error = _rule(
        lambda t: second_derivative_at(a, gap * ((1.0 + t) / 2)) * ((1.0 - t) / 2), xp
    )
    slope = derivative(a)
    denominator = nonzero(gap, xp)
    quotient = (first - slope) / denominator
    inf = constant(float("inf"), quotient, xp)
    quotient_error = xp.where(
        gap == 0,
        inf,
        (first_error + (xp.abs(first) + xp.abs(slope)) * eps) / xp.abs(denominator),
    )
    if switch is not None:
        return xp.where(xp.abs(gap) <= switch, rule, quotient)
    return _better(rule, rule_error, quotient, quotient_error, xp)[0]
