"""svdpi.jax's SVD: svd, polar, low_rank, singular_value_map under JAX transforms."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import to_numpy
from _svd_helpers import assert_close, phase_free, random_matrix, with_singular_values

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402
from svdpi.functions import Power  # noqa: E402

SHAPES = [(5, 3), (3, 5), (4, 4)]


@pytest.fixture(autouse=True)
def x64():
    """Float64 for every test here, for its duration only (whatever ran before)."""
    with jax.enable_x64(True):
        yield


def _matrix(m, n, seed, complex_=False, batch=(2,), spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        return random_matrix(rng, (*batch, m, n), complex_)
    return with_singular_values(rng, m, n, spectrum, batch=batch, complex_=complex_)


def _linear_loss(cotangents, **options):
    """``Re<ḡU, U> + <ḡS, S> + Re<ḡVh, Vh>``: its torch-convention gradient is svd_vjp's."""
    grad_u, grad_s, grad_vh = (jnp.asarray(x) for x in cotangents)

    def loss(a):
        u, s, vh = svdpi.jax.svd(a, **options)
        return (
            jnp.real(jnp.sum(jnp.conj(grad_u) * u))
            + jnp.sum(grad_s * s)
            + jnp.real(jnp.sum(jnp.conj(grad_vh) * vh))
        )

    return loss


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_forward_is_jnp_linalg_svd(m, n, complex_):
    a = jnp.asarray(_matrix(m, n, 0, complex_))
    for x, y in zip(svdpi.jax.svd(a), jnp.linalg.svd(a, full_matrices=False), strict=True):
        assert x.dtype == y.dtype
        assert_close(x, y, rtol=0)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(
    ("m", "n", "method"),
    [(5, 3, "pi"), (3, 5, "pi"), (4, 4, "taylor"), (5, 3, "analytic"), (3, 5, "analytic")],
)
def test_jit_grad_is_the_core_svd_vjp(m, n, complex_, method):
    """JAX's gradient of a real loss of complex input is the conjugate of PyTorch's."""
    spectrum = [2.0, 1.5, 1.0, 0.5] if method == "analytic" else [2.0, 1.0, 1.0, 0.5]
    a = _matrix(m, n, 1, complex_, spectrum=spectrum)
    u, s, vh = svdpi.svd(a)
    rng = np.random.default_rng(2)
    grad_u, grad_vh = phase_free(
        u, vh, random_matrix(rng, u.shape, complex_), random_matrix(rng, vh.shape, complex_)
    )
    grad_s = rng.standard_normal(s.shape)
    expected = svdpi.svd_vjp(u, s, vh, grad_u, grad_s, grad_vh, method=method)
    grad = jax.jit(jax.grad(_linear_loss((grad_u, grad_s, grad_vh), method=method)))(a)
    assert_close(np.conj(to_numpy(grad)), expected, rtol=1e-12)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_jvp_is_the_core_svd_jvp_and_vmap_matches_the_batch(complex_):
    a = jnp.asarray(_matrix(5, 3, 3, complex_, batch=(3,), spectrum=[2.0, 1.0, 1.0]))
    t = jnp.asarray(_matrix(5, 3, 4, complex_, batch=(3,)))
    _, tangents = jax.jvp(lambda x: tuple(svdpi.jax.svd(x)), (a,), (t,))
    expected = svdpi.svd_jvp(*svdpi.svd(a), t)
    for actual, desired in zip(tangents, expected, strict=True):
        assert_close(actual, desired, rtol=1e-13)
    batched = jax.jit(jax.vmap(lambda x, y: jax.jvp(lambda z: svdpi.jax.svd(z).U, (x,), (y,))[1]))
    assert_close(batched(a, t), expected[0], rtol=1e-13)


def test_jacfwd_equals_jacrev_and_both_are_finite_at_repeated_singular_values():
    a = jnp.asarray(_matrix(4, 3, 5, batch=(), spectrum=[2.0, 2.0, 0.5]))

    def f(x):
        u, s, vh = svdpi.jax.svd(x)
        return jnp.concatenate([u.ravel(), s, vh.ravel()])

    forward, reverse = jax.jacfwd(f)(a), jax.jacrev(f)(a)
    assert bool(jnp.isfinite(forward).all())
    assert_close(forward, reverse, rtol=1e-12)
    # jnp.linalg.svd's own derivative is not finite here.
    reference = jax.jacrev(lambda x: jnp.linalg.svd(x, full_matrices=False)[0].ravel())(a)
    assert not bool(jnp.isfinite(reference).all()) or float(jnp.abs(reference).max()) > 1e6


def test_canonical_phase_dependent_loss_has_a_gradient():
    a = jnp.asarray(_matrix(4, 3, 6, True, batch=()))

    def loss(x):
        return jnp.real(svdpi.jax.svd(x, canonical=True, method="analytic").U).sum()

    grad = jax.grad(loss)(a)
    rng = np.random.default_rng(7)
    for direction in (random_matrix(rng, a.shape), 1j * random_matrix(rng, a.shape)):
        expected = (loss(a + 1e-6 * direction) - loss(a - 1e-6 * direction)) / 2e-6
        # JAX's gradient is conjugated: <conj(g), d> in PyTorch's convention.
        actual = float(jnp.real(jnp.sum(grad * direction)))
        assert actual == pytest.approx(float(expected), rel=1e-7)


@pytest.mark.parametrize(
    ("m", "n", "complex_"), [(5, 3, False), (3, 5, False), (4, 4, False), (5, 3, True)]
)
def test_maps_under_jit_and_vmap_are_the_core_derivatives(m, n, complex_):
    a = jnp.asarray(_matrix(m, n, 8, complex_, batch=(2,), spectrum=[2.0, 2.0, 1.0, 0.5]))
    g = jnp.asarray(_matrix(m, n, 9, complex_, batch=(2,)))
    u, s, vh = svdpi.svd(a)
    cases = [
        (svdpi.jax.polar, svdpi.polar_vjp(u, s, vh, g)),
        (
            lambda x: svdpi.jax.singular_value_map(x, Power(3.0)),
            svdpi.singular_value_map_vjp(u, s, vh, Power(3.0), g),
        ),
        (
            lambda x: svdpi.jax.low_rank(x, 2),
            svdpi.singular_value_map_vjp(
                u,
                s,
                vh,
                Power(1.0),
                g,
                mask=jnp.broadcast_to(jnp.arange(s.shape[-1]) < 2, s.shape),
            ),
        ),
    ]
    for fn, expected in cases:

        def loss(x, y, fn=fn):
            return jnp.real(jnp.sum(jnp.conj(y) * fn(x)))

        grad = jax.jit(jax.vmap(jax.grad(loss)))(a, g)
        assert bool(jnp.isfinite(grad).all())
        assert_close(jnp.conj(grad), expected, rtol=1e-12)
        _, tangent = jax.jvp(fn, (a,), (g,))
        assert bool(jnp.isfinite(tangent).all())


def test_map_values():
    a = jnp.asarray(_matrix(4, 3, 10, batch=()))
    u, s, vh = np.linalg.svd(np.asarray(a), full_matrices=False)
    assert_close(svdpi.jax.polar(a), u @ vh, rtol=1e-13)
    assert_close(svdpi.jax.low_rank(a, 2), (u[:, :2] * s[:2]) @ vh[:2], rtol=1e-13)
    assert_close(svdpi.jax.singular_value_map(a, Power(2.0)), (u * s**2) @ vh, rtol=1e-13)


def test_second_derivatives_raise():
    a = jnp.asarray(_matrix(4, 3, 11, batch=()))
    for fn in (
        lambda x: svdpi.jax.svd(x).U.sum(),
        lambda x: svdpi.jax.polar(x).sum(),
        lambda x: svdpi.jax.singular_value_map(x, Power(3.0)).sum(),
    ):
        with pytest.raises(NotImplementedError, match="differentiable once"):
            jax.hessian(fn)(a)


def test_float32_with_x64_off():
    with jax.enable_x64(False):
        a = jnp.asarray(_matrix(4, 3, 12, batch=()), dtype=jnp.float32)
        u, s, _ = jax.jit(svdpi.jax.svd)(a)
        assert (u.dtype, s.dtype) == (jnp.float32, jnp.float32)
        g = jax.jit(jax.grad(lambda m: svdpi.jax.svd(m).U[:, 0].sum()))(a)
        assert g.dtype == jnp.float32
        forward = jax.jacfwd(lambda m: svdpi.jax.polar(m))(a)
        reverse = jax.jacrev(lambda m: svdpi.jax.polar(m))(a)
        assert_close(forward, reverse, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (0, 3, 2)])
def test_empty_input(shape):
    a = jnp.zeros(shape)
    u, s, vh = svdpi.jax.svd(a)
    expected = jnp.linalg.svd(a, full_matrices=False)
    assert [x.shape for x in (u, s, vh)] == [x.shape for x in expected]
    assert jax.grad(lambda x: svdpi.jax.svd(x).S.sum())(a).shape == shape
    assert jax.grad(lambda x: svdpi.jax.polar(x).sum())(a).shape == shape


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        svdpi.jax.svd(jnp.ones((2, 2), dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\)"):
        svdpi.jax.polar(jnp.ones(3))
    with pytest.raises(ValueError, match="method"):
        svdpi.jax.svd(jnp.eye(2), method="exact")
    with pytest.raises(ValueError, match="rank must be >= 0"):
        svdpi.jax.low_rank(jnp.eye(2), -1)
    with pytest.raises(ValueError, match=r"f\(0\) = 0"):
        jax.jit(lambda x: svdpi.jax.singular_value_map(x, Power(0.0)))(jnp.eye(2))
