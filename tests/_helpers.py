"""Test utilities: data generation in NumPy float64, conversion, comparison."""

from __future__ import annotations

import numpy as np


def to_numpy(x):
    """Any backend's array as a NumPy array (host copy)."""
    if hasattr(x, "get"):  # CuPy
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    # A copy where the buffer is read-only (JAX's), so torch.from_numpy accepts it.
    x = np.ascontiguousarray(np.asarray(x))
    return x if x.flags.writeable else x.copy()


def from_numpy(xp, a, dtype=None):
    dtype = xp.float64 if dtype is None else dtype
    return xp.asarray(np.ascontiguousarray(a), dtype=dtype)


def spd_with_spectrum(spectrum, rng, batch=()):
    """Symmetric matrices ``Q diag(spectrum) Qᵀ`` with random orthogonal ``Q`` (float64)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    n = spectrum.shape[-1]
    q, _ = np.linalg.qr(rng.standard_normal((*batch, n, n)))
    a = (q * spectrum[..., None, :]) @ np.swapaxes(q, -1, -2)
    return (a + np.swapaxes(a, -1, -2)) / 2


def random_spd(n, rng, batch=(), ridge=1e-2):
    """A random covariance-like SPD matrix (well separated spectrum with high probability)."""
    x = rng.standard_normal((*batch, n, 2 * n))
    a = x @ np.swapaxes(x, -1, -2) / (2 * n) + ridge * np.eye(n)
    return (a + np.swapaxes(a, -1, -2)) / 2


def assert_close(actual, desired, rtol=1e-7, atol=0.0, err_msg=""):
    """Compare after moving to NumPy; relative to the largest entry of ``desired``."""
    actual = to_numpy(actual)
    desired = to_numpy(desired)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = np.max(np.abs(desired)) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=0, atol=atol + rtol * scale, err_msg=err_msg)
