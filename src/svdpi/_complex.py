"""Complex input: the conjugate transpose, real coefficients on complex arrays, and the phase.

Shared by the symmetric side (:func:`svdpi.eig` of Hermitian matrices) and
the SVD. Conventions, the same in both:

* **Cotangents** follow PyTorch: for a real loss ``L`` of a complex array
  ``x``, the cotangent is ``ḡ = ∂L/∂Re x + i ∂L/∂Im x``, so that
  ``dL = Re Σ conj(ḡ) dx`` (the ``.grad`` PyTorch fills in). JAX's
  gradients of real functions of complex arrays are the conjugates.
* **The phase.** An eigenvector (a pair of singular vectors) is determined
  only up to a factor ``e^{iφ}``. The derivatives choose ``Im(vᴴ dv) = 0``;
  a loss whose cotangent has ``Im(vᴴ ḡ) ≠ 0`` depends on that arbitrary
  choice and has no gradient (:func:`phase_violations`), unless the phase is
  fixed by the canonical convention (:func:`canonical_phases`), whose
  derivative is then part of the result (:func:`canonical_cotangent`,
  :func:`canonical_rotation`).
* **Real coefficients.** Every coefficient matrix of svdpi is real; it is
  applied to the real and imaginary parts of a complex array separately.
"""

from __future__ import annotations

import math

from array_api_compat import is_lazy_array

from ._compat import array_device
from ._typing import Array, Namespace

#: What a VJP does when a cotangent depends on the arbitrary phase: raise
#: (one boolean read on the host), make that matrix's gradient NaN (no host
#: read), or drop the phase-dependent part ("off": the exact transpose of
#: the JVP, for tests).
PHASE_ACTIONS = ("raise", "nan", "off")


def is_complex(x: Array, xp: Namespace) -> bool:
    """Whether ``x`` has a complex floating dtype (metadata only)."""
    return xp.isdtype(x.dtype, "complex floating")


def adjoint(x: Array, xp: Namespace) -> Array:
    """``xᴴ`` over the last two axes (a plain transpose for real ``x``)."""
    t = xp.matrix_transpose(x)
    return xp.conj(t) if is_complex(x, xp) else t


def real_dtype(dtype, xp: Namespace):
    """The real dtype of the same precision (``dtype`` itself if it is real)."""
    if dtype == xp.complex64:
        return xp.float32
    if dtype == xp.complex128:
        return xp.float64
    return dtype


def from_parts(real: Array, imag: Array, xp: Namespace) -> Array:
    """``real + i·imag`` from two real arrays, in the matching complex dtype."""
    dtype = xp.complex64 if real.dtype == xp.float32 else xp.complex128
    # ``* 1j`` with a Python scalar: no array is made from it on the device.
    return xp.astype(real, dtype) + xp.astype(imag, dtype) * 1j


def real_diagonal(x: Array, xp: Namespace) -> Array:
    """``Re diag(x)``: the diagonal of a Hermitian matrix, as a real array."""
    diagonal = xp.linalg.diagonal(x)
    return xp.real(diagonal) if is_complex(x, xp) else diagonal


# ------------------------------------------------------------------ the phase


def phase_term(x: Array, xp: Namespace) -> Array:
    """``Im diag(x)`` for ``x = Vᴴ ḡV``: the derivative along ``v_j → e^{iφ} v_j``."""
    return xp.imag(xp.linalg.diagonal(x))


def column_norms(x: Array, xp: Namespace) -> Array:
    """``‖x[:, j]‖`` per column, shape ``(..., k)``."""
    return xp.sqrt(xp.sum(xp.abs(x) ** 2, axis=-2))


def phase_violations(gamma: Array, size: Array, xp: Namespace) -> Array:
    """Which phase terms ``γ`` are not round-off: ``|γ| > 10 √eps · size``.

    ``size`` is the norm of the cotangents that ``γ`` was computed from
    (per vector): a phase-free loss gives ``γ`` of round-off size relative
    to it.
    """
    tolerance = 10.0 * math.sqrt(xp.finfo(gamma.dtype).eps)
    return xp.abs(gamma) > tolerance * size


def readable(x: Array) -> bool:
    """Whether the values of ``x`` can be read on the host (metadata only).

    Not for lazy arrays (JAX, Dask, tracers: ``array_api_compat.is_lazy_array``)
    nor for PyTorch's ``meta`` device, which has shapes and no values.
    """
    if is_lazy_array(x):
        return False
    return getattr(getattr(x, "device", None), "type", None) != "meta"


def phase_action(bad: Array, action: str, message: str, xp: Namespace) -> Array | None:
    """Apply ``action`` (:data:`PHASE_ACTIONS`) to the violations ``bad`` (shape ``(..., k)``).

    ``"raise"``: raise ``ValueError(message)`` if any is set (one boolean
    read on the host); arrays whose values cannot be read (:func:`readable`)
    are treated as ``"nan"``. Returns the per-matrix mask (shape
    ``(..., 1, 1)``) of the gradients to poison with NaN, or ``None``.
    """
    if action == "off":
        return None
    if action == "raise" and readable(bad):
        if bool(xp.any(bad)):
            raise ValueError(message)
        return None
    return xp.any(bad, axis=-1)[..., None, None]


def poison(result: Array, poisoned: Array | None, xp: Namespace) -> Array:
    """``result`` with NaN in the matrices ``poisoned`` marks (see :func:`phase_action`)."""
    if poisoned is None:
        return result
    return xp.where(poisoned, xp.full_like(result, math.nan), result)


# ------------------------------------------------------------ canonical phase


def largest_component_mask(u: Array, xp: Namespace) -> Array:
    """One-hot mask, shape of ``u``, of the first largest-magnitude entry of each column.

    A mask rather than an index gather: it needs nothing beyond the array API
    (no ``take_along_axis``) and broadcasts against ``u``, cheaply (``O(m k)``).
    The mask has ``u``'s real dtype.
    """
    magnitude = xp.abs(u)
    index = xp.argmax(magnitude, axis=-2)  # the first maximum, as the standard requires
    rows = xp.arange(u.shape[-2], device=array_device(u))
    return xp.astype(rows[:, None] == index[..., None, :], magnitude.dtype)


def canonical_columns(u: Array, xp: Namespace) -> tuple[Array, Array]:
    """``(u · d, d)``, unit-modulus ``d`` (shape ``(..., k)``) making each ``(u d)[i*, j]`` > 0.

    ``i*`` is the first entry of largest magnitude in column ``j`` of ``u``
    (which must have at least one row); for real ``u``, ``d`` is a sign. That
    entry of ``u · d`` is set to ``|u[i*, j]|``, so it is exactly real (the
    product leaves round-off in its imaginary part).
    """
    mask = largest_component_mask(u, xp)
    magnitude = xp.abs(u)
    size = xp.sum(magnitude * mask, axis=-2)  # |U[i*, j]| > 0: the largest of a unit column
    if not is_complex(u, xp):
        pivot = xp.sum(u * mask, axis=-2)
        phase = pivot / size  # its sign, ±1 exactly
        return u * phase[..., None, :], phase
    pivot = xp.sum(u * xp.astype(mask, u.dtype), axis=-2)
    phase = xp.conj(pivot) / xp.astype(size, u.dtype)
    rotated = u * phase[..., None, :]
    exact = xp.astype(xp.broadcast_to(size[..., None, :], u.shape), u.dtype)
    return xp.where(mask > 0, exact, rotated), phase


def canonical_cotangent(u: Array, gamma: Array, xp: Namespace) -> Array:
    """The cotangent the canonical phase adds to ``ḡU``, given the phase terms ``γ``.

    The canonical factor is ``u_j e^{iθ_j}`` with ``θ_j`` keeping
    ``U[i*, j]`` real, so ``dθ_j = −Im(du_j[i*]) / |U[i*, j]|``; its adjoint
    is the cotangent ``−i γ_j / |U[i*, j]|`` at the pivot entry, which makes
    the phase term of the total vanish (see ``docs/theory_complex.rst``).
    """
    mask = largest_component_mask(u, xp)
    pivot = xp.sum(xp.abs(u) * mask, axis=-2)
    correction = mask * (gamma / pivot)[..., None, :]
    return from_parts(xp.zeros_like(correction), -correction, xp)


def canonical_rotation(u: Array, tangent_u: Array, xp: Namespace) -> Array:
    """``i θ_j`` (shape ``(..., k)``, complex) that keeps the tangent's ``U[i*, j]`` real.

    Add ``u_j · iθ_j`` to the tangent of ``u_j`` (and, for the SVD, subtract
    it from that of ``vh``'s row ``j``) to differentiate the canonical factor.
    """
    mask = largest_component_mask(u, xp)
    pivot = xp.sum(xp.abs(u) * mask, axis=-2)
    theta = -xp.sum(xp.imag(tangent_u) * mask, axis=-2) / pivot
    return from_parts(xp.zeros_like(theta), theta, xp)
