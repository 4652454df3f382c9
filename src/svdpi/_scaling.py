"""Working in units of the spectrum's scale: powers of two that keep intermediates in range.

A power ``λ^p`` and its derivatives are homogeneous: on ``c·A`` every
divided difference is ``c^(p−1)`` times the one on ``A``. The core uses that
to compute the derivatives of homogeneous spectral functions on eigenvalues
divided by a per-matrix unit ``u = 2^k`` close to ``max|λ|`` (so they lie
in ``[-4, 4]``), and multiplies the finished result by ``u^degree`` at the
very end. Nothing in between overflows where the result does not, and a
result that does overflow becomes ``±inf`` in the last multiplication, never
``inf · 0 = NaN`` inside a matrix product. Dividing by a power of two is
exact (away from subnormal numbers), so on spectra of ordinary scale the
results are the same, bit for bit, as without units.

Everything here is elementwise or a reduction over the last axis: no value
is read on the host, and ``vmap`` and ``torch.compile`` trace through it.
"""

from __future__ import annotations

import math

from ._divided_differences import constant
from ._typing import Array, Namespace


def largest_magnitude(eigenvalues: Array, xp: Namespace) -> Array:
    """``max|λ|`` per matrix, shape ``(..., 1)``."""
    return xp.max(xp.abs(eigenvalues), axis=-1, keepdims=True)


# An array, not a Python scalar: array-api-compat's scalar promotion stops
# torch.compile(fullgraph=True) (see svdpi.functions).
_constant = constant


def unit_exponent(largest: Array, xp: Namespace) -> Array:
    """``k`` with ``2^k`` within a factor 2 of ``max(largest, smallest normal)``.

    ``k`` is an integer-valued array of the eigenvalues' dtype, at least
    ``log2(smallest normal)`` and at most ``max exponent − 1``: the unit is a
    normal number, and so is ``1 / unit``. (Some libraries' ``log2`` is a
    few ulps off at powers of two, which may move ``k`` by one: any power of
    two near the scale serves.)
    """
    finfo = xp.finfo(largest.dtype)
    # The largest exponent less one: in IEEE formats that is -log2(smallest_normal)
    # (1022 for float64, 126 for float32); log2(max) rounds to 1024 itself.
    high = -round(math.log2(finfo.smallest_normal))
    # + smallest_normal: at least log2 of it, and no change above 2^53 of it.
    exponent = xp.floor(xp.log2(largest + finfo.smallest_normal))
    # minimum, not clip: array-api-compat's clip for CuPy assigns through a
    # boolean mask (a host synchronisation).
    return xp.minimum(exponent, xp.full_like(exponent, high))


def power_of_two(exponent: Array, xp: Namespace) -> Array:
    """``2^exponent`` (exact for an integer-valued exponent in the normal range)."""
    return 2.0**exponent


#: At most this many factors: three factors of at most 2^±(max exponent − 1)
#: take any normal number to 0 or beyond the maximum, where a larger degree
#: (an exponent of 1e300) saturates anyway.
MAX_PIECES = 3


def pieces(degree: float) -> int:
    """How many factors ``2^(k·degree)`` is applied in, so that each one is a normal number."""
    return min(MAX_PIECES, max(1, math.ceil(abs(degree) - 1e-12)))


def rescale(x: Array, exponent: Array | None, degree: float, xp: Namespace) -> Array:
    """``x · 2^(exponent · degree)``; ``exponent`` of shape ``(..., 1)`` or ``(..., 1, 1)``.

    Applied as :func:`pieces` factors, each between the smallest normal
    number and its inverse: the product of the first factors never overflows
    or underflows on its own, and an entry of ``x`` that is 0 stays 0 (the
    factors are finite), so the result is ``±inf`` only where the true value
    overflows. ``exponent=None`` or ``degree == 0``: ``x`` unchanged.
    """
    if exponent is None or degree == 0.0:
        return x
    count = pieces(degree)
    # Each factor's exponent within ±(max exponent − 1), where it is a normal
    # number (|exponent| <= that bound, so this only acts for |degree| > 3).
    high = -round(math.log2(xp.finfo(exponent.dtype).smallest_normal))
    step = exponent * (degree / count)
    step = xp.minimum(xp.maximum(step, xp.full_like(step, -high)), xp.full_like(step, high))
    factor = power_of_two(step, xp)
    for _ in range(count):  # at most a few: ceil(|degree|), a static count
        x = x * factor
    return x


def times_power_of_two(x: Array, exponent: Array, xp: Namespace) -> Array:
    """``x · 2^exponent`` for an integer-valued ``exponent`` of any size (broadcast to ``x``).

    Applied as :data:`MAX_PIECES` factors, each a normal number (exact
    products away from overflow and subnormals): an entry that is 0 stays 0,
    and since three factors reach ``2^(3 · max exponent)``, any nonzero entry
    whose true value overflows becomes ``±inf``. Exponents beyond that reach
    are cut there: every nonzero entry is already infinite.
    """
    high = -round(math.log2(xp.finfo(exponent.dtype).smallest_normal))
    low = xp.full_like(exponent, -high)
    top = xp.full_like(exponent, high)
    for _ in range(MAX_PIECES):  # a static count: three factors
        step = xp.minimum(xp.maximum(exponent, low), top)
        x = x * power_of_two(step, xp)
        exponent = exponent - step
    return x
