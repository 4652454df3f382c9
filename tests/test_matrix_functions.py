"""Matrix functions (power, log) and their derivatives, "exact" (Daleckii–Krein) included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, spd_with_spectrum, to_numpy

import svdpi
from svdpi._validation import MATRIX_FUNCTION_METHODS

FUNCTIONS = [-1.0, -0.5, 0.5, 2.0, 0.3, "log"]
SPECTRA = {
    "separated": [4.0, 2.0, 1.0, 0.5],
    "clustered": [2.0, 1.0 + 1e-10, 1.0, 0.5],
    "double": [2.0, 1.0, 1.0, 0.5],
    "triple": [2.0, 0.7, 0.7, 0.7],
}
METHODS = ("pi", "taylor", "analytic", "exact")


def _forward(w, v, f, mask=None):
    if f == "log":
        return svdpi.matrix_log(w, v, mask=mask)
    return svdpi.matrix_power(w, v, f, mask=mask)


def _vjp(w, v, f, g, **kwargs):
    if f == "log":
        return svdpi.matrix_log_vjp(w, v, g, **kwargs)
    return svdpi.matrix_power_vjp(w, v, f, g, **kwargs)


def _jvp(w, v, f, t, **kwargs):
    if f == "log":
        return svdpi.matrix_log_jvp(w, v, t, **kwargs)
    return svdpi.matrix_power_jvp(w, v, f, t, **kwargs)


def _reference(a, f):
    """``F(A)`` from NumPy's eigh (float64), for eigenvalues safely above any clamp."""
    w, v = np.linalg.eigh(a)
    values = np.log(w) if f == "log" else w**f
    return (v * values[..., None, :]) @ np.swapaxes(v, -1, -2)


def _problem(spectrum, seed, batch=()):
    rng = np.random.default_rng(seed)
    a = spd_with_spectrum(spectrum, rng, batch)
    n = a.shape[-1]
    g = rng.standard_normal((*batch, n, n))
    t = rng.standard_normal((*batch, n, n))
    return a, g, (t + np.swapaxes(t, -1, -2)) / 2


def _directional_fd(xp, a, g, t, f, mask=None, h=1e-6):
    """Central difference of ``<G, F(A + s T)>`` at ``s = 0`` through svdpi's own forward."""

    def loss(s):
        w, v = svdpi.eig(from_numpy(xp, a + s * t))
        return np.sum(g * to_numpy(_forward(w, v, f, mask)))

    return (loss(h) - loss(-h)) / (2 * h)


def _inner(x, y):
    return float(np.sum(to_numpy(x) * to_numpy(y)))


@pytest.mark.parametrize("f", FUNCTIONS)
def test_forward_matches_numpy_eigh(xp, f):
    a, _, _ = _problem([3.0, 1.5, 0.7, 0.2], seed=0, batch=(2,))
    result = _forward(*svdpi.eig(from_numpy(xp, a)), f)
    assert_close(result, _reference(a, f), rtol=1e-12)


def test_square_root_squares_to_the_matrix_and_zca_is_power_minus_half(xp):
    a, _, _ = _problem([3.0, 1.0, 1.0, 1e-3], seed=1, batch=(3,))
    w, v = svdpi.eig(from_numpy(xp, a))
    root = svdpi.matrix_power(w, v, 0.5)
    assert_close(root @ root, a, rtol=1e-12)
    # The documented special case, not a second formula: bitwise equal.
    whitening = to_numpy(svdpi.zca_whitening_matrix(w, v))
    np.testing.assert_array_equal(whitening, to_numpy(svdpi.matrix_power(w, v, -0.5)))


def test_clamps(xp):
    """p < 0 and log raise eigenvalues to the floor; p > 0 clamps negative ones at zero."""
    w = from_numpy(xp, np.array([2.0, 1.0, -1e-3]))
    v = from_numpy(xp, np.eye(3))
    floor = 3 * np.finfo(np.float64).eps * 2.0
    np.testing.assert_allclose(
        np.diag(to_numpy(svdpi.matrix_power(w, v, -1))), [0.5, 1.0, 1 / floor], rtol=1e-15
    )
    np.testing.assert_allclose(
        np.diag(to_numpy(svdpi.matrix_log(w, v))), [np.log(2), 0.0, np.log(floor)], rtol=1e-15
    )
    np.testing.assert_array_equal(
        np.diag(to_numpy(svdpi.matrix_power(w, v, 0.5))), [np.sqrt(2), 1.0, 0.0]
    )
    np.testing.assert_array_equal(np.diag(to_numpy(svdpi.matrix_power(w, v, 0))), [1, 1, 1])


@pytest.mark.parametrize("f", FUNCTIONS)
@pytest.mark.parametrize("spectrum", list(SPECTRA))
def test_exact_matches_finite_differences(xp, spectrum, f):
    """On every spectrum, repeated ones included, "exact" is the derivative (VJP and JVP)."""
    a, g, t = _problem(SPECTRA[spectrum], seed=2)
    fd = _directional_fd(xp, a, g, t, f)
    w, v = svdpi.eig(from_numpy(xp, a))
    vjp = _vjp(w, v, f, from_numpy(xp, g), method="exact")
    jvp = _jvp(w, v, f, from_numpy(xp, t), method="exact")
    assert _inner(vjp, t) == pytest.approx(fd, rel=1e-6)
    assert _inner(g, jvp) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("f", FUNCTIONS)
def test_analytic_equals_exact_on_a_separated_spectrum(xp, f):
    a, g, _ = _problem(SPECTRA["separated"], seed=3, batch=(2,))
    w, v = svdpi.eig(from_numpy(xp, a))
    g = from_numpy(xp, g)
    assert_close(_vjp(w, v, f, g, method="analytic"), _vjp(w, v, f, g, method="exact"), 1e-12)


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize("f", [-0.5, 0.3, "log"])
def test_pi_and_taylor_tend_to_exact(xp, method, f):
    a, g, _ = _problem([4.0, 3.0, 2.0, 1.0], seed=4)
    w, v = svdpi.eig(from_numpy(xp, a))
    g = from_numpy(xp, g)
    exact = to_numpy(_vjp(w, v, f, g, method="exact"))
    errors = [
        np.max(np.abs(to_numpy(_vjp(w, v, f, g, method=method, num_iters=k)) - exact))
        for k in (5, 19, 60, 200)
    ]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-12 * np.max(np.abs(exact))


def _rotate_repeated_block(v, start, stop, angle):
    rotation = np.eye(v.shape[-1])
    block = np.eye(stop - start)
    c, s = np.cos(angle), np.sin(angle)
    block[:2, :2] = [[c, -s], [s, c]]
    if stop - start == 3:  # a second plane, so that no axis stays fixed
        turn = np.eye(3)
        turn[1:, 1:] = [[c, s], [-s, c]]
        block = block @ turn
    rotation[start:stop, start:stop] = block
    return v @ rotation


@pytest.mark.parametrize("f", FUNCTIONS)
@pytest.mark.parametrize(("spectrum", "block"), [("double", (1, 3)), ("triple", (1, 4))])
def test_exact_is_gauge_invariant_and_pi_is_not(xp, spectrum, block, f):
    """Another orthonormal basis of a repeated eigenspace: the same A, the same exact gradient."""
    _, g, _ = _problem(SPECTRA[spectrum], seed=5)
    # Exact eigenpairs, so that the rotated basis is as exact as the original.
    w = np.array(SPECTRA[spectrum])
    q = np.linalg.qr(np.random.default_rng(6).standard_normal((4, 4)))[0]
    rotated = _rotate_repeated_block(q, *block, angle=0.7)
    results = {}
    for method in ("exact", "pi"):
        results[method] = [
            to_numpy(
                _vjp(from_numpy(xp, w), from_numpy(xp, basis), f, from_numpy(xp, g), method=method)
            )
            for basis in (q, rotated)
        ]
    exact, exact_rotated = results["exact"]
    np.testing.assert_allclose(exact_rotated, exact, rtol=0, atol=1e-12 * np.max(np.abs(exact)))
    pi, pi_rotated = results["pi"]
    assert np.max(np.abs(pi_rotated - pi)) > 1e-3 * np.max(np.abs(pi))


@pytest.mark.parametrize("f", FUNCTIONS)
def test_exact_equals_torch_autograd_through_eigh(f):
    torch = pytest.importorskip("torch")
    a, g, _ = _problem(SPECTRA["separated"], seed=7, batch=(3,))
    a_t = torch.tensor(a, requires_grad=True)
    w_t, v_t = torch.linalg.eigh(a_t)
    values = torch.log(w_t) if f == "log" else w_t**f
    loss = torch.sum(torch.tensor(g) * ((v_t * values[..., None, :]) @ v_t.mT))
    (autograd,) = torch.autograd.grad(loss, a_t)
    w, v = svdpi.eig(a)
    exact = _vjp(w, v, f, g, method="exact")
    # autograd's gradient of a symmetric input is not symmetrised; compare the symmetric parts.
    autograd = autograd.numpy()
    assert_close(exact, (autograd + np.swapaxes(autograd, -1, -2)) / 2, rtol=1e-11)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("f", FUNCTIONS)
@pytest.mark.parametrize("use_mask", [False, True])
def test_vjp_is_the_transpose_of_jvp(xp, method, f, use_mask):
    # "analytic" is infinite at a repeated eigenvalue: give it a separated spectrum.
    spectrum = [3.0, 1.5 if method == "analytic" else 1.0, 1.0, 0.5, 0.2]
    a, g, t = _problem(spectrum, seed=8, batch=(2,))
    w, v = svdpi.eig(from_numpy(xp, a))
    keep = np.array([[True, True, True, False, True], [True, False, False, True, True]])
    mask = from_numpy(xp, keep, xp.bool) if use_mask else None
    kwargs = {"mask": mask, "method": method, "num_iters": 7}
    vjp = _vjp(w, v, f, from_numpy(xp, g), **kwargs)
    jvp = _jvp(w, v, f, from_numpy(xp, t), **kwargs)
    assert _inner(vjp, t) == pytest.approx(_inner(g, jvp), rel=1e-12)


@pytest.mark.parametrize("f", FUNCTIONS)
@pytest.mark.parametrize("spectrum", ["separated", "triple"])
def test_exact_with_a_mask_is_the_derivative_of_the_truncated_function(xp, spectrum, f):
    """A fixed mask (no gradient through its choice); the triple eigenvalue is dropped whole."""
    a, g, t = _problem(SPECTRA[spectrum], seed=9)
    mask = from_numpy(xp, np.array([True, False, False, False]), xp.bool)
    fd = _directional_fd(xp, a, g, t, f, mask=mask)
    w, v = svdpi.eig(from_numpy(xp, a))
    vjp = _vjp(w, v, f, from_numpy(xp, g), mask=mask, method="exact")
    assert _inner(vjp, t) == pytest.approx(fd, rel=1e-6)


def _exact_eigenpairs(xp, spectrum, seed):
    """Eigenvalues exactly equal where ``spectrum`` repeats, and an orthogonal basis."""
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum),) * 2))[0]
    return from_numpy(xp, np.array(spectrum)), from_numpy(xp, q)


def test_a_mask_that_cuts_a_repeated_eigenvalue_gives_nan(xp):
    """No gap at the cut: the truncated function has no derivative, and the result says so."""
    w, v = _exact_eigenpairs(xp, SPECTRA["double"], seed=10)
    g = from_numpy(xp, np.random.default_rng(10).standard_normal((4, 4)))
    mask = from_numpy(xp, np.array([True, True, False, False]), xp.bool)
    result = to_numpy(svdpi.matrix_power_vjp(w, v, 0.5, g, mask=mask, method="exact"))
    assert np.isnan(result).all()


def test_a_cut_between_distinct_eigenvalues_has_a_finite_derivative(xp):
    """Issue 18: a cut closer than n · eps · max|λ| but with a gap is differentiable.

    0.2 called eigenvalues within n · eps · max|λ| equal and returned NaN; the
    truncated function has a derivative wherever the eigenvalues at the cut
    differ, ``φ_kept / (λ_i − λ_j)`` across it.
    """
    eps = np.finfo(np.float64).eps
    gap = 2 * eps  # far below n · eps · max|λ| = 16 eps
    spectrum = [2.0, 1.0 + gap, 1.0, 0.5]
    w, v = _exact_eigenpairs(xp, spectrum, seed=19)
    g = from_numpy(xp, np.random.default_rng(19).standard_normal((4, 4)))
    mask = from_numpy(xp, np.array([True, True, False, False]), xp.bool)
    result = to_numpy(svdpi.matrix_power_vjp(w, v, -0.5, g, mask=mask))
    # The kernel between the kept 1 + gap and the dropped 1 is φ / gap.
    v_np, g_np = to_numpy(v), to_numpy(g)
    kernel = v_np.T @ result @ v_np
    projected = v_np.T @ ((g_np + g_np.T) / 2) @ v_np
    expected = (1.0 + gap) ** -0.5 / (float(to_numpy(w)[1]) - float(to_numpy(w)[2]))
    assert np.isfinite(result).all()
    assert kernel[1, 2] == pytest.approx(expected * projected[1, 2], rel=1e-12)


@pytest.mark.parametrize("f", [-1.0, -0.5, "log"])
@pytest.mark.parametrize("spectrum", [[2.0, 1.0, 0.5, -1e-3], [2.0, 1.0, -1e-3, -1e-3]])
def test_exact_with_the_floor_active_matches_finite_differences(xp, spectrum, f):
    """Eigenvalues below the floor: "exact" differentiates the forward as computed, floor level
    (n · eps · max|λ|) included; the chain-rule methods hold the floor constant."""
    a, g, t = _problem(spectrum, seed=11)
    fd = _directional_fd(xp, a, g, t, f)
    w, v = svdpi.eig(from_numpy(xp, a))
    vjp = _vjp(w, v, f, from_numpy(xp, g), method="exact")
    jvp = _jvp(w, v, f, from_numpy(xp, t), method="exact")
    assert _inner(vjp, t) == pytest.approx(fd, rel=1e-6)
    assert _inner(g, jvp) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("f", [0.5, 0.3, 2.0])
def test_positive_powers_with_negative_round_off_eigenvalues(xp, f):
    a, g, t = _problem([2.0, 1.0, 0.5, -1e-3], seed=12)
    fd = _directional_fd(xp, a, g, t, f)
    w, v = svdpi.eig(from_numpy(xp, a))
    vjp = _vjp(w, v, f, from_numpy(xp, g), method="exact")
    assert _inner(vjp, t) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize(("p", "expected"), [(0.5, np.inf), (1.0, 1.0), (2.0, 0.0)])
def test_exact_zero_eigenvalue_uses_the_right_derivative(p, expected):
    w, v = np.array([1.0, 0.0]), np.eye(2)
    g = np.diag([0.0, 1.0])
    with np.errstate(invalid="ignore"):
        result = svdpi.matrix_power_vjp(w, v, p, g, method="exact")
    assert result[1, 1] == expected


def test_divided_differences_keep_their_relative_accuracy_far_apart(xp):
    """A large ratio of eigenvalues: the exact kernel of λ^p and log to a few ulps."""
    x, y = 1.0, 3e-14
    w = from_numpy(xp, np.array([x, y]))
    v = from_numpy(xp, np.eye(2))
    g = from_numpy(xp, np.array([[0.0, 1.0], [1.0, 0.0]]))
    for p in (-0.5, 0.3, 0.5, 2.0):
        got = to_numpy(svdpi.matrix_power_vjp(w, v, p, g))[0, 1]
        np.testing.assert_allclose(got, (x**p - y**p) / (x - y), rtol=4e-15)
    got = to_numpy(svdpi.matrix_log_vjp(w, v, g))[0, 1]
    np.testing.assert_allclose(got, (np.log(x) - np.log(y)) / (x - y), rtol=4e-15)


def test_projector_cut_through_a_repeated_eigenvalue_gives_nan(xp):
    w, v = _exact_eigenpairs(xp, SPECTRA["triple"], seed=13)
    g = from_numpy(xp, np.random.default_rng(13).standard_normal((4, 4)))
    exact = svdpi.pca_projector_vjp(w, v, g, n_components=2, method="exact")
    assert np.isnan(to_numpy(exact)).all()


def test_projector_exact_matches_finite_differences_and_analytic(xp):
    a, g, t = _problem(SPECTRA["triple"], seed=13)
    w, v = svdpi.eig(from_numpy(xp, a))
    g_x = from_numpy(xp, g)
    exact = svdpi.pca_projector_vjp(w, v, g_x, n_components=1, method="exact")

    def loss(s):
        return np.sum(
            g
            * to_numpy(
                svdpi.pca_projector(svdpi.eig(from_numpy(xp, a + s * t))[1], n_components=1)
            )
        )

    fd = (loss(1e-6) - loss(-1e-6)) / 2e-6
    assert _inner(exact, t) == pytest.approx(fd, rel=1e-6)
    # It couples the kept pair with the dropped ones only: zero inside the dropped block.
    vt_grad_v = to_numpy(v).T @ to_numpy(exact) @ to_numpy(v)
    np.testing.assert_allclose(vt_grad_v[1:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(vt_grad_v[0, 0], 0.0, atol=1e-12)


def test_projector_exact_equals_analytic_on_a_separated_spectrum(xp):
    a, g, _ = _problem(SPECTRA["separated"], seed=14)
    w, v = svdpi.eig(from_numpy(xp, a))
    g = from_numpy(xp, g)
    kwargs = {"n_components": 2}
    exact = svdpi.pca_projector_vjp(w, v, g, method="exact", **kwargs)
    assert_close(exact, svdpi.pca_projector_vjp(w, v, g, method="analytic", **kwargs), 1e-12)


def test_whitening_exact_is_power_minus_half_exact(xp):
    a, g, _ = _problem(SPECTRA["double"], seed=15)
    w, v = svdpi.eig(from_numpy(xp, a))
    g = from_numpy(xp, g)
    for method in METHODS:
        np.testing.assert_array_equal(
            to_numpy(svdpi.zca_whitening_matrix_vjp(w, v, g, method=method)),
            to_numpy(svdpi.matrix_power_vjp(w, v, -0.5, g, method=method)),
        )


def test_none_cotangents_mean_zero(xp):
    """Issue 12, failure 2: every VJP takes None like eig_vjp does."""
    w, v = svdpi.eig(from_numpy(xp, _problem(SPECTRA["separated"], seed=16)[0]))
    for method in ("pi", "exact"):
        results = [
            svdpi.zca_whitening_matrix_vjp(w, v, None, method=method),
            svdpi.pca_projector_vjp(w, v, None, n_components=2, method=method),
            svdpi.matrix_power_vjp(w, v, 0.5, None, method=method),
            svdpi.matrix_log_vjp(w, v, None, method=method),
            svdpi.eig_vjp(w, v, None, None),
        ]
        for result in results:
            assert result.dtype == v.dtype
            np.testing.assert_array_equal(to_numpy(result), np.zeros((4, 4)))


def test_empty_batch(xp):
    a = from_numpy(xp, np.zeros((0, 3, 3)))
    w, v = from_numpy(xp, np.zeros((0, 3))), a
    for method in ("pi", "exact"):
        assert tuple(svdpi.matrix_power_vjp(w, v, 0.5, a, method=method).shape) == (0, 3, 3)
        assert tuple(svdpi.matrix_log_jvp(w, v, a, method=method).shape) == (0, 3, 3)
    assert tuple(svdpi.matrix_log(w, v).shape) == (0, 3, 3)


@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_n_zero_gives_empty_results(xp, shape):
    # Like eig and eigh-based code: n = 0 matrices are valid and give empty results.
    w = from_numpy(xp, np.zeros(shape))
    v = a = from_numpy(xp, np.zeros((*shape, 0)))
    for method in MATRIX_FUNCTION_METHODS:
        results = [
            svdpi.matrix_power_vjp(w, v, -0.5, a, method=method),
            svdpi.matrix_log_jvp(w, v, a, method=method),
            svdpi.zca_whitening_matrix_vjp(w, v, a, method=method),
            svdpi.pca_projector_vjp(w, v, a, method=method),
        ]
        for result in results:
            assert tuple(result.shape) == (*shape, 0)
    assert tuple(svdpi.matrix_power(w, v, 2.0).shape) == (*shape, 0)
    assert tuple(svdpi.matrix_log(w, v).shape) == (*shape, 0)
    assert tuple(svdpi.zca_whitening_matrix(w, v).shape) == (*shape, 0)
    assert tuple(svdpi.pca_projector(v).shape) == (*shape, 0)


def test_methods_list():
    assert MATRIX_FUNCTION_METHODS == ("pi", "taylor", "analytic", "exact")


@pytest.mark.parametrize("p", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_exponent_is_rejected(p):
    w, v = svdpi.eig(np.eye(2))
    with pytest.raises(ValueError, match="p must be finite"):
        svdpi.matrix_power(w, v, p)
    with pytest.raises(ValueError, match="p must be finite"):
        svdpi.matrix_power_vjp(w, v, p, np.eye(2))


@pytest.mark.parametrize("p", [True, 1j, np.array(0.5), np.array([0.5]), "0.5", None])
def test_non_real_exponent_is_rejected(p):
    w, v = svdpi.eig(np.eye(2))
    with pytest.raises(TypeError, match="p must be a real number"):
        svdpi.matrix_power(w, v, p)
    with pytest.raises(TypeError, match="p must be a real number"):
        svdpi.matrix_power_jvp(w, v, p, np.eye(2))


def test_numpy_scalar_exponents_are_accepted():
    w, v = svdpi.eig(np.diag([4.0, 1.0]))
    for p in (np.float32(0.5), np.float64(0.5), np.int64(2), 2):
        expected = np.diag([4.0, 1.0]) ** float(p)
        np.testing.assert_allclose(svdpi.matrix_power(w, v, p), expected)


def test_bad_masks_are_rejected(xp):
    w, v = svdpi.eig(from_numpy(xp, np.eye(3)))
    g = from_numpy(xp, np.eye(3))
    wrong_shape = from_numpy(xp, np.ones(2), xp.bool)
    wrong_dtype = from_numpy(xp, np.ones(3))
    for call in (
        lambda m: svdpi.matrix_power(w, v, 0.5, mask=m),
        lambda m: svdpi.matrix_log(w, v, mask=m),
        lambda m: svdpi.matrix_power_vjp(w, v, 0.5, g, mask=m, method="exact"),
        lambda m: svdpi.matrix_log_jvp(w, v, g, mask=m),
        lambda m: svdpi.zca_whitening_matrix_vjp(w, v, g, mask=m, method="exact"),
    ):
        with pytest.raises(ValueError, match="mask must have the shape"):
            call(wrong_shape)
        with pytest.raises(TypeError, match="mask must be a boolean array"):
            call(wrong_dtype)
        with pytest.raises(TypeError, match="mask must be a boolean array"):
            call([True, True, True])


def test_unknown_and_misplaced_methods_are_rejected():
    w, v = svdpi.eig(np.eye(3))
    g = np.eye(3)
    with pytest.raises(
        ValueError, match="method must be one of 'pi', 'taylor', 'analytic', 'exact'"
    ):
        svdpi.matrix_power_vjp(w, v, 0.5, g, method="svd")
    with pytest.raises(ValueError, match="method must be one of"):
        svdpi.matrix_log_jvp(w, v, g, method=None)
    # eig_vjp / eig_jvp: no matrix function, so no Daleckii–Krein; point to "analytic".
    with pytest.raises(ValueError, match="method='analytic'"):
        svdpi.eig_vjp(w, v, None, g, method="exact")
    with pytest.raises(ValueError, match="method='analytic'"):
        svdpi.eig_jvp(w, v, g, method="exact")


def test_bad_shapes_and_dtypes_are_rejected():
    w, v = svdpi.eig(np.eye(3))
    with pytest.raises(ValueError, match="grad must have shape"):
        svdpi.matrix_power_vjp(w, v, 0.5, np.eye(2), method="exact")
    with pytest.raises(ValueError, match="tangent_a must have shape"):
        svdpi.matrix_log_jvp(w, v, np.eye(4), method="exact")
    with pytest.raises(TypeError, match="grad must have dtype"):
        svdpi.matrix_log_vjp(w, v, np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="eigenvalues must have shape"):
        svdpi.matrix_power(w[:2], v, 0.5)
    with pytest.raises(TypeError, match="eigenvectors must have a floating dtype"):
        svdpi.matrix_log(w, np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="grad_whitening must have shape"):
        svdpi.zca_whitening_matrix_vjp(w, v, np.eye(2), method="exact")


@pytest.mark.parametrize(
    "spectrum", [[5.0, 2.0, 2.0, 0.1], [1.0, 1.0, 1.0, 1.0], [9.0, 1e-3, 1e-3 + 1e-12, 1e-4]]
)
def test_exact_whitening_entries_are_bounded_by_half_lambda_min_to_minus_three_halves(
    xp, spectrum
):
    """The docs' bound: with the all-ones cotangent in the eigenbasis, Vᵀ (∂L/∂A) V is the
    kernel G itself, and every |G_ij| <= λ_min^{-3/2} / 2, reached at G_nn."""
    a, _, _ = _problem(spectrum, seed=17)
    w, v = svdpi.eig(from_numpy(xp, a))
    v_np = to_numpy(v)
    ones = v_np @ np.ones((4, 4)) @ v_np.T
    grad = to_numpy(svdpi.zca_whitening_matrix_vjp(w, v, from_numpy(xp, ones), method="exact"))
    kernel = v_np.T @ grad @ v_np
    bound = 0.5 * min(spectrum) ** -1.5
    assert np.max(np.abs(kernel)) <= bound * (1 + 1e-9)
    assert abs(kernel[-1, -1]) == pytest.approx(bound, rel=1e-9)


@pytest.mark.parametrize("f", FUNCTIONS)
@pytest.mark.parametrize("spectrum", [[4.0, 1.0, 1.0, 1e-5], [1.0, 1.0 - 1e-7, 0.3, 0.3]])
def test_exact_in_float32_agrees_with_float64(xp, spectrum, f):
    """Single precision keeps float32 accuracy with ratios near eps and ties near eps."""
    a, g, _ = _problem(spectrum, seed=18)
    # The same eigenpairs in both precisions, so that only the gradient's rounding differs.
    w64, v64 = svdpi.eig(a)
    results = []
    for dtype in (xp.float32, xp.float64):
        w, v = from_numpy(xp, w64, dtype), from_numpy(xp, v64, dtype)
        results.append(to_numpy(_vjp(w, v, f, from_numpy(xp, g, dtype), method="exact")))
    single, double = results
    assert single.dtype == np.float32
    assert_close(single, double, rtol=2e-5)


_COMPILE_SCRIPT = """
import torch, svdpi

w = torch.tensor([[2.0, 1.0, 1.0, 0.5], [3.0, 2.0, 0.25, -1e-3]], dtype=torch.float64)
v = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
g = torch.ones(2, 4, 4, dtype=torch.float64)
mask = torch.tensor([[True, True, True, False]] * 2)


def everything(w, v, g):
    return (
        svdpi.matrix_power(w, v, 0.3, mask=mask),
        svdpi.matrix_power_vjp(w, v, -0.5, g, mask=mask, method="exact"),
        svdpi.matrix_power_jvp(w, v, 0.5, g, method="exact"),
        svdpi.matrix_log_vjp(w, v, g, method="exact"),
        svdpi.pca_projector_vjp(w, v, g, n_components=1, method="exact"),
    )


compiled = torch.compile(everything, fullgraph=True, backend="aot_eager")(w, v, g)
for got, expected in zip(compiled, everything(w, v, g), strict=True):
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert torch.isfinite(got).all()
print("ok")
"""


def test_exact_derivatives_compile_with_fullgraph_in_a_fresh_process():
    """No graph break in the exact path (a fresh process: nothing imported before)."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _COMPILE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("method", ["exact", "pi"])
def test_meta_tensors(method):
    """Shape propagation without data (deferred initialisation, model-size tools)."""
    torch = pytest.importorskip("torch")
    w = torch.empty(3, 4, device="meta")
    v = g = torch.empty(3, 4, 4, device="meta")
    mask = torch.empty(3, 4, dtype=torch.bool, device="meta")
    results = [
        svdpi.matrix_power(w, v, 0.5, mask=mask),
        svdpi.matrix_power_vjp(w, v, -0.5, g, mask=mask, method=method),
        svdpi.matrix_log_jvp(w, v, g, method=method),
        svdpi.pca_projector_vjp(w, v, g, n_components=2, method=method),
    ]
    for result in results:
        assert result.device.type == "meta"
        assert tuple(result.shape) == (3, 4, 4)
