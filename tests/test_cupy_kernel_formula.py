"""The fused kernel's formula against the core.

Run with NumPy through the very statements its CUDA source is generated from.
"""

from __future__ import annotations

import numpy as np
import pytest

import svdpi
from svdpi import _dispatch

from ._cupy_helpers import (
    METHODS,
    SPECTRA,
    core_coefficients,
    kernel_source,
)
from ._helpers import assert_close, random_spd, spd_with_spectrum


@pytest.mark.parametrize("num_iters", [1, 5, 19])
@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("method", METHODS)
def test_kernel_formula_equals_core_float64(method, spectrum, num_iters):
    w = SPECTRA[spectrum]
    expected = core_coefficients(w, method, num_iters)
    actual = kernel_source.coefficient_matrix_numpy(w, method=method, num_iters=num_iters)
    assert actual.dtype == np.float64
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])  # the same infinities
    scale = np.max(np.abs(expected[finite]), initial=0.0)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_kernel_formula_equals_core_float32_batched(method):
    rng = np.random.default_rng(0)
    w = np.sort(rng.random((3, 5)), axis=-1)[..., ::-1].astype(np.float32)
    w[1, 2] = w[1, 1]  # a tie
    w[2, -1] = 0.0  # a zero
    expected = core_coefficients(w, method, 9)
    actual = kernel_source.coefficient_matrix_numpy(w, method=method, num_iters=9)
    assert actual.dtype == np.float32
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-6)


@pytest.mark.parametrize("symmetrize", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_reference_product_equals_generic(method, symmetrize):
    rng = np.random.default_rng(1)
    w, _ = svdpi.eig(random_spd(5, rng, batch=(2,)))
    b = rng.standard_normal((2, 5, 5))
    a = core_coefficients(w, method, 19)
    expected = np.swapaxes(a, -1, -2) * b
    if symmetrize:
        expected = (expected + np.swapaxes(expected, -1, -2)) * 0.5
    actual = kernel_source.coefficient_product_numpy(
        w, b, method=method, num_iters=19, symmetrize=symmetrize
    )
    assert_close(actual, expected, rtol=1e-14)


def test_the_reference_twin_as_a_provider_gives_the_core_gradients(monkeypatch):
    # The NumPy twin of the kernels, plugged into the core's hook, must give
    # the generic eig_vjp / eig_jvp: the interface of the fast path is right.
    rng = np.random.default_rng(2)
    w, v = svdpi.eig(spd_with_spectrum([3.0, 2.0, 2.0, 0.5], rng, batch=(3,)))
    gw, gv, t = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((3, 4, 4)),
        rng.standard_normal((3, 4, 4)),
    )
    expected_vjp = svdpi.eig_vjp(w, v, gw, gv)
    expected_jvp = svdpi.eig_jvp(w, v, t)
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    _dispatch.register("numpy", coefficient_product=kernel_source.coefficient_product_numpy)
    assert _dispatch.native(np, "coefficient_product") is not None
    assert_close(svdpi.eig_vjp(w, v, gw, gv), expected_vjp, rtol=1e-13)
    for actual, expected in zip(svdpi.eig_jvp(w, v, t), expected_jvp, strict=True):
        assert_close(actual, expected, rtol=1e-13)


@pytest.mark.parametrize("num_iters", [10**6, 2**23, 2**24, 2**53])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reference_product_is_exact_for_equal_eigenvalues_at_any_num_iters(num_iters, dtype):
    # diag(3, 1, 1) with a ones cotangent: entry [1, 2] of the symmetrised
    # product is r^T / 2 = 0.5, which A_qp b_pq + A_pq b_qp loses to cancellation.
    import array_api_compat.numpy as xp

    from svdpi._coefficients import coefficient_product

    w = np.array([3.0, 1.0, 1.0], dtype=dtype)
    b = np.ones((3, 3), dtype=dtype)
    for symmetrize in (False, True):
        expected = coefficient_product(
            w, b, method="pi", num_iters=num_iters, symmetrize=symmetrize, xp=xp
        )
        actual = kernel_source.coefficient_product_numpy(
            w, b, method="pi", num_iters=num_iters, symmetrize=symmetrize
        )
        assert_close(actual, expected, rtol=4 * np.finfo(dtype).eps)
    assert actual.dtype == dtype
    assert expected[1, 2] == actual[1, 2] == 0.5  # symmetrised
