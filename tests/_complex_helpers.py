"""Data and oracles for the complex Hermitian tests (NumPy complex128)."""

from __future__ import annotations

import numpy as np


def hermitian_with_spectrum(spectrum, rng, batch=()):
    """``Q diag(spectrum) Qᴴ`` with a random unitary ``Q`` (Haar), exactly Hermitian."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    n = spectrum.shape[-1]
    x = rng.standard_normal((*batch, n, n)) + 1j * rng.standard_normal((*batch, n, n))
    q, r = np.linalg.qr(x)
    d = np.diagonal(r, axis1=-2, axis2=-1)
    q = q * (d / np.abs(d))[..., None, :]
    a = (q * spectrum[..., None, :]) @ adjoint(q)
    return (a + adjoint(a)) / 2


def random_hermitian(rng, shape):
    """A random Hermitian matrix (a tangent or cotangent direction)."""
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return (x + adjoint(x)) / 2


def random_complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def adjoint(x):
    return np.conj(np.swapaxes(x, -1, -2))


def phase_free(v, grad_v):
    """``ḡV`` with ``Im(v_jᴴ ḡv_j)`` removed: a cotangent of a phase-invariant loss."""
    gamma = np.imag(np.einsum("...ij,...ij->...j", np.conj(v), grad_v))
    return grad_v - 1j * v * gamma[..., None, :]


def inner(x, y):
    """``Re Σ conj(x) y``: PyTorch's real inner product of complex arrays."""
    return float(np.real(np.sum(np.conj(x) * y)))


def as_xp(xp, a, single=False):
    """``a`` in namespace ``xp`` with the matching real or complex dtype."""
    if np.iscomplexobj(a):
        dtype = xp.complex64 if single else xp.complex128
    else:
        dtype = xp.float32 if single else xp.float64
    return xp.asarray(np.ascontiguousarray(a), dtype=dtype)
