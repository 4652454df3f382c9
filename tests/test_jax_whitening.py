"""svdpi.jax whitening: matrices and projector against the core's VJPs, the functional ZCA step."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, random_spd, spd_with_spectrum

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402

METHODS = ["pi", "taylor", "analytic"]


@pytest.fixture(autouse=True)
def x64():
    """Float64 for every test here, for its duration only (whatever ran before)."""
    with jax.enable_x64(True):
        yield


def _cov(n, seed, batch=(), spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        return jnp.asarray(random_spd(n, rng, batch=batch))
    return jnp.asarray(spd_with_spectrum(spectrum, rng, batch=batch))


def _mask(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.7
    mask[..., 0] = True
    return jnp.asarray(mask)


def _core_reference(name, cov, cotangent, tangent, mask, method, **kwargs):
    """The core's VJP and JVP of a matrix function at ``cov``, on the same JAX eigenpairs."""
    w, v = svdpi.eig(cov)
    kwargs = dict(kwargs)
    p = kwargs.pop("p", -0.5)
    options = {"mask": mask, "method": method, **kwargs}
    if name == "matrix_log":
        return (
            svdpi.matrix_log_vjp(w, v, cotangent, **options),
            svdpi.matrix_log_jvp(w, v, tangent, **options),
        )
    if name == "pca_projector":
        # A projector is the matrix function with φ the 0/1 indicator (power 0).
        keep = mask if mask is not None else jnp.ones(w.shape, dtype=bool)
        if kwargs.get("n_components") is not None:
            keep = keep & (jnp.arange(w.shape[-1]) < kwargs["n_components"])
        return (
            svdpi.pca_projector_vjp(w, v, cotangent, **options),
            svdpi.matrix_power_jvp(w, v, 0.0, tangent, mask=keep, method=method),
        )
    return (
        svdpi.matrix_power_vjp(w, v, p, cotangent, **options),
        svdpi.matrix_power_jvp(w, v, p, tangent, **options),
    )


CASES = [
    ("zca_whitening_matrix", {}),
    ("matrix_power", {"p": 0.5}),
    ("matrix_power", {"p": -1.0}),
    ("matrix_log", {}),
    ("pca_projector", {"n_components": 2}),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_matrix_function_derivatives_equal_the_core(name, kwargs, method, masked):
    """jax.grad equals the core's VJP, jax.jvp the core's JVP, under jit."""
    cov = _cov(4, 1, batch=(2,))
    rng = np.random.default_rng(2)
    cotangent = jnp.asarray(rng.standard_normal((2, 4, 4)))
    tangent = jnp.asarray(rng.standard_normal((2, 4, 4)))
    mask = _mask((2, 4), 3) if masked else None
    function = getattr(svdpi.jax, name)
    args = (kwargs["p"],) if "p" in kwargs else ()
    options = {k: val for k, val in kwargs.items() if k != "p"}

    def f(c):
        return function(c, *args, mask=mask, method=method, **options)

    got_vjp = jax.jit(jax.grad(lambda c: jnp.sum(cotangent * f(c))))(cov)
    value, got_jvp = jax.jit(lambda c, t: jax.jvp(f, (c,), (t,)))(cov, tangent)
    expected_vjp, expected_jvp = _core_reference(
        name, cov, cotangent, tangent, mask, method, **kwargs
    )
    assert_close(got_vjp, expected_vjp, rtol=1e-12)
    assert_close(got_jvp, expected_jvp, rtol=1e-12)
    w, v = svdpi.eig(cov)
    if name == "matrix_log":
        expected_value = svdpi.matrix_log(w, v, mask=mask)
    elif name == "pca_projector":
        expected_value = svdpi.pca_projector(v, mask=mask, **options)
    else:
        expected_value = svdpi.matrix_power(w, v, kwargs.get("p", -0.5), mask=mask)
    assert_close(value, expected_value, rtol=1e-13)


@pytest.mark.parametrize("method", ["pi", "taylor", "exact"])
def test_whitening_derivatives_at_a_singular_and_repeated_spectrum(method):
    """Below-floor and repeated eigenvalues: finite, and equal to the core."""
    cov = _cov(4, 4, spectrum=[2.0, 1.0, 1.0, 1e-30])
    cotangent = jnp.asarray(np.random.default_rng(5).standard_normal((4, 4)))
    got = jax.jit(
        jax.grad(lambda c: jnp.sum(cotangent * svdpi.jax.zca_whitening_matrix(c, method=method)))
    )(cov)
    w, v = svdpi.eig(cov)
    expected = svdpi.zca_whitening_matrix_vjp(w, v, cotangent, method=method)
    assert bool(jnp.isfinite(got).all())
    assert_close(got, expected, rtol=1e-12)


def test_exact_method_matches_finite_differences():
    """method="exact" is the derivative of the forward: jax.test_util.check_grads."""
    from jax.test_util import check_grads

    cov = _cov(4, 6)
    for function in (
        lambda c: svdpi.jax.matrix_power(c, 0.5, method="exact"),
        lambda c: svdpi.jax.matrix_log(c, method="exact"),
        lambda c: svdpi.jax.zca_whitening_matrix(c, method="exact"),
    ):
        check_grads(function, (cov,), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("method", METHODS)
def test_matrix_functions_of_the_series_are_differentiable_once(method):
    cov = _cov(3, 7)
    f = lambda c: jnp.sum(svdpi.jax.matrix_power(c, 0.5, method=method) ** 2)  # noqa: E731
    with pytest.raises(NotImplementedError, match=r"matrix_power with .* differentiable once"):
        jax.jit(jax.hessian(f))(cov)


def test_matrix_functions_under_vmap_and_float32():
    cov = _cov(3, 8, batch=(4,))
    got = jax.vmap(lambda c: svdpi.jax.matrix_log(c))(cov)
    assert_close(got, svdpi.jax.matrix_log(cov), rtol=1e-13)
    with jax.enable_x64(False):
        single = svdpi.jax.matrix_power(jnp.asarray(cov, dtype=jnp.float32), -0.5)
        assert single.dtype == jnp.float32
    assert_close(single, svdpi.jax.matrix_power(cov, -0.5), rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: svdpi.jax.matrix_power(a, "2"), TypeError, "p must be a real number"),
        (lambda a: svdpi.jax.matrix_power(a, float("nan")), ValueError, "p must be finite"),
        (lambda a: svdpi.jax.matrix_log(a, method="svd"), ValueError, "method must be one of"),
        (lambda a: svdpi.jax.matrix_log(a, num_iters=0), ValueError, "num_iters"),
        (lambda a: svdpi.jax.matrix_log(a[:2]), ValueError, "square"),
        (lambda a: svdpi.jax.pca_projector(a, n_components=4), ValueError, "n_components"),
        (
            lambda a: svdpi.jax.zca_whitening_matrix(a, mask=jnp.ones(2, dtype=bool)),
            ValueError,
            "mask must have the shape",
        ),
        (
            lambda a: svdpi.jax.zca_whitening_matrix(a, mask=jnp.ones(3)),
            TypeError,
            "mask must be a boolean array",
        ),
    ],
)
def test_matrix_function_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(jnp.eye(3))


@pytest.mark.parametrize(
    "function",
    [
        lambda a: svdpi.jax.matrix_power(a, -0.5, method="exact"),
        lambda a: svdpi.jax.matrix_log(a),
        lambda a: svdpi.jax.zca_whitening_matrix(a, method="pi"),
        lambda a: svdpi.jax.pca_projector(a),
    ],
)
def test_matrix_functions_of_n_zero_matrices_are_empty(function):
    # As svdpi.jax.eig and jnp.linalg.eigh: n = 0 gives empty results and gradients.
    a = jnp.zeros((2, 0, 0))
    assert function(a).shape == (2, 0, 0)
    assert jax.grad(lambda m: function(m).sum())(a).shape == (2, 0, 0)


# -- the functional ZCA step ---------------------------------------------------------------


def _activations(shape, seed):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    mixing = rng.standard_normal((channels, channels)) + 2 * np.eye(channels)
    return jnp.asarray(rng.standard_normal(shape) @ mixing + rng.standard_normal(channels))


@pytest.mark.parametrize("shape", [(256, 6), (16, 4, 4, 6)])
@pytest.mark.parametrize("num_groups", [1, 2, 3])
def test_zca_whitening_whitens_each_group(shape, num_groups):
    x = _activations(shape, 7)
    y, stats = jax.jit(svdpi.jax.zca_whitening, static_argnames=["num_groups", "eps"])(
        x, num_groups=num_groups, eps=1e-9
    )
    assert y.shape == x.shape
    d = shape[-1] // num_groups
    samples = y.reshape(-1, num_groups, d)
    cov = jnp.einsum("mgi,mgj->gij", samples, samples) / samples.shape[0]
    assert_close(cov, np.broadcast_to(np.eye(d), cov.shape), atol=1e-3)
    assert_close(jnp.mean(samples, axis=0), np.zeros((num_groups, d)), atol=1e-12)
    assert stats.mean.shape == (shape[-1],)
    assert stats.whitening.shape == (num_groups, d, d)
    assert_close(stats.mean, jnp.mean(x.reshape(-1, shape[-1]), axis=0), rtol=1e-13)
    assert_close(svdpi.jax.whiten(x, stats), y, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_zca_whitening_equals_the_torch_layer(method):
    """Values and input gradient of svdpi.torch.ZCAWhitening (training, no affine), float64."""
    torch = pytest.importorskip("torch")
    import svdpi.torch

    x = _activations((64, 6), 8)
    cotangent = np.random.default_rng(9).standard_normal((64, 6))
    layer = svdpi.torch.ZCAWhitening(
        6, num_groups=2, eps=1e-3, affine=False, method=method, dtype=torch.float64
    )
    x_torch = torch.from_numpy(np.array(x)).requires_grad_(True)
    y_torch = layer(x_torch)
    (y_torch * torch.from_numpy(cotangent)).sum().backward()

    def loss(inputs):
        y, _ = svdpi.jax.zca_whitening(inputs, num_groups=2, eps=1e-3, method=method)
        return jnp.sum(y * jnp.asarray(cotangent)), y

    (_, y), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    assert_close(y, y_torch, rtol=1e-11)
    assert_close(grad, x_torch.grad, rtol=1e-10)


def test_zca_whitening_truncation_matches_a_masked_matrix():
    x = _activations((128, 4), 10)
    y, stats = svdpi.jax.zca_whitening(x, max_energy=0.6, eps=0.0)
    centred = x - jnp.mean(x, axis=0)
    w, v = svdpi.eig(centred.T @ centred / 128)
    mask = svdpi.truncation_mask(w, max_energy=0.6)
    assert not bool(mask.all())
    expected = svdpi.zca_whitening_matrix(w, v, mask=mask)
    assert_close(stats.whitening[0], expected, rtol=1e-10)
    assert_close(y, centred @ expected.T, rtol=1e-10)
    g = jax.grad(lambda z: jnp.sum(svdpi.jax.zca_whitening(z, max_energy=0.6)[0] ** 3))(x)
    assert bool(jnp.isfinite(g).all())


def test_the_grouped_statistics_jax_differentiates_equal_the_cores_vjp():
    """zca_whitening lets JAX differentiate svdpi.adapter.grouped_covariance (forward mode
    and second derivatives included); its reverse mode is the core's grouped_covariance_vjp."""
    from svdpi.adapter import grouped_covariance, grouped_covariance_vjp

    x = _activations((5, 3, 6), 14)  # channels last, two sample axes
    rng = np.random.default_rng(15)
    grad_mean, grad_centred, grad_cov = (
        jnp.asarray(rng.standard_normal(shape)) for shape in ((2, 3), (5, 3, 6), (2, 3, 3))
    )

    def moments(z):
        m = grouped_covariance(z, num_groups=2, channel_axis=-1, xp=jnp)
        return m.mean, m.centred, m.covariance

    (_, centred, _), pullback = jax.vjp(moments, x)
    (got,) = pullback((grad_mean, grad_centred, grad_cov))
    expected = grouped_covariance_vjp(
        centred, grad_mean, grad_centred, grad_cov, num_groups=2, channel_axis=-1
    )
    assert_close(got, expected, rtol=1e-13)


def test_zca_whitening_statistics_carry_no_gradient():
    x = _activations((32, 4), 11)

    def loss(z):
        _, stats = svdpi.jax.zca_whitening(z)
        return jnp.sum(stats.whitening) + jnp.sum(stats.mean)

    assert_close(jax.grad(loss)(x), np.zeros((32, 4)), atol=0)


def test_zca_whitening_under_vmap_and_half_precision():
    x = _activations((3, 64, 4), 12)
    y, stats = jax.vmap(svdpi.jax.zca_whitening)(x)
    for i in range(3):
        y_i, _ = svdpi.jax.zca_whitening(x[i])
        assert_close(y[i], y_i, rtol=1e-12)
    assert stats.whitening.shape == (3, 1, 4, 4)
    half, _ = svdpi.jax.zca_whitening(x[0].astype(jnp.bfloat16))
    assert half.dtype == jnp.bfloat16
    single, _ = svdpi.jax.zca_whitening(x[0].astype(jnp.float32))
    assert_close(half.astype(jnp.float32), single, rtol=2e-2)


def test_zca_whitening_gradient_is_finite_for_equal_eigenvalues():
    """White input: every eigenvalue of the covariance equal (the paper's case)."""
    rng = np.random.default_rng(13)
    q, _ = np.linalg.qr(rng.standard_normal((64, 4)))
    x = jnp.asarray(q * 8.0)  # orthogonal columns: covariance exactly I
    grad = jax.jit(jax.grad(lambda z: jnp.sum(svdpi.jax.zca_whitening(z)[0][:, 0])))(x)
    assert bool(jnp.isfinite(grad).all())


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        (np.ones(4), {}, ValueError, "at least 2 dimensions"),
        (np.ones((1, 4)), {}, ValueError, "more than one sample"),
        (np.ones((8, 4)), {"num_groups": 3}, ValueError, "divisible by num_groups"),
        (np.ones((8, 4)), {"num_groups": 0}, ValueError, "num_groups must be >= 1"),
        (np.ones((8, 4)), {"eps": -1.0}, ValueError, "eps must be a finite number"),
        (np.ones((8, 4)), {"method": "svd"}, ValueError, "method must be one of"),
        (np.ones((8, 4)), {"energy_rule": "all"}, ValueError, "energy_rule"),
        (np.ones((8, 4), dtype=np.int32), {}, TypeError, "floating dtype"),
    ],
)
def test_zca_whitening_bad_arguments(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.zca_whitening(x, **kwargs)


def test_whiten_checks_the_statistics():
    stats = svdpi.jax.WhiteningStats(jnp.zeros(4), jnp.eye(2)[None].repeat(2, 0))
    bad_mean = svdpi.jax.WhiteningStats(jnp.zeros(4), jnp.eye(3)[None].repeat(2, 0))
    with pytest.raises(ValueError, match=r"stats\.mean must have shape"):
        svdpi.jax.whiten(jnp.ones((3, 6)), bad_mean)
    with pytest.raises(ValueError, match="groups of 2 channels"):
        svdpi.jax.whiten(jnp.ones((3, 6)), stats)
    with pytest.raises(ValueError, match=r"\(num_groups, d, d\)"):
        svdpi.jax.whiten(jnp.ones((3, 4)), svdpi.jax.WhiteningStats(jnp.zeros(4), jnp.eye(4)))
