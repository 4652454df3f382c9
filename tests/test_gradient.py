"""eig_vjp / eig_jvp against independent oracles, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, random_spd, spd_with_spectrum, to_numpy

import svdpi

torch = pytest.importorskip("torch")
from paper_reference import paper_eig_vjp  # noqa: E402  (needs torch)

METHODS = ["pi", "taylor", "analytic"]


def _vjp_numpy(a, gl, gv, **kwargs):
    w, v = svdpi.eig(a)
    return svdpi.eig_vjp(w, v, gl, gv, **kwargs)


@pytest.mark.parametrize("n", [2, 5, 12])
@pytest.mark.parametrize("num_iters", [1, 4, 19])
@pytest.mark.parametrize("k", ["all", 2])
def test_pi_equals_paper_loop(xp, n, num_iters, k):
    """The closed form equals the literal PI-with-deflation loop differentiated by autograd."""
    rng = np.random.default_rng(n * 100 + num_iters)
    k = n if k == "all" else k
    a = random_spd(n, rng, batch=(2,))
    gl = rng.standard_normal((2, k))
    gv = rng.standard_normal((2, n, k))
    w, v = svdpi.eig(from_numpy(xp, a))
    # Full-size cotangents, zero beyond the top k (the layers' truncation).
    gl_full = np.zeros((2, n))
    gl_full[:, :k] = gl
    gv_full = np.zeros((2, n, n))
    gv_full[..., :k] = gv
    got = svdpi.eig_vjp(
        w, v, from_numpy(xp, gl_full), from_numpy(xp, gv_full), num_iters=num_iters
    )
    expected = paper_eig_vjp(
        torch.from_numpy(a),
        torch.from_numpy(gl),
        torch.from_numpy(gv),
        num_iters=num_iters,
        start_vectors=torch.from_numpy(to_numpy(v)),
    )
    assert_close(got, expected, rtol=1e-9)


def test_analytic_equals_torch_eigh_backward():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(random_spd(6, rng, batch=(3,))).requires_grad_(True)
    gl = torch.from_numpy(rng.standard_normal((3, 6)))
    gv = torch.from_numpy(rng.standard_normal((3, 6, 6)))
    ws, vs = svdpi.eig(a.detach())
    w, v = torch.linalg.eigh(a)
    # torch's order is ascending: flip to svdpi's descending order before the loss.
    w, v = w.flip(-1), v.flip(-1)
    # Eigenvector signs are arbitrary: give torch's those of svdpi's, so that both
    # gradients are of one function.
    signs = torch.sign((v.detach() * vs).sum(-2, keepdim=True))
    (w * gl).sum().add((v * signs * gv).sum()).backward()
    got = svdpi.eig_vjp(ws, vs, gl, gv, method="analytic")
    assert_close(got, a.grad, rtol=1e-10)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_series_converge_to_analytic(xp, method):
    """On a well separated spectrum the truncation error decays like (λ_2/λ_1)^T."""
    rng = np.random.default_rng(2)
    a = from_numpy(xp, spd_with_spectrum([8.0, 4.0, 2.0, 1.0], rng))
    gv = from_numpy(xp, rng.standard_normal((4, 4)))
    w, v = svdpi.eig(a)
    exact = to_numpy(svdpi.eig_vjp(w, v, None, gv, method="analytic"))
    errors = [
        np.abs(to_numpy(svdpi.eig_vjp(w, v, None, gv, method=method, num_iters=t)) - exact).max()
        for t in (2, 8, 32, 10**6)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.5**7 * np.abs(exact).max()
    # A million iterations cost the same as one and give the limit.
    assert errors[3] < 1e-12 * np.abs(exact).max()


@pytest.mark.parametrize("method", METHODS)
def test_jvp_is_transpose_of_vjp(xp, method):
    rng = np.random.default_rng(3)
    a = from_numpy(xp, random_spd(7, rng, batch=(2, 3)))
    gl = from_numpy(xp, rng.standard_normal((2, 3, 7)))
    gv = from_numpy(xp, rng.standard_normal((2, 3, 7, 7)))
    t = from_numpy(xp, rng.standard_normal((2, 3, 7, 7)))  # not symmetric on purpose
    w, v = svdpi.eig(a)
    g_a = svdpi.eig_vjp(w, v, gl, gv, method=method, num_iters=5)
    dw, dv = svdpi.eig_jvp(w, v, t, method=method, num_iters=5)
    lhs = np.sum(to_numpy(g_a) * to_numpy(t))
    rhs = np.sum(to_numpy(gl) * to_numpy(dw)) + np.sum(to_numpy(gv) * to_numpy(dv))
    assert lhs == pytest.approx(rhs, rel=1e-11)


def _sign_invariant_loss(a, c, u):
    """``Σ_j u_j (v_jᵀ c_j)² + Σ_j u_j λ_j``: smooth in ``a`` where the spectrum is simple."""
    w, v = svdpi.eig(a)
    return np.sum(u * (np.einsum("ij,ij->j", v, c) ** 2 + w)), (w, v)


@pytest.mark.parametrize(("method", "num_iters"), [("analytic", 19), ("pi", 400)])
def test_vjp_matches_finite_differences(method, num_iters):
    rng = np.random.default_rng(4)
    n = 5
    a = spd_with_spectrum([5.0, 3.0, 2.0, 1.2, 0.5], rng)
    c = rng.standard_normal((n, n))
    u = rng.standard_normal(n)
    _, (w, v) = _sign_invariant_loss(a, c, u)
    proj = np.einsum("ij,ij->j", v, c)
    gv = 2 * u * proj * c
    g = svdpi.eig_vjp(w, v, u, gv, method=method, num_iters=num_iters)
    t = rng.standard_normal((n, n))
    t = (t + t.T) / 2
    h = 1e-6
    fd = (_sign_invariant_loss(a + h * t, c, u)[0] - _sign_invariant_loss(a - h * t, c, u)[0]) / (
        2 * h
    )
    assert np.sum(g * t) == pytest.approx(fd, rel=1e-6)


def test_eigenvalue_gradient_is_exact_for_every_method():
    """dλ_j = v_jᵀ da v_j whatever the method: compare with finite differences."""
    rng = np.random.default_rng(5)
    a = spd_with_spectrum([4.0, 2.0, 1.0], rng)
    u = np.array([1.0, -2.0, 0.5])
    t = rng.standard_normal((3, 3))
    t = t + t.T
    h = 1e-6
    fd = (u @ svdpi.eig(a + h * t)[0] - u @ svdpi.eig(a - h * t)[0]) / (2 * h)
    for method in METHODS:
        g = _vjp_numpy(a, u, None, method=method)
        assert np.sum(g * t) == pytest.approx(fd, rel=1e-7), method


@pytest.mark.parametrize(
    "spectrum",
    [
        [3.0, 1.0, 1.0, 1.0, 0.5],  # repeated eigenvalue
        [2.0, 1.0 + 1e-13, 1.0, 1.0 - 1e-13, 0.5],  # cluster below round-off
        [1.0, 1.0, 1.0, 1.0, 1.0],  # identity
        [4.0, 2.0, 0.0, 0.0, 0.0],  # rank deficient
        [0.0, 0.0, 0.0, 0.0, 0.0],  # zero matrix
        [1.0, 0.5, 1e-3, -1e-9, -1e-3],  # not PSD
    ],
)
@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_degenerate_spectra_give_finite_bounded_gradients(xp, spectrum, method):
    rng = np.random.default_rng(6)
    num_iters = 19
    a = from_numpy(xp, spd_with_spectrum(spectrum, rng))
    gl = from_numpy(xp, rng.standard_normal(5))
    gv = from_numpy(xp, rng.standard_normal((5, 5)))
    w, v = svdpi.eig(a)
    g = to_numpy(svdpi.eig_vjp(w, v, gl, gv, method=method, num_iters=num_iters))
    assert np.all(np.isfinite(g))
    # |A_jm| <= (T + 1) / λ_floor and V is orthogonal: ‖g‖_F <= ‖gλ‖ + (T+1)/λ_min · ‖gV‖_F.
    w_np = to_numpy(w)
    floor = max(5 * np.finfo(np.float64).eps * np.abs(w_np).max(), 1e-292)
    lam_min = max(w_np.min(), floor)
    # Compared after multiplying by λ_min / (T + 1): the zero matrix's gradient is
    # finite but near 1e293, whose squared norm would overflow.
    unit = lam_min / (num_iters + 1)
    bound = unit * np.linalg.norm(to_numpy(gl)) + np.linalg.norm(to_numpy(gv))
    assert np.linalg.norm(g * unit) <= bound * (1 + 1e-9)
    _dw, dv = svdpi.eig_jvp(w, v, gv, method=method, num_iters=num_iters)
    assert np.all(np.isfinite(to_numpy(dv)))


def test_repeated_eigenvalue_coefficients_match_the_series_limit():
    """For λ_j = λ_m the coefficients are (T + 1)/λ above and -T/λ below the diagonal."""
    w = np.array([2.0, 2.0])
    a = svdpi._coefficients.coefficient_matrix(w, method="pi", num_iters=19, xp=np)
    np.testing.assert_allclose(a, [[0.0, 20 / 2.0], [-19 / 2.0, 0.0]], rtol=1e-15)


@pytest.mark.parametrize("scale", [1e-150, 1e-30, 1e30, 1e150])
@pytest.mark.parametrize("method", METHODS)
def test_gradient_scales_inversely_with_the_matrix(method, scale):
    """eig(s·a) has eigenvalues s·λ and the same eigenvectors: ḡ_a scales as 1/s."""
    rng = np.random.default_rng(7)
    a = random_spd(6, rng)
    gv = rng.standard_normal((6, 6))
    w, v = svdpi.eig(a)
    ref = svdpi.eig_vjp(w, v, None, gv, method=method)
    got = svdpi.eig_vjp(w * scale, v, None, gv, method=method) * scale
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert np.all(np.isfinite(svdpi.eig_vjp(*svdpi.eig(a * scale), None, gv, method=method)))


@pytest.mark.parametrize("method", METHODS)
def test_float32_agrees_with_float64(xp, method):
    rng = np.random.default_rng(8)
    a = random_spd(8, rng, batch=(4,), ridge=0.1)
    gv = rng.standard_normal((4, 8, 8))
    gl = rng.standard_normal((4, 8))
    results = []
    for dtype in (xp.float32, xp.float64):
        w, v = svdpi.eig(from_numpy(xp, a, dtype))
        # Eigenvectors in float32 and float64 may differ in sign: align the cotangents.
        signs = np.sign(np.sum(to_numpy(v) * random_spd(8, np.random.default_rng(0)), axis=-2))
        v64 = to_numpy(v).astype(np.float64) * signs[..., None, :]
        w = from_numpy(xp, to_numpy(w), dtype)
        v = from_numpy(xp, v64, dtype)
        g = svdpi.eig_vjp(
            w, v, from_numpy(xp, gl, dtype), from_numpy(xp, gv, dtype), method=method
        )
        assert g.dtype == dtype
        results.append(to_numpy(g).astype(np.float64))
    assert_close(results[0], results[1], rtol=2e-3)


def test_none_cotangents(xp):
    rng = np.random.default_rng(9)
    w, v = svdpi.eig(from_numpy(xp, random_spd(4, rng)))
    zero = svdpi.eig_vjp(w, v, None, None)
    assert tuple(zero.shape) == (4, 4)
    assert np.all(to_numpy(zero) == 0)
    gl = from_numpy(xp, rng.standard_normal(4))
    only_values = svdpi.eig_vjp(w, v, gl, None)
    v_np = to_numpy(v)
    assert_close(only_values, v_np @ np.diag(to_numpy(gl)) @ v_np.T, rtol=1e-12)


def test_outputs_keep_namespace_dtype_and_device(xp):
    rng = np.random.default_rng(10)
    a = from_numpy(xp, random_spd(3, rng), xp.float32)
    w, v = svdpi.eig(a)
    g = svdpi.eig_vjp(w, v, w, v)
    dw, dv = svdpi.eig_jvp(w, v, a)
    from array_api_compat import array_namespace, device

    for out in (w, v, g, dw, dv):
        assert array_namespace(out) == array_namespace(a)
        assert out.dtype == xp.float32
        assert device(out) == device(a)


def _exact_series_limit_vjp(w, v, g_v, num_iters):
    """The "pi" VJP in exact rational arithmetic, for a huge ``num_iters``.

    For unequal eigenvalues ``r^T`` is taken as 0, which ``assert`` checks is
    far below round-off; for equal ones ``S_K(1) = K + 1`` exactly. ``v`` must be
    a signed permutation (the eigenvectors of a diagonal matrix), so that the
    products with it are exact too.
    """
    from fractions import Fraction

    n = len(w)
    lam = [Fraction(float(x)) for x in w]

    def series(small, big, terms):  # Σ_{i<terms} (small/big)^i
        if small == big:
            return Fraction(terms)
        r = small / big
        assert terms * np.log(float(big / small)) > 200  # r^terms < 1e-87
        return 1 / (1 - r)

    def a(j, m):  # the coefficient matrix of svdpi._coefficients, j < m: λ_j >= λ_m
        if j < m:
            return series(lam[m], lam[j], num_iters + 1) / lam[j]
        return -series(lam[j], lam[m], num_iters) / lam[m]

    vf = [[Fraction(float(x)) for x in row] for row in v]
    gf = [[Fraction(float(x)) for x in row] for row in g_v]
    b = [[sum(vf[k][i] * gf[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    inner = [
        [0 if i == j else (a(j, i) * b[i][j] + a(i, j) * b[j][i]) / 2 for j in range(n)]
        for i in range(n)
    ]
    left = [[sum(vf[i][k] * inner[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    return np.array(
        [[float(sum(left[i][k] * vf[j][k] for k in range(n))) for j in range(n)] for i in range(n)]
    )


@pytest.mark.parametrize("num_iters", [10**6, 2**23, 2**24, 2**53])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cotangent", ["ones", "random"])
def test_equal_eigenvalues_with_a_huge_num_iters(xp, num_iters, dtype, cotangent):
    """Exact for equal eigenvalues however many iterations (0.1 lost r^T to cancellation).

    For diag(3, 1, 1) and a ones cotangent entry [1, 2] is 0.5; 0.1 returned 0
    at 2**53 in float64 and 0.25 at 2**23, 0 at 2**24 in float32.
    """
    rng = np.random.default_rng(num_iters % 1000)
    g_v = np.ones((3, 3)) if cotangent == "ones" else rng.standard_normal((3, 3))
    a = xp.asarray(np.diag([3.0, 1.0, 1.0]), dtype=getattr(xp, dtype))
    w, v = svdpi.eig(a)
    got = to_numpy(svdpi.eig_vjp(w, v, None, xp.asarray(g_v, dtype=a.dtype), num_iters=num_iters))
    expected = _exact_series_limit_vjp(to_numpy(w), to_numpy(v), g_v, num_iters)
    if cotangent == "ones":
        assert expected[1, 2] == expected[2, 1] == 0.5
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, expected, rtol=8 * eps, atol=8 * eps * np.abs(expected).max())
