"""svdpi.jax at the edges of the floating-point range (issue 18's classes of failure).

Inputs near the dtype's maximum (JAX's own eigh symmetrises ``(a + aᵀ) / 2``, which
overflows above half the maximum: every eigenpair NaN), tiny and zero matrices,
gradients that overflow (``±inf``, never NaN), activations whose covariance overflows
or underflows, bad options, ``n = 0``. The references are the core on NumPy, which
handles these inputs (tests/test_extremes.py), and float64 computations.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402
from svdpi.functions import Exp, Log, Power  # noqa: E402

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)

#: Matrices with entries above half the dtype's maximum, which LAPACK (NumPy) handles.
NEAR_MAXIMUM = [
    pytest.param(np.float32, [[3e38, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]], id="f32-diag"),
    pytest.param(np.float32, [[1.8e38, 1.2e38], [1.2e38, 1.8e38]], id="f32-full"),
    pytest.param(np.float64, [[1.5e308, 0.0], [0.0, 1.0]], id="f64-diag"),
    pytest.param(np.float64, [[9e307, 5e307], [5e307, 9e307]], id="f64-full"),
]


def _x64(dtype):
    return jax.enable_x64(dtype == np.float64)


@pytest.mark.parametrize(("dtype", "matrix"), NEAR_MAXIMUM)
def test_eig_near_the_dtype_maximum_is_finite_and_exact(dtype, matrix):
    a = np.array(matrix, dtype=dtype)
    w_ref, _ = svdpi.eig(a)  # NumPy
    assert np.isfinite(w_ref).all()
    with _x64(dtype):
        for eig in (svdpi.jax.eig, jax.jit(svdpi.jax.eig)):
            w, v = eig(jnp.asarray(a))
            assert w.dtype == dtype
            assert bool(jnp.isfinite(w).all())
            assert bool(jnp.isfinite(v).all())
            assert_close(w, w_ref, rtol=4 * np.finfo(dtype).eps)
        # The core on JAX arrays uses svdpi.jax's eigh step once svdpi.jax is imported.
        w, _ = svdpi.eig(jnp.asarray(a))
        assert_close(w, w_ref, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize(("dtype", "matrix"), NEAR_MAXIMUM)
@pytest.mark.parametrize("method", ["exact", "pi"])
def test_matrix_functions_near_the_dtype_maximum_equal_the_core(dtype, matrix, method):
    """Values and gradients finite (as they are), equal to the core on NumPy, under jit."""
    a = np.array(matrix, dtype=dtype)
    g = np.ones_like(a)
    w, v = svdpi.eig(a)
    functions = [
        (svdpi.jax.sqrtm, Power(0.5)),
        (svdpi.jax.inv_sqrtm, Power(-0.5)),
        (svdpi.jax.logm, Log()),
    ]
    with _x64(dtype):

        @jax.jit
        def values_and_gradients(m):
            out = []
            for function, _ in functions:
                loss = lambda x, f=function: jnp.sum(f(x, method=method))  # noqa: E731
                out.append((function(m, method=method), jax.grad(loss)(m)))
            return out

        results = values_and_gradients(jnp.asarray(a))
    rtol = 64 * np.finfo(dtype).eps
    # XLA on CPU flushes subnormal results to zero (d tr log A = A⁻¹ has 1 / 3e38).
    atol = 2 * np.finfo(dtype).smallest_normal
    for (value, grad), (_, fn) in zip(results, functions, strict=True):
        expected_value = svdpi.spectral_map(w, v, fn)
        expected_grad = svdpi.spectral_map_vjp(w, v, fn, g, method=method)
        assert np.isfinite(expected_value).all()
        assert np.isfinite(expected_grad).all()
        assert_close(value, expected_value, rtol=rtol, atol=atol)
        assert_close(grad, expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("exponent", [66, -83], ids=["1e20", "1e-25"])
def test_zca_whitening_of_activations_whose_covariance_over_or_underflows(exponent):
    """Float32 activations of 1e20 square to inf (NaN everywhere on 0.2), of 1e-25 to 0.

    Each group is whitened in units of a power of two near its largest entry,
    so activations ``2^k · x`` (with ``eps · 4^k``) give the output of ``x``, the
    statistics scaled by ``2^k``, bit for bit but for round-off in the reductions.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)) @ (np.eye(4) + 0.3 * rng.standard_normal((4, 4))) + 2.0
    cotangent = jnp.asarray(rng.standard_normal((64, 4)), dtype=jnp.float32)
    scale = 2.0**exponent

    def step(z, eps):
        def loss(inputs):
            y, stats = svdpi.jax.zca_whitening(inputs, num_groups=2, eps=eps)
            return jnp.sum(y * cotangent), (y, stats)

        return jax.value_and_grad(loss, has_aux=True)(z)

    step = jax.jit(step, static_argnums=1)
    with jax.enable_x64(False):
        x32 = jnp.asarray(x, dtype=jnp.float32)
        (_, (y, stats)), grad = step(x32 * scale, 1e-3 * scale**2)
        (_, (y1, stats1)), grad1 = step(x32, 1e-3)
    for got in (y, grad, stats.mean, stats.whitening):
        assert bool(jnp.isfinite(got).all())
    assert_close(y, y1, rtol=1e-6)
    assert_close(grad * scale, grad1, rtol=1e-6)
    assert_close(stats.mean / scale, stats1.mean, rtol=1e-6)
    assert_close(stats.whitening * scale, stats1.whitening, rtol=1e-6)
    assert_close(svdpi.jax.whiten(x32 * scale, stats), y, rtol=1e-5)
    # And the whitening itself: identity covariance up to eps.
    with jax.enable_x64(True):
        y64, _ = svdpi.jax.zca_whitening(jnp.asarray(x), num_groups=2, eps=1e-3)
    assert_close(y, y64, rtol=1e-2)


def test_zca_whitening_truncation_thresholds_are_on_the_true_scale():
    """min_eigenvalue compares the covariance's eigenvalues, whatever units are used inside."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 3)) * np.array([100.0, 1.0, 0.01])
    for threshold, kept in [(1e-2, 2), (1.0 / 2, 2), (2.0, 1), (1e5, 0)]:
        _, stats = svdpi.jax.zca_whitening(x, eps=0.0, min_eigenvalue=threshold)
        assert int(np.linalg.matrix_rank(np.asarray(stats.whitening[0]), tol=1e-6)) == kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_matrices_are_scale_free(dtype):
    scale = 1e-33 if dtype == np.float32 else 1e-295
    a = np.diag([3.0, 2.0, 1.0]).astype(dtype) * dtype(scale)
    with _x64(dtype):
        m = jnp.asarray(a)
        assert_close(jnp.diag(svdpi.jax.logm(m)), np.log(np.diag(a)), rtol=1e-6)
        assert_close(jnp.diag(svdpi.jax.inv_sqrtm(m)), np.diag(a) ** -0.5, rtol=1e-6)
        grad = jax.grad(lambda x: jnp.trace(svdpi.jax.logm(x)))(m)  # A⁻¹
        assert_close(jnp.diag(grad), 1.0 / np.diag(a), rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "pi", "taylor", "analytic"])
def test_overflowing_gradients_are_infinite_not_nan(method):
    """The true gradients of inv_sqrtm at 1e-30 and of the inverse at 1e-20 overflow float32."""
    spectrum = jnp.asarray([3.0, 2.0, 1.0], dtype=jnp.float32)
    with jax.enable_x64(False):

        @jax.jit
        def gradients(tiny, small):
            inv_sqrt = jax.grad(lambda x: jnp.sum(svdpi.jax.inv_sqrtm(x, method=method)))
            inverse = jax.grad(lambda x: jnp.sum(svdpi.jax.matrix_power(x, -1.0, method=method)))
            return inv_sqrt(tiny), inverse(small)

        for grad in gradients(jnp.diag(spectrum) * 1e-30, jnp.diag(spectrum) * 1e-20):
            assert not bool(jnp.isnan(grad).any())
            assert bool(jnp.isinf(grad).any())


def test_zero_matrix_derivatives():
    """A "positive"-domain map is constant near the zero matrix: exact derivatives 0 (order 2)."""

    @jax.jit
    def derivatives(zero, activations):
        out = []
        for function in (svdpi.jax.inv_sqrtm, svdpi.jax.logm):
            loss = lambda x, f=function: jnp.sum(f(x))  # noqa: E731
            out += [jax.grad(loss)(zero), jax.hessian(loss)(zero)]
        # The paper's "pi" formula there is f(floor) / floor off the diagonal: ±inf, not NaN.
        out.append(jax.grad(lambda x: jnp.sum(svdpi.jax.zca_whitening_matrix(x)))(zero))
        step = lambda x: jnp.sum(svdpi.jax.zca_whitening(x, eps=0.0, method="exact")[0])  # noqa: E731
        out += [svdpi.jax.zca_whitening(activations, eps=0.0)[0], jax.grad(step)(activations)]
        return out

    grad_a, hessian_a, grad_b, hessian_b, pi, y, grad_y = derivatives(
        jnp.zeros((3, 3)), jnp.zeros((8, 4))
    )
    for exact in (grad_a, hessian_a, grad_b, hessian_b, y, grad_y):
        assert_close(exact, np.zeros(exact.shape))
    assert not bool(jnp.isnan(pi).any())
    assert bool(jnp.isinf(pi).any())


def test_n_zero_and_empty_channels():
    empty = jnp.zeros((2, 0, 0))
    assert svdpi.jax.spectral_map(empty, Exp()).shape == (2, 0, 0)
    assert jax.hessian(lambda m: jnp.sum(svdpi.jax.logm(m)))(jnp.zeros((0, 0))).shape == (0,) * 4
    assert jax.grad(lambda m: jnp.sum(svdpi.jax.expm(m)))(empty).shape == (2, 0, 0)
    y, stats = svdpi.jax.zca_whitening(jnp.ones((8, 0)))
    assert y.shape == (8, 0)
    assert stats.whitening.shape == (1, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": "a"}, TypeError, "eps must be a real number"),
        ({"eps": True}, TypeError, "eps must be a real number"),
        ({"eps": float("inf")}, ValueError, "eps must be a finite number >= 0"),
        ({"min_eigenvalue": float("nan")}, ValueError, "min_eigenvalue must be a finite number"),
        ({"max_energy": "0.5"}, TypeError, "max_energy must be a real number"),
        ({"num_iters": 10**400}, ValueError, "num_iters must be at most"),
    ],
)
def test_zca_whitening_refuses_bad_options_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.zca_whitening(jnp.ones((8, 4)), **kwargs)


@pytest.mark.parametrize(
    ("stats", "match"),
    [
        (None, "stats must be a WhiteningStats"),
        ((None, None), r"stats\.mean must be a floating array"),
        ((np.zeros(2), np.eye(2, dtype=int)[None]), r"stats\.whitening must be a floating"),
    ],
)
def test_whiten_refuses_statistics_that_are_not_arrays(stats, match):
    with pytest.raises(TypeError, match=match):
        svdpi.jax.whiten(jnp.ones((8, 2)), stats)


def test_matrix_functions_refuse_bad_options_naming_them():
    for call, error, match in [
        (lambda: svdpi.jax.matrix_power(jnp.eye(2), 10**400), ValueError, "p must be finite"),
        (lambda: svdpi.jax.sqrtm(jnp.eye(2), num_iters=10**400), ValueError, "num_iters"),
        (lambda: svdpi.jax.logm(jnp.eye(2), method=None), ValueError, "method must be one of"),
        (lambda: svdpi.jax.pca_projector(jnp.eye(2), n_components=True), TypeError, "n_comp"),
        (lambda: svdpi.jax.expm(jnp.eye(2, dtype=jnp.float16)), TypeError, "half precision"),
        (lambda: svdpi.jax.spectral_map(jnp.eye(2), Log(), mask=jnp.ones(2)), TypeError, "mask"),
    ]:
        with pytest.raises(error, match=match):
            call()
