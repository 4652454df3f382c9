"""The eigenvalues a spectral function is applied to: units, the domain clamp, the mask.

For ``F(A) = V diag(φ) Vᵀ`` with ``φ_j = mask_j · f(clamp(λ_j))`` everything
the forward and the derivatives need about the spectrum is computed here,
once, from the eigenvalues, the function's ``domain``
and the mask:

* **units** (:mod:`svdpi._scaling`): for the homogeneous built-ins
  (``Power``, ``Log``, whose
  derivatives scale as a power of the matrix) the derivatives are computed
  on ``λ / u`` for a per-matrix power of two ``u ≈ max|λ|`` and rescaled at
  the end; any other function is evaluated as it is (``u = 1``);
* **the clamp**: ``"positive"`` raises eigenvalues to :func:`function_floor`,
  ``"nonnegative"`` to 0, ``"real"`` leaves them;
* which eigenvalues are *live* (not raised by the clamp) and *kept*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from . import functions
from ._scaling import (
    largest_magnitude,
    power_of_two,
    rescale,
    times_power_of_two,
    unit_exponent,
)
from ._typing import Array, Namespace


class Homogeneity(NamedTuple):
    """How a function's values and derivatives scale with the matrix.

    ``value_degree``: ``f(u·x) = u^value_degree · f(x)`` (the derivatives of
    every order then scale with one power less each). ``raw_values``: the
    values themselves do not scale (``log(u·x) = log u + log x``) and are
    evaluated at the true eigenvalues, while the derivatives scale as for
    ``value_degree`` (0 for the logarithm, whose derivative has degree −1).
    """

    value_degree: float
    raw_values: bool


def homogeneity(fn: functions.SpectralFunction) -> Homogeneity | None:
    """The :class:`Homogeneity` of the homogeneous built-ins, ``None`` for any other function."""
    if isinstance(fn, functions.Power):
        return Homogeneity(fn.p, False)
    if isinstance(fn, functions.Log):
        return Homogeneity(0.0, True)
    return None


class Spectrum(NamedTuple):
    """The eigenvalues as :func:`spectrum` prepares them (shapes ``(..., n)`` unless noted).

    Attributes
    ----------
    lam : array
        The eigenvalues divided by the unit.
    clamped : array
        ``lam`` after the domain clamp (``c`` in the docs).
    live : array of bool or None
        Not raised by the clamp (``None`` for the domain ``"real"``).
    kept : array of bool or None
        The mask (``None``: every pair is kept).
    exponent : array or None, shape (..., 1)
        The unit is ``2^exponent``; ``None``: the unit is 1.
    homogeneity : Homogeneity or None
        Of the function (``None``: not homogeneous, unit 1).
    largest : array, shape (..., 1)
        ``max|λ|`` in units.
    floor_active : array of bool or None, shape (..., 1)
        Domain ``"positive"``: whether the floor is ``n · eps · max|λ|``
        (its level moves with the largest eigenvalue) rather than its
        constant absolute term. ``None`` for other domains.
    """

    lam: Array
    clamped: Array
    live: Array | None
    kept: Array | None
    exponent: Array | None
    homogeneity: Homogeneity | None
    largest: Array
    floor_active: Array | None

    def unit(self, xp: Namespace) -> Array | None:
        """The unit ``2^exponent`` (shape ``(..., 1)``), or ``None`` for 1."""
        return None if self.exponent is None else power_of_two(self.exponent, xp)


def function_floor(largest: Array, n: int, xp: Namespace) -> tuple[Array, Array]:
    """The eigenvalue floor of the ``"positive"`` domain, and whether its relative term wins.

    ``max(n · eps · max|λ|, smallest normal)``: eigenvalues closer to zero
    than a backward-stable eigensolver resolves (``n · eps · max|λ|``), and
    subnormal ones, count as zero. The floor is scale-free wherever the
    eigenvalues are normal numbers; for a spectrum that is numerically zero
    (every ``|λ|`` below the smallest normal number) it is that number, so a
    function with this domain is constant near the zero matrix.
    ``largest`` (shape ``(..., 1)``) in the units of the result.
    """
    finfo = xp.finfo(largest.dtype)
    relative = largest * (n * finfo.eps)
    absolute = xp.full_like(relative, finfo.smallest_normal)
    return xp.maximum(relative, absolute), relative > absolute


def spectrum(
    fn: functions.SpectralFunction,
    eigenvalues: Array,
    mask: Array | None,
    xp: Namespace,
    *,
    units: bool = True,
    unit_at_most_one: bool = False,
) -> Spectrum:
    """Prepare ``eigenvalues`` (shape ``(..., n)``, ``n >= 1``) for ``fn``; see :class:`Spectrum`.

    ``units=False`` evaluates at the true eigenvalues whatever the function
    (the forward of powers with ``|p| <= 1`` and of the logarithm, whose
    values cannot overflow). ``unit_at_most_one``: the unit is
    ``min(2^k, 1)``, as :func:`svdpi.eig_vjp` normalises by
    ``min(max|λ|, 1)``: for derivatives of negative degree (second
    derivatives of ``λ^p``, ``p < 2``), which are largest at the smallest
    eigenvalues, so that a spectrum spanning more than the dtype's range of
    such derivatives is not brought to units where the small eigenvalues'
    terms overflow.
    """
    finfo = xp.finfo(eigenvalues.dtype)
    n = eigenvalues.shape[-1]
    scaling = homogeneity(fn)
    largest = largest_magnitude(eigenvalues, xp)
    exponent = None
    lam = eigenvalues
    if scaling is not None and units:
        exponent = unit_exponent(largest, xp)
        if unit_at_most_one:
            exponent = xp.minimum(exponent, xp.zeros_like(exponent))
        unit = power_of_two(exponent, xp)
        lam = eigenvalues / unit
        largest = largest / unit
    live = floor_active = None
    domain = fn.domain
    if domain == "positive":
        if exponent is None:
            floor, floor_active = function_floor(largest, n, xp)
        else:
            # The floor of the true eigenvalues, in units: its absolute term
            # is smallest_normal / unit (at most 1, since unit >= smallest_normal).
            relative = largest * (n * finfo.eps)
            absolute = finfo.smallest_normal / unit
            floor, floor_active = xp.maximum(relative, absolute), relative > absolute
        clamped = xp.maximum(lam, floor)
        live = lam >= floor
    elif domain == "nonnegative":
        zero = xp.zeros_like(lam[..., :1])
        clamped = xp.maximum(lam, zero)
        live = lam >= zero
    else:
        clamped = lam
    return Spectrum(lam, clamped, live, mask, exponent, scaling, largest, floor_active)


class LargeForm(NamedTuple):
    """A function's large values and divided differences, in a scale where they are representable.

    ``f(c_j) = value_back(values(fn, spec))`` and ``f[c_i, c_j] =
    first_back(exact kernel of spec)``, where the ``back`` maps multiply a
    *finished sum* by the per-matrix scale (in factors that are normal
    numbers: 0 stays 0, and an entry becomes ``±inf`` only where its true
    value overflows). Terms that overflow at the true eigenvalues are summed
    in this form and scaled back; the others are summed as they are (in
    this form small terms could underflow), so that no ``inf · 0 = NaN``
    forms in a matrix product.
    """

    spec: Spectrum
    value_back: Callable[[Array], Array]
    first_back: Callable[[Array], Array]


def large_form(
    fn: functions.SpectralFunction, eigenvalues: Array, mask: Array | None, xp: Namespace
) -> LargeForm | None:
    """The :class:`LargeForm` of a function whose values may overflow, ``None`` for the others.

    * ``Power(p)``, ``|p| > 1``: the spectrum in units ``u = 2^k ≈ max|λ|``
      (values scale by ``u^p``, first divided differences by ``u^(p−1)``);
    * ``Exp``: the eigenvalues shifted by ``s = k · log 2`` with
      ``k = floor(max(λ_kept, 0) / log 2)`` (``e^λ = 2^k · e^(λ − s)``, and
      so are its divided differences). ``λ − s`` is exact where ``λ`` is
      within a factor 2 of ``s``; ``k · log 2`` is rounded to ``λ``'s own
      precision, a relative error about ``|λ| · eps`` in ``e^(λ − s)``,
      the error ``e^λ`` already has from the eigenvalue's rounding.

    Other functions (powers with ``|p| <= 1``, the logarithm, ``Clamp``,
    ``Abs``, ``Softplus``) cannot overflow at finite eigenvalues; a user's
    function (``Custom``) has no known scale: ``None``.
    """
    if isinstance(fn, functions.Power) and abs(fn.p) > 1:
        spec = spectrum(fn, eigenvalues, mask, xp)
        exponent = spec.exponent[..., None]
        p = fn.p
        return LargeForm(
            spec,
            lambda x: rescale(x, exponent, p, xp),
            lambda x: rescale(x, exponent, p - 1.0, xp),
        )
    if isinstance(fn, functions.Exp):
        kept = eigenvalues
        if mask is not None:  # dropped eigenvalues do not set the scale
            kept = xp.where(mask, eigenvalues, xp.zeros_like(eigenvalues))
        top = xp.max(kept, axis=-1, keepdims=True)
        k = xp.floor(xp.maximum(top, xp.zeros_like(top)) * (1.0 / math.log(2.0)))
        # At most log 2 in exact arithmetic; capped at 1 because k · log 2 is
        # rounded to λ's precision, whose ulp exceeds the dtype's log(max) for
        # λ beyond 2^24 (float32): e^(λ − s) stays finite, and the scale 2^k
        # makes every nonzero entry infinite there anyway.
        lam = xp.minimum(eigenvalues - k * math.log(2.0), xp.ones_like(eigenvalues))
        largest = largest_magnitude(lam, xp)
        spec = Spectrum(lam, lam, None, mask, None, None, largest, None)
        exponent = k[..., None]
        back = lambda x: times_power_of_two(x, exponent, xp)  # noqa: E731
        return LargeForm(spec, back, back)
    return None


def values(fn: functions.SpectralFunction, spec: Spectrum, xp: Namespace) -> Array:
    """``φ`` in value units (``f`` of the clamped eigenvalues, 0 where dropped).

    For a homogeneous function the true values are ``u^value_degree`` times
    these, except with ``raw_values`` (the logarithm), whose values are
    those of the true eigenvalues.
    """
    clamped = spec.clamped
    if spec.exponent is not None and spec.homogeneity.raw_values:
        clamped = clamped * spec.unit(xp)
    phi = fn.value(clamped, xp=xp)
    if spec.kept is not None:
        phi = xp.where(spec.kept, phi, xp.zeros_like(phi))
    return phi


def derivative_weights(fn: functions.SpectralFunction, spec: Spectrum, xp: Namespace) -> Array:
    """``dφ_j / dλ_j`` in units: ``f'(c_j)`` where live and kept, 0 elsewhere."""
    derivative = fn.derivative(spec.clamped, xp=xp)
    keep = spec.live
    if spec.kept is not None:
        keep = spec.kept if keep is None else keep & spec.kept
    if keep is None:
        return derivative
    return xp.where(keep, derivative, xp.zeros_like(derivative))


def derivative_degree(spec: Spectrum) -> float:
    """The degree of the first derivatives (``value_degree − 1``); 0 without units."""
    if spec.exponent is None:
        return 0.0
    return spec.homogeneity.value_degree - 1.0


def coefficient_eigenvalues(spec: Spectrum, method: str, xp: Namespace) -> Array:
    """The eigenvalues, in units, for the eigenvector coefficients of ``method``.

    ``"analytic"`` takes them as they are. ``"pi"`` and ``"taylor"`` divide
    by them, so they are raised to the coefficients' floor first: ``n · eps
    · max|λ|``, or, for a numerically zero spectrum (``max|λ|`` below the
    smallest normal number), ``smallest normal / eps``, which keeps
    ``(num_iters + 1) / floor`` finite there as :func:`svdpi.eig_vjp` does.
    Raised here, they are above every floor the coefficient product applies
    itself (:func:`svdpi._coefficients.eigenvalue_floor`), which leaves them
    alone.
    """
    if method == "analytic":
        return spec.lam
    finfo = xp.finfo(spec.lam.dtype)
    n = spec.lam.shape[-1]
    relative = spec.largest * (n * finfo.eps)
    if spec.exponent is None:
        numerically_zero = spec.largest < finfo.smallest_normal
        zero_floor = xp.full_like(relative, finfo.smallest_normal / finfo.eps)
    else:
        # In units of u = smallest_normal (the unit of a numerically zero
        # spectrum) the zero floor is 1 / eps.
        unit = spec.unit(xp)
        numerically_zero = spec.largest * unit < finfo.smallest_normal
        zero_floor = xp.full_like(relative, 1.0 / finfo.eps)
    floor = xp.where(numerically_zero, zero_floor, relative)
    return xp.maximum(spec.lam, floor)


def nan_like(x: Any, xp: Namespace) -> Array:
    """An array of NaN shaped like ``x``."""
    return xp.full_like(x, math.nan)
