"""svdpi.jax.spectral_map and its named cases: first derivatives against the core, second
derivatives against an mpmath oracle at ties, every composition of JAX's transforms.

The second-derivative oracle is independent of svdpi's own formula: the exact first
derivative (Daleckii–Krein, ``V (f[λi, λj] ∘ Vᵀ Ḡ V) Vᵀ``) evaluated in 100-digit mpmath
arithmetic at ``A ± hT`` (mpmath's own symmetric eigensolver on the exact binary values
of the float64 matrix) and differenced centrally with ``h = 1e-30``.
"""

from __future__ import annotations

import dataclasses
import functools

import mpmath
import numpy as np
import pytest
from _helpers import assert_close, random_spd, spd_with_spectrum
from _mpmath_oracles import MpFunction, oracle_for

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import svdpi  # noqa: E402
import svdpi.jax  # noqa: E402
from svdpi.functions import (  # noqa: E402
    Abs,
    Clamp,
    Custom,
    Exp,
    Log,
    Power,
    Softplus,
    SpectralFunction,
)


@pytest.fixture(autouse=True)
def x64():
    """Float64 for every test here, for its duration only (whatever ran before)."""
    with jax.enable_x64(True):
        yield


def _sech2(x):
    return 1.0 / jnp.cosh(x) ** 2


def _tanh_d2(x):
    return -2.0 * jnp.tanh(x) / jnp.cosh(x) ** 2


#: A user's function with its second derivative, and its mpmath counterpart.
TANH = Custom(jnp.tanh, _sech2, _tanh_d2)
TANH_ORACLE = MpFunction(
    "tanh",
    mpmath.tanh,
    lambda x: mpmath.sech(x) ** 2,
    lambda x: -2 * mpmath.tanh(x) * mpmath.sech(x) ** 2,
)

BUILT_INS = [Power(0.5), Power(-0.5), Power(2.0), Log(), Exp(), Softplus(), Clamp(0.3), Abs()]
BUILT_IN_IDS = ["sqrt", "inv-sqrt", "square", "log", "exp", "softplus", "clamp", "abs"]

#: An orthogonal, symmetric matrix with entries ±1/2 (a Householder reflection):
#: ``H diag(λ) H`` is exact in binary for dyadic λ, so the ties below are exact.
HOUSEHOLDER = np.eye(4) - 0.5
TRIPLE = np.array([2.0, 1.0, 1.0, 1.0])
NEAR = np.array([2.0, 1.0 + 2.0**-30, 1.0, 0.25])  # a relative gap of 1e-9


def _rotated(spectrum):
    return HOUSEHOLDER @ np.diag(spectrum) @ HOUSEHOLDER


def _symmetric(seed, shape=(4, 4)):
    t = np.random.default_rng(seed).standard_normal(shape)
    return (t + np.swapaxes(t, -1, -2)) / 2


# -- the oracle ----------------------------------------------------------------------------


def _mp_first_derivative(a, g, function):
    """``V (f[λi, λj] ∘ Vᵀ G V) Vᵀ`` in the current mpmath precision."""
    w, q = mpmath.eigsy(a)
    n = a.rows
    projected = q.T * g * q
    kernel = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(n):
            if w[i] == w[j]:
                kernel[i, j] = function.df(w[i])
            else:
                kernel[i, j] = (function.f(w[i]) - function.f(w[j])) / (w[i] - w[j])
            kernel[i, j] *= projected[i, j]
    return q * kernel * q.T


@functools.cache
def _oracle_cached(function, a, g, t):
    with mpmath.workdps(100):
        a, g, t = (mpmath.matrix([list(map(mpmath.mpf, row)) for row in x]) for x in (a, g, t))
        h = mpmath.mpf(10) ** -30
        plus = _mp_first_derivative(a + h * t, g, function)
        minus = _mp_first_derivative(a - h * t, g, function)
        difference = (plus - minus) / (2 * h)
        return np.array([[float(difference[i, j]) for j in range(a.cols)] for i in range(a.rows)])


def hvp_oracle(function, a, g, t):
    """``d/dh [∇_A <G, F(A + hT)>]`` at ``h = 0``, to about 40 digits (module docstring)."""

    def key(x):
        return tuple(map(tuple, np.asarray(x, dtype=np.float64).tolist()))

    return _oracle_cached(function, key(a), key(g), key(t))


def test_the_oracle_is_the_second_derivative_of_a_closed_form():
    """For f = 1/x, d/dh ∇<G, (A + hT)⁻¹> = A⁻¹ T A⁻¹ G A⁻¹ + A⁻¹ G A⁻¹ T A⁻¹ (symmetric G, T)."""
    a = _rotated(TRIPLE)
    g, t = _symmetric(0), _symmetric(1)
    inverse = np.linalg.inv(a)
    expected = inverse @ t @ inverse @ g @ inverse + inverse @ g @ inverse @ t @ inverse
    assert_close(hvp_oracle(oracle_for(Power(-1.0)), a, g, t), expected, rtol=1e-14)


# -- first derivatives ---------------------------------------------------------------------


@functools.cache
def _first_order(fn, method):
    """One jitted function per (fn, method): value, jax.grad and jax.jvp."""

    def value_grad_jvp(a, g, t):
        def f(m):
            return svdpi.jax.spectral_map(m, fn, method=method)

        grad = jax.grad(lambda m: jnp.sum(g * f(m)))(a)
        value, tangent = jax.jvp(f, (a,), (t,))
        return value, grad, tangent

    return jax.jit(value_grad_jvp)


@pytest.mark.parametrize(
    ("fn", "method"),
    [
        *[(fn, "exact") for fn in [*BUILT_INS, TANH]],
        *[(Log(), m) for m in ("pi", "taylor", "analytic")],
        (Exp(), "pi"),
    ],
    ids=[*BUILT_IN_IDS, "custom", "log-pi", "log-taylor", "log-analytic", "exp-pi"],
)
def test_value_grad_and_jvp_are_the_cores(fn, method):
    """Forward: svdpi.spectral_map; jax.grad (JAX's transposition): spectral_map_vjp; jvp: _jvp."""
    a = random_spd(4, np.random.default_rng(2), batch=(2,)) - 0.2 * np.eye(4)
    g = np.random.default_rng(3).standard_normal((2, 4, 4))
    t = np.random.default_rng(4).standard_normal((2, 4, 4))
    value, grad, tangent = _first_order(fn, method)(*map(jnp.asarray, (a, g, t)))
    # The core on NumPy (no compiles; TANH's callables are JAX's): a separated
    # spectrum, so the maps and derivatives do not depend on the eigenvectors' signs.
    if fn is TANH:
        a, g, t = map(jnp.asarray, (a, g, t))
    w, v = svdpi.eig(a)
    assert_close(value, svdpi.spectral_map(w, v, fn), rtol=1e-13)
    assert_close(grad, svdpi.spectral_map_vjp(w, v, fn, g, method=method), rtol=1e-12)
    assert_close(tangent, svdpi.spectral_map_jvp(w, v, fn, t, method=method), rtol=1e-12)


def test_named_functions_are_spectral_maps_with_exact_defaults():
    a_numpy = spd_with_spectrum([1.0, 0.9, 0.3], np.random.default_rng(5))
    g = np.random.default_rng(6).standard_normal((3, 3))
    w, v = svdpi.eig(a_numpy)  # references on NumPy: the spectrum is separated
    a = jnp.asarray(a_numpy)
    cases = [
        (svdpi.jax.sqrtm, Power(0.5)),
        (svdpi.jax.inv_sqrtm, Power(-0.5)),
        (svdpi.jax.logm, Log()),
        (svdpi.jax.matrix_log, Log()),
        (svdpi.jax.expm, Exp()),
        (lambda m, **k: svdpi.jax.matrix_power(m, -1.0, **k), Power(-1.0)),
    ]
    for function, fn in cases:
        assert_close(function(a), svdpi.spectral_map(w, v, fn), rtol=1e-13)
        got = jax.grad(lambda m, f=function: jnp.sum(g * f(m)))(a)
        assert_close(got, svdpi.spectral_map_vjp(w, v, fn, g, method="exact"), rtol=1e-12)
        pi = jax.grad(lambda m, f=function: jnp.sum(g * f(m, method="pi")))(a)
        assert_close(pi, svdpi.spectral_map_vjp(w, v, fn, g, method="pi"), rtol=1e-12)
        # The default is not "pi" any more (on this clustered spectrum they differ).
        assert float(jnp.max(jnp.abs(pi - got))) > 1e-4 * float(jnp.max(jnp.abs(got)))
    # The paper's layers by hand keep "pi".
    pi = jax.grad(lambda m: jnp.sum(g * svdpi.jax.zca_whitening_matrix(m)))(a)
    assert_close(pi, svdpi.zca_whitening_matrix_vjp(w, v, g, method="pi"), rtol=1e-12)
    projector = jax.grad(lambda m: jnp.sum(g * svdpi.jax.pca_projector(m, n_components=2)))(a)
    assert_close(projector, svdpi.pca_projector_vjp(w, v, g, n_components=2), rtol=1e-12)


def test_expm_equals_jax_scipy_expm():
    s = jnp.asarray(_symmetric(7))
    assert_close(svdpi.jax.expm(s), jax.scipy.linalg.expm(s), rtol=1e-12)
    g = jnp.asarray(np.random.default_rng(8).standard_normal((4, 4)))
    got = jax.grad(lambda m: jnp.sum(g * svdpi.jax.expm(m)))(s)
    # jax.scipy's expm differentiates a Padé approximant of exp(s) for the
    # matrix as given; svdpi's of its symmetric part: compare on symmetric cotangents.
    expected = jax.grad(lambda m: jnp.sum(g * jax.scipy.linalg.expm((m + m.T) / 2)))(s)
    assert_close(got, expected, rtol=1e-10)


# -- second derivatives: the oracle at ties ------------------------------------------------


#: The Hessian-vector product by every composition of JAX's forward and reverse modes.
MODES = (
    "jvp-of-grad",
    "grad-of-grad",
    "grad-of-jvp",
    "hessian",
    "jvp-of-jvp",
)


@functools.cache
def _second_order(fn, modes=MODES):
    """One jitted function per fn: the Hessian-vector product ``∇²<G, F(A)>[T]`` by ``modes``."""

    def products(a, g, t):
        def f(m):
            return svdpi.jax.spectral_map(m, fn)

        def loss(m):
            return jnp.sum(g * f(m))

        def jvp_of_jvp(m):  # forward over forward, then its gradient
            return jnp.sum(g * jax.jvp(f, (m,), (t,))[1])

        compositions = {
            "jvp-of-grad": lambda: jax.jvp(jax.grad(loss), (a,), (t,))[1],
            "grad-of-grad": lambda: jax.grad(lambda m: jnp.sum(jax.grad(loss)(m) * t))(a),
            "grad-of-jvp": lambda: jax.grad(lambda m: jax.jvp(loss, (m,), (t,))[1])(a),
            "hessian": lambda: jnp.einsum("ijkl,kl->ij", jax.hessian(loss)(a), t),
            "jvp-of-jvp": lambda: jax.grad(jvp_of_jvp)(a),
        }
        return jnp.stack([compositions[mode]() for mode in modes])

    return jax.jit(products)


#: (function, its mpmath counterpart, the compositions checked under jit). Every
#: composition for two functions; the costly compiles (Softplus, and Custom's
#: quadrature, about 12 s a composition on a loaded 2-core machine) once.
ORACLE_CASES = [
    pytest.param(Power(0.5), oracle_for(Power(0.5)), MODES, id="sqrt"),
    pytest.param(Log(), oracle_for(Log()), MODES, id="log"),
    pytest.param(Power(-0.5), oracle_for(Power(-0.5)), MODES[:1] + MODES[3:4], id="inv-sqrt"),
    pytest.param(Exp(), oracle_for(Exp()), MODES[1:2] + MODES[4:], id="exp"),
    pytest.param(Softplus(), oracle_for(Softplus()), MODES[:1], id="softplus"),
    pytest.param(TANH, TANH_ORACLE, MODES[:1], id="custom"),
]


@pytest.mark.parametrize(("fn", "oracle", "modes"), ORACLE_CASES)
def test_hessian_vector_products_equal_the_mpmath_oracle_at_ties(fn, oracle, modes):
    """Compositions of forward and reverse mode, under jit, at a triple and a near tie."""
    g, t = _symmetric(10), _symmetric(11)
    for spectrum in (TRIPLE, NEAR):
        a = _rotated(spectrum)
        expected = hvp_oracle(oracle, a, g, t)
        got = _second_order(fn, modes)(jnp.asarray(a), jnp.asarray(g), jnp.asarray(t))
        assert bool(jnp.isfinite(got).all())
        for mode, product in zip(modes, got, strict=True):
            assert_close(product, expected, rtol=1e-9, err_msg=mode)


def test_hessian_vector_products_in_float32_at_ties():
    """Float32 (JAX's default): the same oracle, to float32's accuracy."""
    g, t = _symmetric(10), _symmetric(11)

    def hvp(a, g, t, fn):
        loss = lambda m: jnp.sum(g * svdpi.jax.spectral_map(m, fn))  # noqa: E731
        return jax.jvp(jax.grad(loss), (a,), (t,))[1]

    def both(a, g, t):
        return jnp.stack([hvp(a, g, t, fn) for fn in (Power(0.5), Log())])

    with jax.enable_x64(False):
        products = jax.jit(jax.vmap(both, in_axes=(0, None, None)))
        a = np.stack([_rotated(TRIPLE), _rotated(NEAR)]).astype(np.float32)
        got = products(jnp.asarray(a), jnp.asarray(g, jnp.float32), jnp.asarray(t, jnp.float32))
    assert got.dtype == jnp.float32
    for i, spectrum in enumerate((TRIPLE, NEAR)):
        # The oracle at the float32 matrix's own binary values.
        for j, fn in enumerate((Power(0.5), Log())):
            expected = hvp_oracle(oracle_for(fn), a[i], g, t)
            assert_close(got[i, j], expected, rtol=2e-5, err_msg=f"{fn} {spectrum}")


def test_hessian_at_a_tie_is_independent_of_the_eigenbasis():
    """Permuted coordinates give eigh another basis of the tied eigenspace, and the same answer.

    ``H(PAPᵀ)[PGPᵀ, PTPᵀ] = P H(A)[G, T] Pᵀ`` for a permutation ``P``: a second
    derivative that depended on the basis eigh picks inside the repeated
    eigenspace would break it.
    """
    g, t = _symmetric(12), _symmetric(13)
    permutation = np.eye(4)[[2, 0, 3, 1]]
    a = _rotated(TRIPLE)
    products = _second_order(Log())
    direct = products(jnp.asarray(a), jnp.asarray(g), jnp.asarray(t))[0]
    permuted = products(*(jnp.asarray(permutation @ x @ permutation.T) for x in (a, g, t)))[0]
    _, v = np.linalg.eigh(a)
    _, v_permuted = np.linalg.eigh(permutation @ a @ permutation.T)
    assert not np.allclose(np.abs(permutation.T @ v_permuted[:, :3]), np.abs(v[:, :3]))
    assert_close(permutation.T @ permuted @ permutation, direct, rtol=1e-13)


@pytest.mark.parametrize("fn", [Power(0.5), Log(), Exp()], ids=["sqrt", "log", "exp"])
def test_check_grads_of_order_two_on_a_separated_spectrum(fn):
    """jax.test_util.check_grads: finite differences of the first and second derivatives."""
    a = jnp.asarray(spd_with_spectrum([2.0, 1.3, 0.8, 0.5], np.random.default_rng(14)))
    weights = jnp.asarray(np.random.default_rng(15).standard_normal((4, 4)))

    def loss(m):  # nonlinear in F, so that both terms of the second derivative count
        f = svdpi.jax.spectral_map(m, fn)
        return jnp.sum(weights * f) + jnp.sum(f * f)

    check_grads(loss, (a,), order=2, modes=["fwd", "rev"])


def test_second_derivatives_with_masks_and_batches_are_the_cores():
    """Masked maps and the projector, over a batch, under vmap: the core's spectral_map_hvp."""
    a = spd_with_spectrum([4.0, 2.0, 2.0, 0.5, 0.1], np.random.default_rng(16), (3,))
    g = _symmetric(17, (3, 5, 5))
    t = _symmetric(18, (3, 5, 5))
    mask = np.broadcast_to(np.array([True, True, True, False, False]), (3, 5))
    # The references on NumPy: the second derivative does not depend on the
    # eigenbasis, even inside the repeated eigenvalue 2.
    w, v = svdpi.eig(a)
    expected = svdpi.spectral_map_hvp(w, v, Power(-0.5), g, t, mask=mask)
    a, g, t, mask = map(jnp.asarray, (a, g, t, mask))

    def hvp(m, gg, tt):
        loss = lambda x: jnp.sum(gg * svdpi.jax.inv_sqrtm(x, mask=mask[0]))  # noqa: E731
        return jax.jvp(jax.grad(loss), (m,), (tt,))[1]

    got = jax.jit(jax.vmap(hvp))(a, g, t)
    assert_close(got, expected, rtol=1e-11)
    # The same with the mask argument batched instead of vmapped.
    batched = jax.jvp(
        jax.grad(lambda m: jnp.sum(g * svdpi.jax.spectral_map(m, Power(-0.5), mask=mask))),
        (a,),
        (t,),
    )[1]
    assert_close(batched, expected, rtol=1e-11)
    # The projector: a constant on its kept pairs, whose second derivative is the core's too.
    projector = jax.jvp(
        jax.grad(
            lambda m: jnp.sum(g * svdpi.jax.pca_projector(m, n_components=3, method="exact"))
        ),
        (a,),
        (t,),
    )[1]
    keep = np.broadcast_to(np.arange(5) < 3, (3, 5))
    expected = svdpi.spectral_map_hvp(w, v, Power(0.0), *map(np.asarray, (g, t)), mask=keep)
    assert_close(projector, expected, rtol=1e-11)


def test_second_derivative_of_the_functional_whitening_step():
    """zca_whitening with method="exact": check_grads of order two through covariance and W."""
    x = jnp.asarray(np.random.default_rng(19).standard_normal((12, 4)) @ np.diag([1, 2, 3, 4.0]))
    cotangent = jnp.asarray(np.random.default_rng(20).standard_normal((12, 4)))

    def loss(z):
        y, _ = svdpi.jax.zca_whitening(z, num_groups=2, eps=1e-3, method="exact")
        return jnp.sum(cotangent * y) + jnp.sum(y**3)

    check_grads(loss, (x,), order=2, modes=["rev"], eps=1e-4)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda m: svdpi.jax.spectral_map(m, Log(), method="pi"), "svdpi.jax.spectral_map"),
        (lambda m: svdpi.jax.sqrtm(m, method="taylor"), "svdpi.jax.sqrtm"),
        (lambda m: svdpi.jax.logm(m, method="analytic"), "svdpi.jax.logm"),
        (lambda m: svdpi.jax.zca_whitening_matrix(m), "svdpi.jax.zca_whitening_matrix"),
        (lambda m: svdpi.jax.pca_projector(m, n_components=1), "svdpi.jax.pca_projector"),
    ],
)
def test_second_derivatives_of_other_methods_raise_naming_the_function(call, name):
    a = jnp.asarray(random_spd(3, np.random.default_rng(21)))
    loss = lambda m: jnp.sum(call(m) ** 2)  # noqa: E731
    with pytest.raises(NotImplementedError, match=f"{name} with method=.* differentiable once"):
        jax.jit(jax.hessian(loss))(a)  # raised while tracing


def test_third_derivatives_raise_naming_the_function_and_method():
    a = jnp.asarray(random_spd(3, np.random.default_rng(22)))
    loss = lambda m: jnp.sum(svdpi.jax.logm(m) ** 2)  # noqa: E731
    match = r"svdpi\.jax\.logm with method='exact' is differentiable twice"
    with pytest.raises(NotImplementedError, match=match):
        jax.jit(jax.jacfwd(jax.hessian(loss)))(a)
    with pytest.raises(NotImplementedError, match=match):
        jax.jit(jax.grad(lambda m: jnp.sum(jax.grad(lambda x: jnp.sum(jax.grad(loss)(x)))(m))))(a)


def test_second_derivative_of_a_custom_function_without_d2f_raises():
    fn = Custom(jnp.tanh, _sech2)
    a = jnp.asarray(random_spd(3, np.random.default_rng(23)))
    loss = lambda m: jnp.sum(svdpi.jax.spectral_map(m, fn) ** 2)  # noqa: E731
    jax.grad(loss)(a)  # first order only needs f'
    with pytest.raises(NotImplementedError, match="has no d2f"):
        jax.hessian(loss)(a)


class _Unhashable(SpectralFunction):
    def __eq__(self, other):
        return isinstance(other, _Unhashable)

    __hash__ = None  # what defining __eq__ alone does

    def value(self, x, /, *, xp=None):
        return x

    def derivative(self, x, /, *, xp=None):
        return x * 0 + 1


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (jnp.sqrt, TypeError, "fn must be a svdpi.functions.SpectralFunction"),
        ("log", TypeError, "fn must be a svdpi.functions.SpectralFunction"),
        (Power, TypeError, "fn must be a svdpi.functions.SpectralFunction"),
        (_Unhashable(), TypeError, "fn must be hashable"),
    ],
    ids=["callable", "string", "class", "unhashable"],
)
def test_bad_functions_are_refused(fn, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.spectral_map(jnp.eye(2), fn)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "svd"}, ValueError, "method must be one of"),
        ({"method": None}, ValueError, "method must be one of"),
        ({"num_iters": 0}, ValueError, "num_iters must be >= 1"),
        ({"num_iters": 1.5}, TypeError, "num_iters must be an integer"),
        ({"mask": [1, 0]}, TypeError, "mask must be a boolean array"),
        ({"mask": [True, False, True]}, ValueError, "mask must have the shape"),
    ],
)
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        svdpi.jax.spectral_map(jnp.eye(2), Log(), **kwargs)


def test_a_frozen_dataclass_function_is_a_static_argument_traced_once():
    @dataclasses.dataclass(frozen=True)
    class Cube(SpectralFunction):
        def value(self, x, /, *, xp=None):
            return x**3

        def derivative(self, x, /, *, xp=None):
            return 3 * x**2

        def second_derivative(self, x, /, *, xp=None):
            return 6 * x

    traces = []

    @jax.jit
    def f(m):
        traces.append(1)
        return svdpi.jax.spectral_map(m, Cube())

    a = jnp.asarray(random_spd(3, np.random.default_rng(24)))
    assert_close(f(a), a @ a @ a, rtol=1e-12)
    f(2 * a)
    assert len(traces) == 1
    trace = lambda m: jnp.trace(svdpi.jax.spectral_map(m, Cube()))  # noqa: E731
    hessian_vector = jax.jvp(jax.grad(trace), (a,), (a,))[1]
    assert_close(hessian_vector, 6 * a @ a, rtol=1e-10)  # d tr(A³) = 3A², along A: 6A²
