"""The core at the ends of the floating-point range: huge, tiny and zero matrices (issue 18).

Each test here failed on svdpi 0.2 (checked against main before the change):
NaN eigenvalues for inputs near the dtype's maximum, eigenvalues of
well-conditioned tiny matrices raised to an absolute floor, NaN gradients at
the zero matrix, and NaN instead of ±inf where a true gradient overflows.
What is checked: finite where the true result is representable, ``±inf``
where it overflows, never NaN from an intermediate.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, spd_with_spectrum, to_numpy

import svdpi

METHODS = ["exact", "pi", "taylor", "analytic"]
EIG_METHODS = ["pi", "taylor", "analytic"]


def _dtype(xp, name):
    return getattr(xp, name)


# ------------------------------------------------------- near the maximum


@pytest.mark.parametrize(("dtype", "big"), [("float32", 3e38), ("float64", 1.5e308)])
def test_eig_of_a_matrix_near_the_dtype_maximum(xp, dtype, big):
    """0.2 formed a + aᵀ, which overflows: NaN eigenvalues for a finite input.

    JAX's own eigh forms (a + aᵀ)/2 too; the "svdpi.native" entry point "jax"
    brings svdpi.jax's eigh step, which skips it, without importing svdpi.jax.
    """
    a = from_numpy(xp, np.diag([big, 1.0]), _dtype(xp, dtype))
    w, _ = svdpi.eig(a)
    np.testing.assert_array_equal(to_numpy(w), np.array([big, 1.0], dtype=dtype))
    # Not diagonal: off-diagonal entries near the maximum too.
    q = np.array([[0.6, -0.8], [0.8, 0.6]])
    a = from_numpy(xp, q @ np.diag([big, big / 4]) @ q.T, _dtype(xp, dtype))
    w, v = svdpi.eig(a)
    np.testing.assert_allclose(to_numpy(w), [big, big / 4], rtol=1e-5)
    assert np.isfinite(to_numpy(v)).all()


def test_functions_and_gradients_downstream_of_a_huge_eigenvalue(xp):
    """float32 diag(3e38, 1): finite where the true value is representable, inf where not."""
    f32 = xp.float32
    # The eigenpairs eig returns (JAX's eigh cannot compute them at this scale).
    w, v = from_numpy(xp, np.array([3e38, 1.0]), f32), from_numpy(xp, np.eye(2), f32)
    ones = from_numpy(xp, np.ones((2, 2)), f32)
    root = to_numpy(svdpi.matrix_power(w, v, 0.5))
    np.testing.assert_allclose(np.abs(root), np.diag([np.sqrt(3e38), 1.0]), rtol=1e-6)
    with np.errstate(over="ignore"):
        square = to_numpy(svdpi.matrix_power(w, v, 2.0))
        square_vjp = to_numpy(svdpi.matrix_power_vjp(w, v, 2.0, ones))
    np.testing.assert_array_equal(square, np.array([[np.inf, 0.0], [0.0, 1.0]], np.float32))
    # G = x + y: 6e38 overflows, 3e38 + 1 and 2 do not.
    np.testing.assert_allclose(square_vjp, [[np.inf, 3e38], [3e38, 2.0]], rtol=1e-6)
    # 1 is below the eigensolver's resolution next to 3e38: raised to n · eps · max|λ|.
    floor = 2 * np.finfo(np.float32).eps * np.float32(3e38)
    np.testing.assert_allclose(
        to_numpy(svdpi.matrix_log(w, v)), np.diag([np.log(3e38), np.log(floor)]), rtol=1e-6
    )
    for method in METHODS:
        for grad in (
            svdpi.matrix_power_vjp(w, v, 0.5, ones, method=method),
            svdpi.matrix_log_vjp(w, v, ones, method=method),
            svdpi.zca_whitening_matrix_vjp(w, v, ones, method=method),
        ):
            assert np.isfinite(to_numpy(grad)).all(), method
    for method in EIG_METHODS:
        assert np.isfinite(to_numpy(svdpi.eig_vjp(w, v, w, ones, method=method))).all()


# ---------------------------------------------------------- tiny scales


def test_well_conditioned_tiny_matrices_keep_their_spectrum(xp):
    """0.2 raised every eigenvalue of these to the absolute floor smallest_normal / eps."""
    w, v = svdpi.eig(from_numpy(xp, np.diag([3.0, 2.0, 1.0]) * 1e-295))
    np.testing.assert_allclose(
        np.diag(to_numpy(svdpi.matrix_log(w, v))), np.log([3e-295, 2e-295, 1e-295]), rtol=1e-14
    )
    np.testing.assert_allclose(
        np.diag(to_numpy(svdpi.matrix_power(w, v, -1))), 1 / np.array([3e-295, 2e-295, 1e-295])
    )
    w, v = svdpi.eig(from_numpy(xp, np.diag([3.0, 2.0, 1.0]) * 1e-33, xp.float32))
    np.testing.assert_allclose(
        np.diag(to_numpy(svdpi.matrix_power(w, v, -0.5))),
        np.array([3.0, 2.0, 1.0]) ** -0.5 * 10**16.5,
        rtol=1e-6,
    )


@pytest.mark.parametrize(("dtype", "scale"), [("float64", 1e-300), ("float32", 1e-35)])
@pytest.mark.parametrize("method", EIG_METHODS)
def test_eig_derivatives_at_a_tiny_scale(xp, dtype, scale, method):
    """eig(c·a) has eigenvalues c·λ: the eigenvector gradient scales as 1/c, exactly.

    0.2's coefficients raised these eigenvalues to smallest_normal / eps.
    """
    rng = np.random.default_rng(0)
    w64, v64 = svdpi.eig(spd_with_spectrum([4.0, 2.0, 1.0], rng))
    gv = rng.standard_normal((3, 3))
    gl = rng.standard_normal(3)
    t = rng.standard_normal((3, 3))
    dt = _dtype(xp, dtype)
    w, v = from_numpy(xp, w64 * scale, dt), from_numpy(xp, v64, dt)
    gv_x, _gl_x, t_x = from_numpy(xp, gv, dt), from_numpy(xp, gl, dt), from_numpy(xp, t, dt)
    reference = svdpi.eig_vjp(w64, v64, None, gv, method=method)
    got = to_numpy(svdpi.eig_vjp(w, v, None, gv_x, method=method)).astype(np.float64)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    assert_close(got * scale, reference, rtol=rtol)
    # The eigenvalue term keeps its own scale beside the eigenvector term: a
    # cotangent of the eigenvalues as large (1/c) as the eigenvector term.
    gl_big = from_numpy(xp, gl / scale, dt)
    both = to_numpy(svdpi.eig_vjp(w, v, gl_big, gv_x, method=method)).astype(np.float64)
    assert_close((both - got) * scale, v64 @ np.diag(gl) @ v64.T, rtol=rtol)
    _, dv = svdpi.eig_jvp(w, v, t_x, method=method)
    _, dv_ref = svdpi.eig_jvp(w64, v64, t, method=method)
    assert_close(to_numpy(dv).astype(np.float64) * scale, dv_ref, rtol=rtol)


@pytest.mark.parametrize(("dtype", "scale"), [("float64", 1e-200), ("float32", 1e-25)])
@pytest.mark.parametrize("method", METHODS)
def test_matrix_function_gradients_scale_with_the_matrix(xp, dtype, scale, method):
    """vjp of λ^p at c·A is c^(p−1) times the one at A (0.2 clamped or overflowed)."""
    rng = np.random.default_rng(1)
    w64, v64 = svdpi.eig(spd_with_spectrum([4.0, 2.0, 1.0, 0.5], rng))
    g = rng.standard_normal((4, 4))
    dt = _dtype(xp, dtype)
    w, v, g_x = from_numpy(xp, w64 * scale, dt), from_numpy(xp, v64, dt), from_numpy(xp, g, dt)
    for p in (-0.5, 0.5):
        reference = svdpi.matrix_power_vjp(w64, v64, p, g, method=method)
        got = to_numpy(svdpi.matrix_power_vjp(w, v, p, g_x, method=method)).astype(np.float64)
        assert_close(got * scale ** (1 - p), reference, rtol=1e-11 if dtype == "float64" else 1e-5)
    reference = svdpi.matrix_log_vjp(w64, v64, g, method=method)
    if method == "pi":
        # log(c·λ) = log λ + log c, and "pi" (unlike the others) does not
        # differentiate a constant shift of φ to 0: it adds log c times the
        # "pi" gradient of V Vᵀ, the projector on every eigenpair.
        identity = svdpi.pca_projector_vjp(w64, v64, g, method="pi")
        reference = reference + np.log(scale) * identity
    got = to_numpy(svdpi.matrix_log_vjp(w, v, g_x, method=method)).astype(np.float64)
    assert_close(got * scale, reference, rtol=1e-11 if dtype == "float64" else 1e-5)


# ------------------------------------------------------- the zero matrix


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_at_the_zero_matrix(xp, dtype):
    """The floored functions are constant near 0 (every eigenvalue at the floor smallest_normal).

    "exact" and "taylor" give that derivative, 0; "pi"'s own formula is
    f(floor) / floor off the diagonal, which overflows: ±inf, never NaN
    (0.2: NaN for "pi" and "exact").
    """
    dt = _dtype(xp, dtype)
    w, v = svdpi.eig(from_numpy(xp, np.zeros((3, 3)), dt))
    g = from_numpy(xp, np.arange(9.0).reshape(3, 3), dt)
    finfo = np.finfo(dtype)
    with np.errstate(over="ignore"):
        forward = to_numpy(svdpi.zca_whitening_matrix(w, v))
        np.testing.assert_allclose(np.diag(forward), finfo.smallest_normal**-0.5, rtol=1e-6)
        for vjp in (
            lambda m: svdpi.zca_whitening_matrix_vjp(w, v, g, method=m),
            lambda m: svdpi.matrix_power_vjp(w, v, -1.0, g, method=m),
            lambda m: svdpi.matrix_log_vjp(w, v, g, method=m),
        ):
            for method in ("exact", "taylor"):
                np.testing.assert_array_equal(to_numpy(vjp(method)), np.zeros((3, 3)))
            pi = to_numpy(vjp("pi"))
            assert not np.isnan(pi).any()
            assert pi[0, 0] == 0.0
            assert pi[0, 1] != 0.0
        # Overflowing for the negative powers (finite for the logarithm).
        assert np.isinf(to_numpy(svdpi.matrix_power_vjp(w, v, -1.0, g, method="pi"))[0, 1])
    # The eigenvector gradient itself: finite, the coefficients' floor there is
    # smallest_normal / eps as in 0.2.
    for method in ("pi", "taylor"):
        assert np.isfinite(to_numpy(svdpi.eig_vjp(w, v, w, g, method=method))).all()


def test_torch_inv_sqrtm_gradient_at_the_zero_matrix_is_not_nan():
    torch = pytest.importorskip("torch")
    import svdpi.torch

    for method in ("pi", "exact", "taylor"):
        a = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
        svdpi.torch.inv_sqrtm(a, method=method).sum().backward()
        assert not torch.isnan(a.grad).any(), method


# -------------------------------------------------------- overflowing gradients


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("p", "scale"), [(-0.5, 1e-30), (-1.0, 1e-20)])
def test_overflowing_gradients_are_inf_not_nan(xp, method, p, scale):
    """float32: a true gradient beyond the range is ±inf (0.2: NaN, for every method)."""
    f32 = xp.float32
    w, v = svdpi.eig(from_numpy(xp, np.diag([3.0, 2.0, 1.0]) * scale, f32))
    ones = from_numpy(xp, np.ones((3, 3)), f32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        got = to_numpy(svdpi.matrix_power_vjp(w, v, p, ones, method=method))
    if method == "analytic":  # finite coefficients here: distinct eigenvalues
        assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, np.full((3, 3), -np.inf, np.float32))


@pytest.mark.parametrize("method", ["exact", "pi", "taylor"])
def test_an_overflowing_entry_leaves_the_representable_ones_finite(xp, method):
    """float32 diag(1e-20, 1e-26), p = −1/2: G_11 = −λ^{-3/2}/2 overflows, G_00, G_01 do not."""
    f32 = xp.float32
    lam = np.array([1e-20, 1e-26])
    w = from_numpy(xp, lam, f32)
    v = from_numpy(xp, np.eye(2), f32)
    g = from_numpy(xp, np.ones((2, 2)), f32)
    with np.errstate(over="ignore"):
        got = to_numpy(svdpi.matrix_power_vjp(w, v, -0.5, g, method=method))
    assert got[1, 1] == -np.inf
    assert np.isfinite(got[0, 0])
    assert np.isfinite(got[0, 1])
    assert got[0, 1] == got[1, 0]
    if method == "exact":
        np.testing.assert_allclose(got[0, 0], -0.5 * lam[0] ** -1.5, rtol=1e-6)
        expected = (lam[0] ** -0.5 - lam[1] ** -0.5) / (lam[0] - lam[1])
        np.testing.assert_allclose(got[0, 1], expected, rtol=1e-6)


def test_eig_of_a_symmetric_matrix_negates_it_exactly(xp):
    """The symmetrisation is exact for a symmetric input, subnormal entries too."""
    if xp.__name__.startswith("jax"):
        pytest.skip("JAX flushes subnormal numbers to zero on the CPU")
    a = np.diag([1.5e-323, 5e-324])
    w, _ = svdpi.eig(from_numpy(xp, a))
    np.testing.assert_array_equal(to_numpy(w), [1.5e-323, 5e-324])


def test_an_enormous_exponent_saturates(xp):
    """p = 1e308: the rescaling is a few factors (it was ceil(|p|) of them), and saturates."""
    w, v = from_numpy(xp, np.array([2.0, 1.0])), from_numpy(xp, np.eye(2))
    with np.errstate(over="ignore"):
        result = to_numpy(svdpi.matrix_power(w, v, 1e308))
        tiny = to_numpy(svdpi.matrix_power(w, v, -1e308))
    np.testing.assert_array_equal(result, [[np.inf, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(tiny, [[0.0, 0.0], [0.0, 1.0]])
