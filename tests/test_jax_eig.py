"""svdpi.jax.eig: values, derivatives against the core and oracles, JAX transforms, packaging."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _helpers import assert_close, random_spd, spd_with_spectrum, to_numpy

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402

METHODS = ["pi", "taylor", "analytic"]


@pytest.fixture(autouse=True)
def x64():
    """Float64 for every test here, for its duration only (whatever ran before)."""
    with jax.enable_x64(True):
        yield


def _spd(n, seed, batch=(), spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        return random_spd(n, rng, batch=batch)
    return spd_with_spectrum(spectrum, rng, batch=batch)


def _cotangents(shape, seed):
    rng = np.random.default_rng(seed)
    n = shape[-1]
    return rng.standard_normal((*shape[:-1],)), rng.standard_normal((*shape[:-1], n))


def _linear_loss(gl, gv, method, num_iters=19):
    """<gl, λ> + <gV, V>, whose gradient is eig_vjp(λ, V, gl, gV) for the V that eig returns."""
    gl, gv = jnp.asarray(gl), jnp.asarray(gv)

    def loss(a):
        w, v = svdpi.jax.eig(a, method=method, num_iters=num_iters)
        return jnp.sum(gl * w) + jnp.sum(gv * v)

    return loss


def _run(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )


# -- packaging -----------------------------------------------------------------------------


def test_importing_svdpi_and_svdpi_torch_does_not_import_jax():
    pytest.importorskip("torch")
    code = (
        "import sys, svdpi, svdpi.torch\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
        "assert 'jaxlib' not in sys.modules, 'jaxlib was imported'\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr


def test_svdpi_jax_without_jax_raises_a_clear_import_error():
    code = (
        "import sys\n"
        "sys.modules['jax'] = None  # as if JAX were not installed\n"
        "import svdpi\n"
        "try:\n"
        "    import svdpi.jax\n"
        "except ImportError as error:\n"
        "    assert 'needs JAX' in str(error) and 'pip install' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('svdpi.jax imported without JAX')\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr


# -- forward -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_forward_is_the_core_eig(batch):
    a = _spd(5, 0, batch=batch)
    w, v = svdpi.jax.eig(a)
    w_ref, _ = svdpi.eig(a)
    assert isinstance(w, jax.Array)
    assert w.dtype == jnp.float64
    assert_close(w, w_ref, rtol=1e-13)
    assert_close(v @ jnp.matrix_transpose(v), np.broadcast_to(np.eye(5), v.shape), atol=1e-13)
    assert_close((v * w[..., None, :]) @ jnp.matrix_transpose(v), a, rtol=1e-12)
    assert bool(jnp.all(w[..., :-1] >= w[..., 1:]))


def test_float32_with_x64_off():
    with jax.enable_x64(False):
        a = jnp.asarray(_spd(4, 1, batch=(2,)), dtype=jnp.float32)
        w, v = jax.jit(svdpi.jax.eig)(a)
        assert w.dtype == jnp.float32
        assert v.dtype == jnp.float32
        g = jax.jit(jax.grad(lambda m: svdpi.jax.eig(m).eigenvectors[..., 0].sum()))(a)
        assert g.dtype == jnp.float32
        forward = jax.jacfwd(lambda m: svdpi.jax.eig(m).eigenvectors)(a[0])
        reverse = jax.jacrev(lambda m: svdpi.jax.eig(m).eigenvectors)(a[0])
        assert forward.dtype == reverse.dtype == jnp.float32
        assert_close(reverse, forward, rtol=1e-5)
    with jax.enable_x64(True):
        a64 = jnp.asarray(a, dtype=jnp.float64)
        w64, v64 = svdpi.jax.eig(a64)
        vt_g = jnp.zeros_like(v64).at[..., 0].set(1.0)
        expected = svdpi.eig_vjp(w64, v64, None, vt_g)
    assert_close(w, w64, rtol=1e-5)
    # float32 eigenvector signs match float64's here (same LAPACK routine, well
    # separated spectrum); the gradient of the signed loss must then match too.
    assert_close(g, expected, rtol=1e-4)


def test_empty_batch():
    w, v = svdpi.jax.eig(jnp.zeros((0, 3, 3)))
    assert w.shape == (0, 3)
    assert v.shape == (0, 3, 3)
    g = jax.grad(lambda m: svdpi.jax.eig(m).eigenvalues.sum())(jnp.zeros((0, 3, 3)))
    assert g.shape == (0, 3, 3)


@pytest.mark.parametrize("method", METHODS)
def test_n_zero_gives_empty_results_like_the_core(method):
    a = jnp.zeros((2, 0, 0))
    w, v = jax.jit(lambda m: tuple(svdpi.jax.eig(m, method=method)))(a)
    w_ref, v_ref = svdpi.eig(a)
    assert w.shape == w_ref.shape == (2, 0)
    assert v.shape == v_ref.shape == (2, 0, 0)
    g = jax.grad(lambda m: svdpi.jax.eig(m, method=method).eigenvalues.sum())(a)
    assert g.shape == (2, 0, 0)
    _, (dw, dv) = jax.jvp(lambda m: tuple(svdpi.jax.eig(m, method=method)), (a,), (a,))
    assert dw.shape == (2, 0)
    assert dv.shape == (2, 0, 0)


def test_accepts_array_likes():
    w, _ = svdpi.jax.eig(np.diag([1.0, 2.0]))
    assert isinstance(w, jax.Array)
    assert_close(w, np.array([2.0, 1.0]), rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "svd"}, ValueError, "method must be one of"),
        ({"num_iters": 0}, ValueError, "num_iters must be >= 1"),
        ({"num_iters": 2.5}, TypeError, "num_iters must be an integer"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.eig(jnp.eye(3), **kwargs)


@pytest.mark.parametrize(
    ("a", "error", "match"),
    [
        # Complex Hermitian input is accepted (tests/test_jax_complex.py).
        (np.eye(3, dtype=np.int32), TypeError, "a must have a floating dtype"),
        (np.ones((3, 2)), ValueError, "a must be square"),
        (np.ones(3), ValueError, r"a must have shape \(..., n, n\)"),
    ],
)
def test_bad_input(a, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.eig(a)


def test_nan_propagates_under_jit_and_eagerly():
    a = jnp.eye(3).at[1, 2].set(jnp.nan)
    for function in (svdpi.jax.eig, jax.jit(svdpi.jax.eig)):
        w, _ = function(a)
        assert not bool(jnp.isfinite(w).all())


def test_core_eig_with_check_finite_runs_under_jit():
    """The core's check skips lazy (JAX) arrays instead of reading a tracer."""
    a = _spd(4, 2)
    w, _ = jax.jit(lambda m: tuple(svdpi.eig(m, check_finite=True)))(jnp.asarray(a))
    assert_close(w, svdpi.eig(a).eigenvalues, rtol=1e-13)
    nan = jax.jit(lambda m: svdpi.eig(m).eigenvalues)(jnp.asarray(a).at[0, 1].set(jnp.nan))
    assert not bool(jnp.isfinite(nan).all())


# -- derivatives against the core and svdpi.torch ------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("num_iters", [1, 19])
def test_grad_equals_core_eig_vjp(method, num_iters):
    a = _spd(6, 3, batch=(2,))
    gl, gv = _cotangents((2, 6, 6), 4)
    got = jax.jit(jax.grad(_linear_loss(gl, gv, method, num_iters)))(jnp.asarray(a))
    # The core on the same JAX arrays: the same eigh, so the same eigenvector signs.
    w, v = svdpi.eig(jnp.asarray(a))
    expected = svdpi.eig_vjp(
        w, v, jnp.asarray(gl), jnp.asarray(gv), method=method, num_iters=num_iters
    )
    assert_close(got, expected, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_jvp_equals_core_eig_jvp(method):
    a = jnp.asarray(_spd(5, 5, batch=(3,)))
    tangent = jnp.asarray(np.random.default_rng(6).standard_normal((3, 5, 5)))

    def eigenpairs(m):
        return tuple(svdpi.jax.eig(m, method=method, num_iters=7))

    (w, v), (dw, dv) = jax.jit(lambda m, t: jax.jvp(eigenpairs, (m,), (t,)))(a, tangent)
    dw_ref, dv_ref = svdpi.eig_jvp(w, v, tangent, method=method, num_iters=7)
    assert_close(dw, dw_ref, rtol=1e-12)
    assert_close(dv, dv_ref, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_reverse_mode_is_the_transpose_of_forward_mode(method):
    """jacrev (JAX's transposition of the custom JVP) equals jacfwd (the JVP itself)."""
    a = jnp.asarray(_spd(4, 7))

    def eigenvectors(m):
        return svdpi.jax.eig(m, method=method).eigenvectors

    forward = jax.jacfwd(eigenvectors)(a)
    reverse = jax.jacrev(eigenvectors)(a)
    assert forward.shape == (4, 4, 4, 4)
    assert_close(reverse, forward, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spectrum", [None, [4.0, 2.0, 2.0, 2.0, 0.5]], ids=["random", "triple"])
def test_grad_equals_svdpi_torch(method, spectrum):
    torch = pytest.importorskip("torch")
    import svdpi.torch

    if method == "analytic" and spectrum is not None:
        pytest.skip("the analytic gradient is infinite at a repeated eigenvalue")
    a = _spd(5, 8, batch=(2,), spectrum=spectrum)
    gl, gv = _cotangents((2, 5, 5), 9)
    a_torch = torch.from_numpy(a).requires_grad_(True)
    w_t, v_t = svdpi.torch.eig(a_torch, method=method)
    # The same eigenvectors as JAX's, up to sign: fix the signs to JAX's.
    w_j, v_j = svdpi.jax.eig(jnp.asarray(a), method=method)
    signs = torch.sign((v_t.detach() * torch.from_numpy(to_numpy(v_j))).sum(-2, keepdim=True))
    ((w_t * torch.from_numpy(gl)).sum() + (v_t * signs * torch.from_numpy(gv)).sum()).backward()
    got = jax.grad(_linear_loss(gl, gv, method))(jnp.asarray(a))
    if spectrum is not None:
        # Inside a repeated eigenvalue the eigenvectors of the two libraries
        # are different bases: compare each with the core on its own basis.
        expected = svdpi.eig_vjp(w_j, v_j, jnp.asarray(gl), jnp.asarray(gv), method=method)
        assert_close(got, expected, rtol=1e-12)
        return
    assert_close(got, a_torch.grad, rtol=1e-12)


# -- derivatives against independent oracles -----------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_eigenvalue_gradient_matches_finite_differences(method):
    """dλ_j = v_jᵀ da v_j for every method: central differences of a smooth loss."""
    a = _spd(5, 10)
    weights = np.random.default_rng(11).standard_normal(5)
    direction = np.random.default_rng(12).standard_normal((5, 5))
    direction = (direction + direction.T) / 2

    def loss(m):
        return jnp.sum(jnp.asarray(weights) * svdpi.jax.eig(m, method=method).eigenvalues)

    h = 1e-5
    numeric = (loss(a + h * direction) - loss(a - h * direction)) / (2 * h)
    analytic = jnp.sum(jax.grad(loss)(jnp.asarray(a)) * direction)
    assert abs(float(analytic) - float(numeric)) <= 1e-8 * max(1.0, abs(float(numeric)))


def test_analytic_check_grads_first_and_second_order():
    """jax.test_util.check_grads (finite differences) in both modes, orders 1 and 2."""
    a = jnp.asarray(_spd(4, 13))
    weights = jnp.asarray(np.random.default_rng(14).standard_normal((4, 4)))

    def loss(m):
        # The projectors v_j v_jᵀ and the eigenvalues: smooth, sign-invariant.
        w, v = svdpi.jax.eig(m, method="analytic")
        return jnp.sum(w**2) + jnp.sum(weights * (v[:, :2] @ v[:, :2].T))

    check_grads(loss, (a,), order=1, modes=["fwd", "rev"])
    check_grads(loss, (a,), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize(
    "second",
    [
        lambda f: jax.hessian(f),
        lambda f: jax.jacfwd(jax.jacrev(f)),
        lambda f: jax.jacrev(jax.jacfwd(f)),
        lambda f: jax.grad(lambda m: jax.grad(f)(m).sum()),
    ],
    ids=["hessian", "jacfwd-jacrev", "jacrev-jacfwd", "grad-grad"],
)
def test_second_derivatives_of_the_series_raise(method, second):
    a = jnp.asarray(_spd(3, 15))

    def loss(m):
        w, v = svdpi.jax.eig(m, method=method)
        return jnp.sum(w) + jnp.sum(v[:, 0] ** 2 * jnp.arange(3.0))

    with pytest.raises(NotImplementedError, match="differentiable once"):
        jax.jit(second(loss))(a)


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize(
    "spectrum",
    [[3.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], [1.0, 1e-20, 0.0, 0.0], [0.0] * 4],
    ids=["triple", "identity", "rank-one", "zero"],
)
def test_degenerate_spectra_give_finite_gradients_under_jit(method, spectrum):
    a = jnp.asarray(_spd(4, 16, spectrum=spectrum))
    gl, gv = _cotangents((4, 4), 17)
    loss = _linear_loss(gl, gv, method)
    got = jax.jit(jax.grad(loss))(a)
    assert bool(jnp.isfinite(got).all())
    w, v = svdpi.eig(a)
    assert_close(
        got, svdpi.eig_vjp(w, v, jnp.asarray(gl), jnp.asarray(gv), method=method), rtol=1e-12
    )
    _, tangents = jax.jit(lambda m: jax.jvp(lambda x: tuple(svdpi.jax.eig(x)), (m,), (m,)))(a)
    assert all(bool(jnp.isfinite(t).all()) for t in tangents)


@pytest.mark.parametrize("method", METHODS)
def test_jit_vmap_grad_equals_the_core_per_matrix(method):
    spectra = [None, [3.0, 1.0, 1.0, 0.5]] if method != "analytic" else [None, None]
    a = np.stack([_spd(4, 18 + i, spectrum=s) for i, s in enumerate(spectra)])
    gl, gv = _cotangents((2, 4, 4), 19)

    def loss(m, g_l, g_v):
        w, v = svdpi.jax.eig(m, method=method)
        return jnp.sum(g_l * w) + jnp.sum(g_v * v)

    got = jax.jit(jax.vmap(jax.grad(loss)))(jnp.asarray(a), jnp.asarray(gl), jnp.asarray(gv))
    for i in range(2):
        w, v = svdpi.eig(jnp.asarray(a[i]))
        expected = svdpi.eig_vjp(w, v, jnp.asarray(gl[i]), jnp.asarray(gv[i]), method=method)
        assert bool(jnp.isfinite(got[i]).all())
        assert_close(got[i], expected, rtol=1e-12)
