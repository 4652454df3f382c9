"""Data and oracles for the SVD tests (NumPy float64 / complex128)."""

from __future__ import annotations

import numpy as np
from _helpers import assert_close as _assert_close
from _helpers import to_numpy

import svdpi


def random_matrix(rng, shape, complex_=False):
    a = rng.standard_normal(shape)
    if complex_:
        a = a + 1j * rng.standard_normal(shape)
    return a


def unitary(rng, n, batch=(), complex_=False):
    q, r = np.linalg.qr(random_matrix(rng, (*batch, n, n), complex_))
    # Fix QR's signs so that the distribution is Haar (and never degenerate).
    d = np.diagonal(r, axis1=-2, axis2=-1)
    return q * (d / np.abs(d))[..., None, :]


def with_singular_values(rng, m, n, singular_values, batch=(), complex_=False):
    """``Q1[:, :k] diag(σ) Q2[:, :k]ᴴ`` with random unitary ``Q1, Q2``; k = min(m, n)."""
    k = min(m, n)
    sv = np.broadcast_to(np.asarray(singular_values, dtype=np.float64)[..., :k], (*batch, k))
    q1 = unitary(rng, m, batch, complex_)[..., :k]
    q2 = unitary(rng, n, batch, complex_)[..., :k]
    return (q1 * sv[..., None, :]) @ np.conj(np.swapaxes(q2, -1, -2))


def inner(x, y):
    """The real inner product ``Re Σ conj(x) y`` of PyTorch's complex convention."""
    return float(np.real(np.sum(np.conj(x) * y)))


def phase_free(u, vh, grad_u, grad_vh):
    """Cotangents with the component along ``(u_j, v_j) → e^{iφ}(u_j, v_j)`` removed.

    A loss whose cotangents these are does not depend on the phase.
    """
    if not np.iscomplexobj(u):
        return grad_u, grad_vh
    gamma = np.imag(
        np.einsum("...ij,...ij->...j", np.conj(u), grad_u)
        + np.einsum("...ji,...ji->...j", vh, np.conj(grad_vh))
    )
    return grad_u - 1j * u * (gamma / 2)[..., None, :], grad_vh + 1j * (gamma / 2)[
        ..., :, None
    ] * vh


def canonical_svd(a):
    """The canonical SVD in NumPy (through svdpi), for finite differences."""
    return svdpi.svd(a, canonical=True)


def central_difference(f, a, t, h=1e-6):
    """``(f(a + h t) − f(a − h t)) / 2h`` for ``f`` returning an array or a tuple of arrays."""
    plus, minus = f(a + h * t), f(a - h * t)
    if isinstance(plus, tuple):
        return tuple((p - q) / (2 * h) for p, q in zip(plus, minus, strict=True))
    return (plus - minus) / (2 * h)


def assert_close(actual, desired, rtol=1e-7, atol=0.0, err_msg=""):
    """:func:`_helpers.assert_close` that also requires finite values.

    NumPy's ``assert_allclose`` counts NaN equal to NaN: a NaN gradient
    compared with a NaN oracle would pass.
    """
    actual, desired = to_numpy(actual), to_numpy(desired)
    assert np.isfinite(actual).all(), f"not finite: {actual} {err_msg}"
    assert np.isfinite(desired).all(), f"oracle not finite: {desired} {err_msg}"
    _assert_close(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)
