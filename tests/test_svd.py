"""svdpi.svd, svd_vjp and svd_jvp (the core) against independent oracles, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import to_numpy
from _svd_helpers import (
    assert_close,
    canonical_svd,
    central_difference,
    inner,
    phase_free,
    random_matrix,
    with_singular_values,
)
from array_api_compat import is_lazy_array

import svdpi

SHAPES = [(5, 3), (3, 5), (4, 4)]
METHODS = ("pi", "taylor", "analytic")


def _as(xp, a, single=False):
    if np.iscomplexobj(a):
        dtype = xp.complex64 if single else xp.complex128
    else:
        dtype = xp.float32 if single else xp.float64
    return xp.asarray(np.ascontiguousarray(a), dtype=dtype)


def _factors(xp, a, canonical=False):
    return svdpi.svd(_as(xp, a), canonical=canonical)


def _numpy(*arrays):
    return tuple(None if x is None else to_numpy(x) for x in arrays)


# ------------------------------------------------------------------ forward


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_svd_reconstructs_and_sorts_descending(xp, m, n, batch, complex_):
    rng = np.random.default_rng(m * 10 + n)
    a = random_matrix(rng, (*batch, m, n), complex_)
    u, s, vh = _numpy(*svdpi.svd(_as(xp, a)))
    k = min(m, n)
    assert (u.shape, s.shape, vh.shape) == ((*batch, m, k), (*batch, k), (*batch, k, n))
    assert not np.iscomplexobj(s)
    assert np.all(np.diff(s, axis=-1) <= 0)
    np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), rtol=1e-12)
    assert_close((u * s[..., None, :]) @ vh, a, rtol=1e-12)
    eye = np.broadcast_to(np.eye(k), (*batch, k, k))
    assert_close(np.conj(np.swapaxes(u, -1, -2)) @ u, eye, atol=1e-12)
    assert_close(vh @ np.conj(np.swapaxes(vh, -1, -2)), eye, atol=1e-12)


def test_svd_result_is_a_named_tuple(xp):
    result = _factors(xp, np.diag([1.0, 2.0]))
    assert isinstance(result, svdpi.SVDResult)
    assert result.U is result[0]
    assert result.S is result[1]
    assert result.Vh is result[2]


@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (0, 0), (0, 3, 2), (2, 0, 4), (2, 4, 0)])
def test_empty_input_gives_the_shapes_of_xp_linalg_svd(xp, shape):
    a = xp.zeros(shape, dtype=xp.float64)
    u, s, vh = svdpi.svd(a)
    expected = xp.linalg.svd(a, full_matrices=False)
    assert (tuple(u.shape), tuple(s.shape), tuple(vh.shape)) == tuple(
        tuple(x.shape) for x in expected
    )
    grad = svdpi.svd_vjp(u, s, vh, xp.ones_like(u), xp.ones_like(s), xp.ones_like(vh))
    assert tuple(grad.shape) == shape
    du, ds, dvh = svdpi.svd_jvp(u, s, vh, xp.ones_like(a))
    assert (tuple(du.shape), tuple(ds.shape), tuple(dvh.shape)) == (
        tuple(u.shape),
        tuple(s.shape),
        tuple(vh.shape),
    )


def test_float32_and_complex64_keep_their_dtypes(xp):
    for a, dtype, real in (
        (np.eye(3, 2), xp.float32, xp.float32),
        (np.eye(3, 2) * 1j, xp.complex64, xp.float32),
    ):
        u, s, vh = svdpi.svd(_as(xp, a, single=True))
        assert u.dtype == dtype
        assert vh.dtype == dtype
        assert s.dtype == real
        grad = svdpi.svd_vjp(u, s, vh, None, xp.ones_like(s), None)
        assert grad.dtype == dtype


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_canonical_factors_are_reproducible_and_fix_the_largest_component(xp, complex_):
    rng = np.random.default_rng(3)
    a = random_matrix(rng, (2, 5, 3), complex_)
    u, s, vh = _numpy(*_factors(xp, a, canonical=True))
    assert_close((u * s[..., None, :]) @ vh, a, rtol=1e-12)
    # The first largest-magnitude entry of each left singular vector is real > 0.
    pivot = np.take_along_axis(u, np.argmax(np.abs(u), axis=-2)[..., None, :], axis=-2)
    assert np.all(np.real(pivot) > 0)
    np.testing.assert_allclose(np.imag(pivot), 0.0, atol=1e-15)
    # The same factors whatever phases the solver chose: scramble them and redo.
    phases = np.exp(1j * rng.uniform(0, 2 * np.pi, (2, 3))) if complex_ else np.array([-1.0])
    u2, vh2 = svdpi._svd.canonicalize(
        _as(xp, u * phases[..., None, :]), _as(xp, np.conj(phases)[..., :, None] * vh), xp
    )
    assert_close(u2, u, rtol=1e-14)
    assert_close(vh2, vh, rtol=1e-14)


def test_canonical_on_a_numpy_example_is_deterministic():
    a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    first = canonical_svd(a)
    again = canonical_svd(a.copy())
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.all(first.U[np.argmax(np.abs(first.U), axis=0), [0, 1]] > 0)


@pytest.mark.parametrize(
    ("a", "error", "match"),
    [
        (np.ones(3), ValueError, r"\(\.\.\., m, n\)"),
        (np.ones((2, 2), dtype=np.int64), TypeError, "floating dtype"),
        (np.ones((2, 2), dtype=np.float16), TypeError, "half precision"),
    ],
)
def test_svd_bad_input_names_the_argument(a, error, match):
    with pytest.raises(error, match=match):
        svdpi.svd(a)
    with pytest.raises(error, match=match):
        svdpi.svd(a, check_finite=False)


def test_svd_options_are_checked():
    with pytest.raises(TypeError, match="canonical"):
        svdpi.svd(np.eye(2), canonical=1)


def test_check_finite(xp):
    for bad in (math.nan, math.inf):
        a = np.eye(3, 2)
        a[1, 0] = bad
        x = _as(xp, a)
        if is_lazy_array(x):  # never read on the host: NaN propagates
            assert not np.isfinite(to_numpy(svdpi.svd(x).S)).all()
            continue
        with pytest.raises(ValueError, match="finite"):
            svdpi.svd(x)


def test_check_finite_complex_reads_both_parts_and_large_finite_values_pass(xp):
    big = np.finfo(np.float32).max / 2
    a = np.array([[big + 1j * big, 0.0], [0.0, 1.0]])
    x = _as(xp, a, single=True)  # |a[0, 0]| overflows float32, the entry does not
    svdpi.svd(x)
    a[1, 1] = complex(0.0, math.nan)
    x = _as(xp, a)
    if not is_lazy_array(x):
        with pytest.raises(ValueError, match="finite"):
            svdpi.svd(x)


# -------------------------------------------------- derivatives: "analytic"


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_analytic_vjp_equals_torch_linalg_svd_backward(xp, m, n, complex_):
    """Including the complement terms (m ≠ n) and complex input."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(m + 7 * n)
    a = random_matrix(rng, (2, m, n), complex_)
    reference = torch.tensor(a, requires_grad=True)
    u_t, s_t, vh_t = torch.linalg.svd(reference, full_matrices=False)
    u, s, vh = (x.detach().numpy() for x in (u_t, s_t, vh_t))
    grad_u, grad_vh = phase_free(
        u, vh, random_matrix(rng, u.shape, complex_), random_matrix(rng, vh.shape, complex_)
    )
    grad_s = rng.standard_normal(s.shape)
    torch.autograd.backward(
        (u_t, s_t, vh_t), tuple(torch.tensor(g) for g in (grad_u, grad_s, grad_vh))
    )
    grad = svdpi.svd_vjp(
        *(_as(xp, x) for x in (u, s, vh, grad_u, grad_s, grad_vh)), method="analytic"
    )
    assert_close(grad, reference.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_analytic_jvp_matches_finite_differences_of_the_canonical_svd(xp, m, n, complex_):
    """The canonical factors are a function of ``a``: central differences of all of them."""
    rng = np.random.default_rng(2 * m + n)
    a = with_singular_values(rng, m, n, [3.0, 2.0, 1.2, 0.5], batch=(2,), complex_=complex_)
    t = random_matrix(rng, a.shape, complex_)
    u, s, vh = _factors(xp, a, canonical=True)
    tangents = svdpi.svd_jvp(u, s, vh, _as(xp, t), method="analytic", canonical=True)
    expected = central_difference(lambda x: tuple(canonical_svd(x)), a, t)
    for actual, desired in zip(tangents, expected, strict=True):
        assert_close(actual, desired, rtol=1e-8)


@pytest.mark.parametrize("canonical", [False, True])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_jvp_is_the_transpose_of_the_vjp(xp, m, n, method, complex_, canonical):
    rng = np.random.default_rng(m * n)
    # A repeated singular value, except for the classical formula (infinite there).
    spectrum = [2.0, 1.5, 1.0, 0.5] if method == "analytic" else [2.0, 1.0, 1.0, 0.5]
    a = with_singular_values(rng, m, n, spectrum, batch=(2,), complex_=complex_)
    u, s, vh = _numpy(*_factors(xp, a, canonical=canonical))
    grad_u, grad_vh = random_matrix(rng, u.shape, complex_), random_matrix(rng, vh.shape, complex_)
    if not canonical:
        grad_u, grad_vh = phase_free(u, vh, grad_u, grad_vh)
    grad_s = rng.standard_normal(s.shape)
    t = random_matrix(rng, a.shape, complex_)
    args = [_as(xp, x) for x in (u, s, vh)]
    options = {"method": method, "num_iters": 5, "canonical": canonical}
    grad = svdpi.svd_vjp(*args, *(_as(xp, x) for x in (grad_u, grad_s, grad_vh)), **options)
    du, ds, dvh = _numpy(*svdpi.svd_jvp(*args, _as(xp, t), **options))
    left = inner(to_numpy(grad), t)
    right = inner(grad_u, du) + inner(grad_s, ds) + inner(grad_vh, dvh)
    assert abs(left - right) <= 1e-12 * (abs(left) + abs(right))


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_transpose_holds_for_phase_dependent_cotangents_with_the_check_off(complex_):
    """The private VJP with the phase check off is the exact transpose, gauge included."""
    import array_api_compat.numpy as xp

    from svdpi._svd_gradient import jvp, vjp

    rng = np.random.default_rng(11)
    a = random_matrix(rng, (4, 3), complex_)
    u, s, vh = svdpi.svd(a)
    grad_u, grad_vh = random_matrix(rng, u.shape, complex_), random_matrix(rng, vh.shape, complex_)
    t = random_matrix(rng, a.shape, complex_)
    options = {"method": "pi", "num_iters": 19, "canonical": False, "xp": xp}
    grad = vjp(u, s, vh, grad_u, None, grad_vh, phase="off", **options)
    du, _, dvh = jvp(u, s, vh, t, **options)
    assert inner(grad, t) == pytest.approx(inner(grad_u, du) + inner(grad_vh, dvh), rel=1e-12)


# ------------------------------------------------------ derivatives: pi/taylor


@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize("spectrum", [[3.0, 2.5, 1.2, 0.7], [3.0, 2.0, 2.0, 1.0]])
def test_pi_is_the_gradient_of_power_iteration_on_the_gram_matrices(m, n, spectrum):
    """The paper's loop (tests/paper_reference.py) on AAᵀ and AᵀA, with the exact polar factor.

    ``method="pi"`` is the gradient of ``U = (U_PI + Q V_PI)/2``,
    ``V = (V_PI + Qᵀ U_PI)/2``, ``σ`` exact, where ``U_PI`` / ``V_PI`` run
    power iteration with deflation on ``AAᵀ`` / ``AᵀA`` from the exact
    singular vectors and ``Q = A (AᵀA)^{-1/2}`` is the polar factor
    (docs/theory_svd.rst). Repeated singular values included.
    """
    torch = pytest.importorskip("torch")
    from paper_reference import paper_eig

    import svdpi.torch

    rng = np.random.default_rng(5)
    num_iters = 7
    a = with_singular_values(rng, m, n, spectrum)
    u, s, vh = svdpi.svd(a)
    grad_u, grad_s, grad_vh = (rng.standard_normal(x.shape) for x in (u, s, vh))
    expected = svdpi.svd_vjp(u, s, vh, grad_u, grad_s, grad_vh, num_iters=num_iters)

    def completed(basis):  # the start vectors of every eigenvector of the Gram matrix
        q, _ = np.linalg.qr(np.concatenate([basis, rng.standard_normal(basis.shape)], axis=1))
        q[:, : basis.shape[1]] = basis
        return torch.tensor(q[:, : basis.shape[0]])

    x = torch.tensor(a, requires_grad=True)
    k = min(m, n)
    _, u_pi = paper_eig(x @ x.T, k=k, num_iters=num_iters, start_vectors=completed(u))
    _, v_pi = paper_eig(x.T @ x, k=k, num_iters=num_iters, start_vectors=completed(vh.T))
    if m >= n:
        q = x @ svdpi.torch.inv_sqrtm(x.T @ x, method="exact")
    else:
        q = svdpi.torch.inv_sqrtm(x @ x.T, method="exact") @ x
    u_algo, v_algo = (u_pi + q @ v_pi) / 2, (v_pi + q.T @ u_pi) / 2
    loss = (
        (u_algo * torch.tensor(grad_u)).sum()
        + (torch.linalg.svdvals(x) * torch.tensor(grad_s)).sum()
        + (v_algo.T * torch.tensor(grad_vh)).sum()
    )
    loss.backward()
    assert_close(expected, x.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_pi_equals_eig_vjp_on_the_gram_matrices_for_a_common_rotation(xp, method):
    """For cotangents ``(U Y, V Y)`` only the Gram-matrix coefficients act (P drops out).

    Then the gradient is that of eig_vjp for ``AAᵀ`` (on ``U``) plus for
    ``AᵀA`` (on ``V``), with eigenvalues ``σ²``: the same coefficients.
    """
    rng = np.random.default_rng(8)
    a = with_singular_values(rng, 4, 4, [2.0, 1.0, 1.0, 0.3])
    u, s, vh = _factors(xp, a)
    y = _as(xp, rng.standard_normal((4, 4)))
    v = xp.matrix_transpose(vh)
    grad = svdpi.svd_vjp(u, s, vh, u @ y, None, xp.matrix_transpose(v @ y), method=method)
    lam = s * s
    grad_left = svdpi.eig_vjp(lam, u, None, u @ y, method=method)  # d/d(AAᵀ), symmetric
    grad_right = svdpi.eig_vjp(lam, v, None, v @ y, method=method)  # d/d(AᵀA)
    x = _as(xp, a)
    assert_close(grad, to_numpy(2 * grad_left @ x + 2 * x @ grad_right), rtol=1e-12)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_series_tend_to_the_analytic_gradient_on_separated_singular_values(method):
    rng = np.random.default_rng(9)
    a = with_singular_values(rng, 5, 3, [3.0, 1.5, 0.5])
    u, s, vh = svdpi.svd(a)
    grads = [rng.standard_normal(x.shape) for x in (u, s, vh)]
    analytic = svdpi.svd_vjp(u, s, vh, *grads, method="analytic")
    near = svdpi.svd_vjp(u, s, vh, *grads, method=method, num_iters=200)
    far = svdpi.svd_vjp(u, s, vh, *grads, method=method, num_iters=1)
    assert_close(near, analytic, rtol=1e-13)
    assert np.abs(far - analytic).max() > 1e-3  # the truncation is visible at 1 step


@pytest.mark.parametrize(
    ("method", "complex_"),
    [("pi", False), ("pi", True), ("taylor", False)],
    ids=["pi-real", "pi-complex", "taylor-real"],
)
@pytest.mark.parametrize(("m", "n"), [(5, 3), (3, 5)])
@pytest.mark.parametrize(
    "spectrum",
    [[2.0, 2.0, 2.0, 2.0], [3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1e-30, 1e-30, 0.0]],
    ids=["repeated", "rank-1", "zero", "tiny"],
)
def test_series_are_finite_and_bounded_at_repeated_and_zero_singular_values(
    xp, m, n, method, complex_, spectrum
):
    rng = np.random.default_rng(10)
    a = with_singular_values(rng, m, n, spectrum, complex_=complex_)
    u, s, vh = _factors(xp, a)
    grad_u, grad_vh = phase_free(
        *_numpy(u, vh),
        random_matrix(rng, u.shape, complex_),
        random_matrix(rng, vh.shape, complex_),
    )
    grad = to_numpy(
        svdpi.svd_vjp(u, s, vh, _as(xp, grad_u), None, _as(xp, grad_vh), method=method)
    )
    assert np.isfinite(grad).all()
    # The coefficients are at most (2 num_iters + 2) / floor, the floor
    # max(m, n)·eps·σ_max (or tiny/eps for the zero matrix).
    eps = np.finfo(np.float64).eps
    floor = max(max(m, n) * eps * max(spectrum), np.finfo(np.float64).tiny / eps)
    bound = 3 * 40 / floor * (np.abs(grad_u).sum() + np.abs(grad_vh).sum())
    assert np.abs(grad).max() <= bound
    du, _, dvh = _numpy(*svdpi.svd_jvp(u, s, vh, _as(xp, random_matrix(rng, a.shape, complex_))))
    assert np.isfinite(du).all()
    assert np.isfinite(dvh).all()


def test_series_gradient_at_a_scaled_matrix_scales_inversely_near_the_dtype_limits(xp):
    """σ² neither overflows nor underflows: the coefficients work in units of σ_max."""
    rng = np.random.default_rng(12)
    a = with_singular_values(rng, 4, 3, [2.0, 1.0, 1.0])
    u, s, vh = _numpy(*_factors(xp, a))
    grads = [rng.standard_normal(x.shape) for x in (u, vh)]
    base = to_numpy(
        svdpi.svd_vjp(
            *(_as(xp, x, True) for x in (u, s, vh, grads[0])), None, _as(xp, grads[1], True)
        )
    )
    for scale in (1e30, 1e-30):
        scaled = [_as(xp, x, True) for x in (u, s * scale, vh, grads[0])]
        grad = to_numpy(svdpi.svd_vjp(*scaled, None, _as(xp, grads[1], True)))
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(grad * scale, base, rtol=1e-4, atol=1e-5)


def test_series_floor_singular_values_below_max_m_n_eps_sigma_max():
    """Below the floor, the gradient does not depend on the singular value's exact size."""
    rng = np.random.default_rng(13)
    u, s, vh = svdpi.svd(with_singular_values(rng, 5, 3, [1.0, 0.5, 0.0]))
    grads = [rng.standard_normal(x.shape) for x in (u, vh)]
    at = []
    for tiny in (0.0, 1e-20, 1e-17):
        s2 = s.copy()
        s2[-1] = tiny
        at.append(svdpi.svd_vjp(u, s2, vh, grads[0], None, grads[1]))
    assert_close(at[1], at[0], rtol=1e-15)
    assert_close(at[2], at[0], rtol=1e-15)


# --------------------------------------------------------- complex phase


def test_a_phase_dependent_loss_raises_like_torch(xp):
    rng = np.random.default_rng(14)
    a = random_matrix(rng, (3, 4, 3), True)
    u, s, vh = _factors(xp, a)
    grad_u = xp.ones_like(u) * (1j + 0.0)  # Im diag(Uᴴ ḡ) ≠ 0 for a random U
    if is_lazy_array(u):
        # Not read on the host: that matrix's gradient is NaN instead.
        grad = to_numpy(svdpi.svd_vjp(u, s, vh, grad_u, None, None))
        assert np.isnan(grad).all()
        return
    with pytest.raises(ValueError, match="phase"):
        svdpi.svd_vjp(u, s, vh, grad_u, None, None)
    # A phase-free loss of the same factors passes, and canonical=True accepts any loss.
    free_u, free_vh = phase_free(*_numpy(u, vh), to_numpy(grad_u), np.zeros(vh.shape, complex))
    free = svdpi.svd_vjp(u, s, vh, _as(xp, free_u), None, _as(xp, free_vh))
    assert np.isfinite(to_numpy(free)).all()
    uc, sc, vhc = _factors(xp, a, canonical=True)
    assert np.isfinite(
        to_numpy(svdpi.svd_vjp(uc, sc, vhc, grad_u, None, None, canonical=True))
    ).all()


def test_phase_check_matches_torch_on_the_same_loss():
    torch = pytest.importorskip("torch")
    a = torch.tensor(random_matrix(np.random.default_rng(15), (4, 3), True), requires_grad=True)
    u, _, _ = torch.linalg.svd(a, full_matrices=False)
    with pytest.raises(RuntimeError, match="phase"):
        u.real.sum().backward()  # torch's own error, for the same kind of loss
    u, s, vh = svdpi.svd(a.detach().numpy())
    with pytest.raises(ValueError, match="phase"):
        svdpi.svd_vjp(u, s, vh, np.ones_like(u), None, None)  # d(Re Σ u)/du = 1


@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_canonical_gradient_of_a_phase_dependent_loss_matches_finite_differences(m, n):
    rng = np.random.default_rng(16 + m)
    a = with_singular_values(rng, m, n, [3.0, 2.0, 1.0, 0.5], complex_=True)
    grad_u = random_matrix(rng, (m, min(m, n)), True)
    grad_vh = random_matrix(rng, (min(m, n), n), True)

    def loss(x):
        u, _, vh = canonical_svd(x)
        return inner(grad_u, u) + inner(grad_vh, vh)

    u, s, vh = canonical_svd(a)
    grad = svdpi.svd_vjp(u, s, vh, grad_u, None, grad_vh, method="analytic", canonical=True)
    for direction in (random_matrix(rng, a.shape), 1j * random_matrix(rng, a.shape)):
        expected = (loss(a + 1e-6 * direction) - loss(a - 1e-6 * direction)) / 2e-6
        assert inner(grad, direction) == pytest.approx(expected, rel=1e-7)


# ------------------------------------------------------------ bad arguments


def test_vjp_and_jvp_check_their_arguments():
    u, s, vh = svdpi.svd(np.eye(3, 2))
    with pytest.raises(ValueError, match=r"method=.exact..*singular_value_map_vjp"):
        svdpi.svd_vjp(u, s, vh, u, None, None, method="exact")
    with pytest.raises(ValueError, match="method"):
        svdpi.svd_jvp(u, s, vh, np.eye(3, 2), method="svd")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.svd_vjp(u, s, vh, u, None, None, num_iters=0)
    with pytest.raises(ValueError, match="grad_u must have shape"):
        svdpi.svd_vjp(u, s, vh, u[:2], None, None)
    with pytest.raises(TypeError, match="grad_s must have dtype"):
        svdpi.svd_vjp(u, s, vh, None, s.astype(np.float32), None)
    with pytest.raises(ValueError, match="tangent_a must have shape"):
        svdpi.svd_jvp(u, s, vh, np.eye(2))
    with pytest.raises(TypeError, match="tangent_a must be an array"):
        svdpi.svd_jvp(u, s, vh, None)
    with pytest.raises(ValueError, match="reduced SVD"):
        svdpi.svd_vjp(u, s, vh[:1], None, s, None)
    with pytest.raises(ValueError, match="s must have shape"):
        svdpi.svd_vjp(u, s[:1], vh, None, None, None)
    with pytest.raises(TypeError, match="real dtype"):
        svdpi.svd_vjp(u, s.astype(complex), vh, None, None, None)
    with pytest.raises(TypeError, match="canonical"):
        svdpi.svd_vjp(u, s, vh, None, s, None, canonical="yes")


def test_all_none_cotangents_give_a_zero_gradient(xp):
    u, s, vh = _factors(xp, np.eye(3, 2))
    grad = svdpi.svd_vjp(u, s, vh, None, None, None)
    assert_close(grad, np.zeros((3, 2)))
