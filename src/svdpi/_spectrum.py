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
from typing import Any, NamedTuple

from . import functions
from ._scaling import largest_magnitude, power_of_two, unit_exponent
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
) -> Spectrum:
    """Prepare ``eigenvalues`` (shape ``(..., n)``, ``n >= 1``) for ``fn``; see :class:`Spectrum`.

    ``units=False`` evaluates at the true eigenvalues whatever the function
    (the forward of powers with ``|p| <= 1`` and of the logarithm, whose
    values cannot overflow).
    """
    finfo = xp.finfo(eigenvalues.dtype)
    n = eigenvalues.shape[-1]
    scaling = homogeneity(fn)
    largest = largest_magnitude(eigenvalues, xp)
    exponent = None
    lam = eigenvalues
    if scaling is not None and units:
        exponent = unit_exponent(largest, xp)
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
