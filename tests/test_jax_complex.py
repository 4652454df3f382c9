"""svdpi.jax on complex Hermitian matrices: eig and the matrix functions (issue 17).

JAX's gradient of a real function of a complex array is the conjugate of
PyTorch's (``∂L/∂Re x − i ∂L/∂Im x``): the oracles are the core's
derivatives (conjugated where JAX's convention differs) and JAX's own
autodiff through ``jnp.linalg.eigh`` on separated spectra.
"""

from __future__ import annotations

import numpy as np
import pytest
from _complex_helpers import hermitian_with_spectrum, phase_free, random_complex, random_hermitian
from _helpers import assert_close

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402
from svdpi.functions import Exp, Log, Power  # noqa: E402

METHODS = ("pi", "taylor", "analytic")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _hermitian(spectrum, seed, batch=()):
    return hermitian_with_spectrum(spectrum, np.random.default_rng(seed), batch)


@pytest.mark.parametrize("method", METHODS)
def test_eig_values_and_jit_grad_are_the_cores(method):
    a = _hermitian([4.0, 2.0, 2.0, 1.0] if method != "analytic" else [4.0, 2.5, 1.5, 1.0], 0)
    w, v = svdpi.jax.eig(jnp.asarray(a), method=method)
    w_core, _ = svdpi.eig(a)
    assert (w.dtype, v.dtype) == (jnp.float64, jnp.complex128)
    assert_close(w, w_core, rtol=1e-13)
    # The solvers' phases differ: the eigenvectors are checked through a = V Λ Vᴴ.
    v_np = np.asarray(v)
    assert_close((v_np * np.asarray(w)) @ v_np.conj().T, a, atol=1e-13)
    g_v = phase_free(np.asarray(v), random_complex(np.random.default_rng(1), a.shape))
    g_w = np.random.default_rng(2).standard_normal(4)

    def loss(m):
        w, v = svdpi.jax.eig(m, method=method)
        return jnp.sum(w * g_w) + jnp.real(jnp.sum(jnp.conj(g_v) * v))

    grad = jax.jit(jax.grad(loss))(jnp.asarray(a))
    expected = svdpi.eig_vjp(w_core, np.asarray(v), g_w, g_v, method=method)
    assert_close(np.conj(np.asarray(grad)), expected, rtol=1e-12)


def test_analytic_grad_equals_jax_autodiff_through_eigh():
    a = _hermitian([5.0, 3.0, 2.0, 1.0], 3)
    weights = np.abs(random_complex(np.random.default_rng(4), a.shape))

    def loss(eigh):
        def f(m):
            w, v = eigh(m)
            return jnp.sum(jnp.abs(v) ** 2 * weights) + jnp.sum(w * w)

        return f

    ours = jax.grad(loss(lambda m: svdpi.jax.eig(m, method="analytic")))(jnp.asarray(a))

    def theirs(m):
        w, v = jnp.linalg.eigh((m + jnp.conj(m.T)) / 2)
        return w[::-1], v[:, ::-1]

    expected = jax.grad(loss(theirs))(jnp.asarray(a))
    assert_close(ours, np.asarray(expected), rtol=1e-12)


@pytest.mark.parametrize("canonical", [False, True])
def test_forward_mode_and_vmap_are_the_core_jvp(canonical):
    a = _hermitian([4.0, 2.0, 2.0, 1.0], 5, batch=(3,))
    t = random_complex(np.random.default_rng(6), a.shape)

    def eig(m):
        return tuple(svdpi.jax.eig(m, canonical=canonical))

    _, (dw, dv) = jax.jit(jax.vmap(lambda m, x: jax.jvp(eig, (m,), (x,))))(
        jnp.asarray(a), jnp.asarray(t)
    )
    w, v = svdpi.eig(a, canonical=canonical)
    dw_core, dv_core = svdpi.eig_jvp(w, v, t, canonical=canonical)
    assert_close(dw, dw_core, rtol=1e-12)
    assert_close(dv, dv_core, rtol=1e-12)


def test_canonical_phase_dependent_loss_matches_central_differences():
    a = _hermitian([3.0, 2.0, 1.0], 7)

    def loss(m):
        return jnp.sum(jnp.real(svdpi.jax.eig(m, canonical=True, method="analytic")[1]))

    grad = np.asarray(jax.grad(loss)(jnp.asarray(a)))
    for t in (random_hermitian(np.random.default_rng(8), a.shape),):
        difference = (float(loss(a + 1e-6 * t)) - float(loss(a - 1e-6 * t))) / 2e-6
        # JAX's convention: dL = Re Σ grad · dA (no conjugate).
        assert float(np.real(np.sum(grad * t))) == pytest.approx(difference, rel=1e-7)


def test_phase_dependent_loss_without_canonical_is_the_gradient_of_the_phase_choice():
    """JAX transposes the JVP: the cotangent is never seen, so nothing is checked (documented)."""
    a = _hermitian([3.0, 2.0, 1.0], 9)
    grad = jax.grad(lambda m: jnp.sum(jnp.real(svdpi.jax.eig(m)[1])))(jnp.asarray(a))
    w, v = svdpi.eig(a)
    from svdpi.adapter import vjp_from_projected

    vt = np.conj(np.asarray(v).T) @ np.ones_like(np.asarray(v))
    expected = vjp_from_projected(
        w, np.asarray(v), None, vt, method="pi", num_iters=19, xp=np, phase="off"
    )
    assert_close(np.conj(np.asarray(grad)), expected, rtol=1e-12)


FUNCTIONS = {
    "sqrtm": (svdpi.jax.sqrtm, Power(0.5), jnp.sqrt),
    "inv_sqrtm": (svdpi.jax.inv_sqrtm, Power(-0.5), lambda x: x**-0.5),
    "logm": (svdpi.jax.logm, Log(), jnp.log),
    "expm": (svdpi.jax.expm, Exp(), jnp.exp),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matrix_functions_equal_jax_autodiff_through_eigh_and_the_core(name):
    function, fn, f = FUNCTIONS[name]
    a = _hermitian([4.0, 2.0, 1.0, 0.5], 10)
    g = random_complex(np.random.default_rng(11), a.shape)

    def reference(m):
        w, v = jnp.linalg.eigh((m + jnp.conj(m.T)) / 2)
        return (v * f(w)[None, :]) @ jnp.conj(v.T)

    value = function(jnp.asarray(a))
    assert value.dtype == jnp.complex128
    assert_close(value, np.asarray(reference(jnp.asarray(a))), rtol=1e-13)
    ours = jax.jit(jax.grad(lambda m: jnp.sum(jnp.real(function(m) * g))))(jnp.asarray(a))
    theirs = jax.grad(lambda m: jnp.sum(jnp.real(reference(m) * g)))(jnp.asarray(a))
    assert_close(ours, np.asarray(theirs), rtol=1e-12)
    w, v = svdpi.eig(a)
    expected = svdpi.spectral_map_vjp(w, v, fn, np.conj(g))
    assert_close(np.conj(np.asarray(ours)), expected, rtol=1e-12)


def test_spectral_map_jvp_hessian_and_repeated_eigenvalues():
    a = _hermitian([3.0, 1.0, 1.0, 0.5], 12)
    rng = np.random.default_rng(13)
    t, g = random_hermitian(rng, a.shape), random_complex(rng, a.shape)
    w, v = svdpi.eig(a)
    _, tangent = jax.jvp(lambda m: svdpi.jax.spectral_map(m, Log()), (jnp.asarray(a),), (t,))
    assert_close(tangent, svdpi.spectral_map_jvp(w, v, Log(), t), rtol=1e-12)

    def loss(m):
        return jnp.sum(jnp.real(svdpi.jax.spectral_map(m, Log()) * g))

    # The derivative of the gradient along t: jvp of grad (forward over reverse).
    _, second = jax.jvp(jax.grad(loss), (jnp.asarray(a),), (jnp.asarray(t),))
    assert np.isfinite(np.asarray(second)).all()
    expected = svdpi.spectral_map_hvp(w, v, Log(), np.conj(g), t)
    assert_close(np.conj(np.asarray(second)), expected, rtol=1e-11)


def test_complex64_with_x64_off():
    with jax.enable_x64(False):
        a = jnp.asarray(_hermitian([3.0, 2.0, 1.0], 14), dtype=jnp.complex64)
        w, v = svdpi.jax.eig(a)
        assert (w.dtype, v.dtype) == (jnp.float32, jnp.complex64)
        g = jax.grad(lambda m: jnp.sum(jnp.real(svdpi.jax.sqrtm(m))))(a)
        assert g.dtype == jnp.complex64
        assert np.isfinite(np.asarray(g)).all()


def test_second_derivatives_agree_in_every_order_of_modes():
    """Reverse over forward and reverse over reverse reach the transposes of ``hvp_p``."""
    a = jnp.asarray(_hermitian([3.0, 1.0, 1.0, 0.5], 15))
    rng = np.random.default_rng(16)
    t, g = jnp.asarray(random_hermitian(rng, a.shape)), jnp.asarray(random_complex(rng, a.shape))
    w, v = svdpi.eig(np.asarray(a))
    hessian = svdpi.spectral_map_hvp(w, v, Power(-0.5), np.conj(np.asarray(g)), np.asarray(t))
    expected = np.conj(hessian)

    def loss(m):
        return jnp.sum(jnp.real(svdpi.jax.inv_sqrtm(m) * g))

    def directional(m):  # Re Σ dF[t] · g
        return jnp.sum(jnp.real(jax.jvp(svdpi.jax.inv_sqrtm, (m,), (t,))[1] * g))

    def along(m):  # Re Σ ∇loss · t
        return jnp.sum(jnp.real(jax.grad(loss)(m) * t))

    forward_over_reverse = jax.jvp(jax.grad(loss), (a,), (t,))[1]
    reverse_over_forward = jax.jit(jax.grad(directional))(a)
    reverse_over_reverse = jax.grad(along)(a)
    for second in (forward_over_reverse, reverse_over_forward, reverse_over_reverse):
        assert_close(second, expected, rtol=1e-11)


def test_analytic_eig_second_derivative_equals_jax_through_eigh():
    a = jnp.asarray(_hermitian([4.0, 2.5, 1.5, 1.0], 17))
    rng = np.random.default_rng(18)
    t, weights = jnp.asarray(random_hermitian(rng, a.shape)), np.abs(random_complex(rng, a.shape))

    def loss(eigh):
        def f(m):
            w, v = eigh(m)
            return jnp.sum(jnp.abs(v) ** 2 * weights) + jnp.sum(w**3)

        return f

    def theirs(m):
        w, v = jnp.linalg.eigh((m + jnp.conj(m.T)) / 2)
        return w[::-1], v[:, ::-1]

    ours = jax.jvp(jax.grad(loss(lambda m: svdpi.jax.eig(m, method="analytic"))), (a,), (t,))[1]
    expected = jax.jvp(jax.grad(loss(theirs)), (a,), (t,))[1]
    assert_close(ours, np.asarray(expected), rtol=1e-10)


def test_eig_and_maps_of_empty_and_n0_complex_batches():
    for shape in ((0, 3, 3), (2, 0, 0)):
        a = jnp.zeros(shape, dtype=jnp.complex128)
        w, v = svdpi.jax.eig(a, canonical=True)
        assert (w.shape, v.shape, w.dtype) == (shape[:-1], shape, jnp.float64)
        grad = jax.grad(lambda m: jnp.sum(jnp.real(svdpi.jax.logm(m))))(a)
        assert (grad.shape, grad.dtype) == (shape, jnp.complex128)
