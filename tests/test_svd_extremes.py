"""The SVD's derivatives at the ends of the floating-point range (issue 18.2's class).

svdpi 0.3.0's SVD raised every singular value below ``smallest_normal / eps``
(1e-292 in float64, 1e-31 in float32) to that constant in the ``"pi"`` and
``"taylor"`` coefficients: ``svd_vjp`` at scale 1e-300 was wrong in every
entry (relative error 1.0), and the polar factor's derivative was NaN (its
rank test used the same floor). Each test below fails on that version. The
derivatives are homogeneous (degree −1 in the matrix for the singular
vectors, 0 for the singular values), so at ``c·a`` they are those at ``a``
divided by ``c``, which is what is checked, at tiny scales and near the
dtype's maximum, in the core, svdpi.torch (its direct-torch backward) and
svdpi.jax.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import to_numpy
from _svd_helpers import assert_close, phase_free, random_matrix, with_singular_values

import svdpi

METHODS = ("pi", "taylor", "analytic")
SCALES = [
    pytest.param("float64", 1e-300, id="float64-1e-300"),
    pytest.param("float32", 1e-35, id="float32-1e-35"),
    pytest.param("float64", 1e300, id="float64-1e300"),
    # Near the maximum the gradient is ~1/c: 1e-33 in float32 keeps its terms
    # above the subnormal range, which XLA's CPU flushes to zero.
    pytest.param("float32", 1e33, id="float32-1e33"),
]


def _dtype(xp, name, complex_):
    if complex_:
        name = {"float32": "complex64", "float64": "complex128"}[name]
    return getattr(xp, name)


def _problem(m, n, complex_, seed):
    """Factors of a separated spectrum with a repeated pair (the series' case), and cotangents."""
    rng = np.random.default_rng(seed)
    a = with_singular_values(rng, m, n, [2.0, 1.0, 1.0, 0.5], complex_=complex_)
    u, s, vh = svdpi.svd(a)
    grad_u, grad_vh = phase_free(
        u, vh, random_matrix(rng, u.shape, complex_), random_matrix(rng, vh.shape, complex_)
    )
    return a, (u, s, vh), (grad_u, rng.standard_normal(s.shape), grad_vh)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "scale"), SCALES)
@pytest.mark.parametrize(("m", "n"), [(4, 3), (3, 4)])
def test_svd_derivatives_scale_inversely_with_the_matrix(xp, m, n, dtype, scale, method, complex_):
    """svd_vjp / svd_jvp at c·a are those at a divided by c (singular values: unchanged)."""
    _, (u, s, vh), grads = _problem(m, n, complex_, seed=m + 3 * n)
    if method == "analytic":  # infinite at the repeated pair
        s = np.array([2.0, 1.0, 0.5])
    grad_u, grad_s, grad_vh = grads
    t = random_matrix(np.random.default_rng(1), (m, n), complex_)
    real, cdt = _dtype(xp, dtype, False), _dtype(xp, dtype, complex_)
    options = {"method": method, "num_iters": 19}
    reference = svdpi.svd_vjp(u, s, vh, grad_u, None, grad_vh, **options)
    reference_s = svdpi.svd_vjp(u, s, vh, None, grad_s, None, **options)
    du_ref, ds_ref, dvh_ref = svdpi.svd_jvp(u, s, vh, t, **options)
    factors = (
        xp.asarray(u, dtype=cdt),
        xp.asarray(s * scale, dtype=real),
        xp.asarray(vh, dtype=cdt),
    )
    got = svdpi.svd_vjp(
        *factors, xp.asarray(grad_u, dtype=cdt), None, xp.asarray(grad_vh, dtype=cdt), **options
    )
    got_s = svdpi.svd_vjp(*factors, None, xp.asarray(grad_s, dtype=real), None, **options)
    du, ds, dvh = svdpi.svd_jvp(*factors, xp.asarray(t, dtype=cdt), **options)
    rtol = 1e-12 if dtype == "float64" else 3e-5
    assert_close(to_numpy(got).astype(complex) * scale, reference, rtol=rtol)
    if not (xp.__name__.startswith("jax") and scale < 1):
        # The ḡσ term is computed in units of σ_max like the rest (as eig_vjp's
        # ḡλ term), as ḡσ · σ_max: at 1e-35 in float32 its partial products
        # fall below the smallest normal number, which XLA's CPU flushes to
        # zero (a relative error of about 4e-3 here; NumPy and PyTorch keep
        # subnormal numbers). Documented in svd_vjp's notes.
        assert_close(to_numpy(got_s), reference_s, rtol=rtol)
    assert_close(to_numpy(du).astype(complex) * scale, du_ref, rtol=rtol)
    assert_close(to_numpy(dvh).astype(complex) * scale, dvh_ref, rtol=rtol)
    assert_close(to_numpy(ds), ds_ref, rtol=rtol)


@pytest.mark.parametrize(("dtype", "scale"), SCALES[:2])
def test_a_large_singular_value_cotangent_beside_a_tiny_matrix(xp, dtype, scale):
    """The ḡσ term keeps its own scale beside the singular-vector term (both ~1/c)."""
    _, (u, s, vh), (grad_u, grad_s, grad_vh) = _problem(4, 3, False, seed=5)
    dt = getattr(xp, dtype)
    factors = (xp.asarray(u, dtype=dt), xp.asarray(s * scale, dtype=dt), xp.asarray(vh, dtype=dt))
    vectors = xp.asarray(grad_u, dtype=dt), xp.asarray(grad_vh, dtype=dt)
    only = to_numpy(
        svdpi.svd_vjp(factors[0], factors[1], factors[2], vectors[0], None, vectors[1])
    )
    both = svdpi.svd_vjp(*factors, vectors[0], xp.asarray(grad_s / scale, dtype=dt), vectors[1])
    expected = (u * grad_s) @ vh
    rtol = 1e-12 if dtype == "float64" else 3e-5
    assert_close((to_numpy(both).astype(np.float64) - only) * scale, expected, rtol=rtol)


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_polar_derivative_at_extreme_scales(xp, dtype, scale):
    """0.3.0 took a well-conditioned matrix at 1e-300 for rank-deficient: NaN."""
    rng = np.random.default_rng(7)
    a = with_singular_values(rng, 4, 3, [2.0, 1.0, 0.5])
    g = rng.standard_normal(a.shape)
    reference = svdpi.polar_vjp(*svdpi.svd(a), g)
    dt = getattr(xp, dtype)
    u, s, vh = svdpi.svd(xp.asarray(a * scale, dtype=dt))
    got = to_numpy(svdpi.polar_vjp(u, s, vh, xp.asarray(g, dtype=dt))).astype(np.float64)
    assert_close(got * scale, reference, rtol=1e-11 if dtype == "float64" else 1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_zero_matrix_keeps_the_absolute_floor(xp, dtype):
    """A numerically zero matrix: finite pi/taylor gradients, the polar factor's NaN."""
    dt = getattr(xp, dtype)
    for value in (0.0, np.finfo(dtype).smallest_subnormal):
        u, s, vh = svdpi.svd(xp.asarray(np.full((4, 3), value), dtype=dt))
        g = xp.ones((4, 3), dtype=dt)
        for method in ("pi", "taylor"):
            grad = svdpi.svd_vjp(u, s, vh, xp.ones_like(u), xp.ones_like(s), xp.ones_like(vh))
            assert np.isfinite(to_numpy(grad)).all(), method
        assert np.isnan(to_numpy(svdpi.polar_vjp(u, s, vh, g))).all()


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_torch_direct_backward_at_extreme_scales(dtype, scale, method):
    """svdpi.torch.svd's hand-written real backward (_svd_native) has the same units."""
    torch = pytest.importorskip("torch")
    import svdpi.torch

    rng = np.random.default_rng(8)
    rtol = 1e-11 if dtype == "float64" else 1e-4
    for m, n in ((4, 3), (3, 4), (3, 3)):
        # Separated: the loss (even powers, so sign-free) is a function of the matrix.
        a = with_singular_values(rng, m, n, [2.0, 1.0, 0.5])
        grads = []
        for c in (1.0, scale):
            x = torch.tensor(a * c, dtype=getattr(torch, dtype), requires_grad=True)
            u, s, vh = svdpi.torch.svd(x, method=method)
            (u.pow(4).sum() + vh.pow(4).sum() + s.sum() / c).backward()
            # The core's VJP on the same factors: the direct-torch path is held to it.
            u, s, vh = u.detach(), s.detach(), vh.detach()
            core = svdpi.svd_vjp(
                u, s, vh, 4 * u**3, torch.full_like(s, 1 / c), 4 * vh**3, method=method
            )
            assert_close(x.grad, core, rtol=rtol)
            grads.append(x.grad.double().numpy() * c)
        assert_close(grads[1], grads[0], rtol=rtol)


def test_jax_svd_gradient_at_a_tiny_scale():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import svdpi.jax

    a = with_singular_values(np.random.default_rng(9), 4, 3, [2.0, 1.0, 0.5])

    def loss(x):
        u, _, vh = svdpi.jax.svd(x)
        return (u**4).sum() + (vh**4).sum()

    with jax.enable_x64(True):
        reference = np.asarray(jax.grad(loss)(jnp.asarray(a)))
        tiny = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(a * 1e-300)))
    assert_close(tiny * 1e-300, reference, rtol=1e-11)
