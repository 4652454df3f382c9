"""svdpi.eig, eig_vjp and eig_jvp on complex Hermitian matrices (issue 17), every backend.

Oracles: numpy.linalg.eigvalsh, autograd through ``torch.linalg.eigh`` on
separated spectra with phase-invariant losses, the paper's power iteration
with deflation written literally and differentiated by complex autograd,
central differences of the canonical eigenvectors along Hermitian
directions, exact rational arithmetic for a huge ``num_iters``, and the real
code on real data passed as complex.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from _complex_helpers import (
    adjoint,
    as_xp,
    hermitian_with_spectrum,
    inner,
    phase_free,
    random_complex,
    random_hermitian,
)
from _helpers import assert_close, to_numpy
from array_api_compat import is_lazy_array

import svdpi

METHODS = ("pi", "taylor", "analytic")


def _eig(xp, a, **kwargs):
    return svdpi.eig(as_xp(xp, a), **kwargs)


# -------------------------------------------------------------------- forward


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_eig_of_hermitian_matrices(xp, batch):
    rng = np.random.default_rng(len(batch))
    a = hermitian_with_spectrum([4.0, 2.5, 1.0, -0.5], rng, batch)
    w, v = _eig(xp, a)
    assert w.dtype == xp.float64
    assert v.dtype == xp.complex128
    w, v = to_numpy(w), to_numpy(v)
    assert np.all(np.diff(w, axis=-1) <= 0)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a)[..., ::-1], rtol=1e-13, atol=1e-13)
    assert_close((v * w[..., None, :]) @ adjoint(v), a, rtol=1e-13)
    assert_close(adjoint(v) @ v, np.broadcast_to(np.eye(4), v.shape), atol=1e-13)


def test_complex64_gives_float32_eigenvalues(xp):
    a = hermitian_with_spectrum([3.0, 2.0, 1.0], np.random.default_rng(1))
    w, v = svdpi.eig(as_xp(xp, a, single=True))
    assert w.dtype == xp.float32
    assert v.dtype == xp.complex64
    np.testing.assert_allclose(to_numpy(w), [3.0, 2.0, 1.0], rtol=1e-5)


def test_eig_uses_the_hermitian_part(xp):
    """Non-Hermitian input (and imaginary parts on the diagonal) is read as (a + aᴴ)/2."""
    rng = np.random.default_rng(2)
    a = random_complex(rng, (2, 4, 4))
    w, v = _eig(xp, a)
    h = (a + adjoint(a)) / 2
    np.testing.assert_allclose(to_numpy(w), np.linalg.eigvalsh(h)[..., ::-1], rtol=1e-13)
    w, v = to_numpy(w), to_numpy(v)
    assert_close((v * w[..., None, :]) @ adjoint(v), h, rtol=1e-13)


def test_entries_near_the_dtype_maximum(xp):
    """(a − aᴴ)/2 − a, not a + aᴴ: finite eigenvalues for entries above half the maximum."""
    if xp.__name__.startswith("jax"):
        pytest.skip("jax.numpy.linalg.eigh itself returns NaN above half the dtype's maximum")
    big = 1.5e308
    a = np.array([[big, 0.5j * big], [-0.5j * big, big]])
    w, _ = _eig(xp, a)
    np.testing.assert_allclose(to_numpy(w), [1.5 * big, 0.5 * big], rtol=1e-12)


def test_check_finite_reads_both_parts(xp):
    for bad in (complex(np.nan, 0.0), complex(0.0, np.inf)):
        a = np.eye(3, dtype=complex)
        a[1, 2] = bad
        x = as_xp(xp, a)
        if is_lazy_array(x):
            continue
        with pytest.raises(ValueError, match="finite"):
            svdpi.eig(x)
    # Finite entries whose modulus overflows are finite.
    c = 1e308 + 1e308j
    w, _ = _eig(xp, np.array([[0.0, c], [np.conj(c), 0.0]]))
    if not xp.__name__.startswith("jax"):  # jax's eigh: NaN above half the maximum
        np.testing.assert_allclose(to_numpy(w), [abs(c), -abs(c)], rtol=1e-14)


@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0), (0, 2, 2)])
def test_empty_complex_input(xp, shape):
    w, v = svdpi.eig(xp.zeros(shape, dtype=xp.complex128), canonical=True)
    assert tuple(w.shape) == shape[:-1]
    assert tuple(v.shape) == shape
    assert w.dtype == xp.float64
    grad = svdpi.eig_vjp(w, v, xp.zeros_like(w), xp.zeros_like(v))
    assert tuple(grad.shape) == shape


# ------------------------------------------------------ derivatives: oracles


@pytest.mark.parametrize("batch", [(), (2,)])
def test_analytic_vjp_equals_torch_eigh_backward(xp, batch):
    """Phase-invariant losses of separated spectra: torch's complex eigh gradient."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a = hermitian_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5], rng, batch)
    gl = rng.standard_normal((*batch, 5))
    leaf = torch.tensor(a, requires_grad=True)
    # eigh reads one triangle: differentiate through the Hermitian part, whose
    # gradient is the Hermitian part of the gradient (svdpi's convention).
    wt, vt = torch.linalg.eigh((leaf + leaf.mH) / 2)
    wt, vt = wt.flip(-1), vt.flip(-1)
    g_v = phase_free(vt.detach().numpy(), random_complex(rng, a.shape))
    loss = (wt * torch.tensor(gl)).sum() + (vt.conj() * torch.tensor(g_v)).real.sum()
    loss.backward()
    w, v = _eig(xp, a)
    # The phases of svdpi's and torch's eigenvectors differ: carry the cotangent
    # over (ḡ e^{iφ} for v e^{iφ}), which is what a phase-invariant loss does.
    phase = np.sum(np.conj(vt.detach().numpy()) * to_numpy(v), axis=-2)
    g_ours = g_v * phase[..., None, :]
    got = svdpi.eig_vjp(w, v, as_xp(xp, gl), as_xp(xp, g_ours), method="analytic")
    assert_close(got, leaf.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("num_iters", [1, 4, 19])
def test_pi_is_the_gradient_of_the_literal_power_iteration_loop(xp, num_iters):
    """num_iters + 1 steps of v ← M v/‖M v‖ with deflation, complex autograd (the paper's loop).

    Repeated eigenvalues included. The loop's derivative has a component
    along i·v_j (its phase drifts); a phase-free cotangent does not see it.
    """
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(num_iters)
    a = hermitian_with_spectrum([4.0, 2.0, 2.0, 1.0], rng)
    w, v = _eig(xp, a)
    v_np = to_numpy(v)
    gl = rng.standard_normal(4)
    g_v = phase_free(v_np, random_complex(rng, a.shape))
    m = torch.tensor(a, requires_grad=True)
    deflated, loss = m, 0.0
    for j in range(4):
        x = torch.tensor(v_np[:, j : j + 1])
        for _ in range(num_iters + 1):
            x = deflated @ x
            x = x / torch.linalg.vector_norm(x)
        lam = (x.mH @ deflated @ x).real / (x.mH @ x).real
        deflated = deflated - deflated @ x @ x.mH
        loss = loss + gl[j] * lam.sum() + (x.conj() * torch.tensor(g_v[:, j : j + 1])).real.sum()
    loss.backward()
    expected = m.grad.numpy()
    expected = (expected + adjoint(expected)) / 2
    got = svdpi.eig_vjp(w, v, as_xp(xp, gl), as_xp(xp, g_v), num_iters=num_iters)
    assert_close(got, expected, rtol=1e-11)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_series_tend_to_the_analytic_gradient(xp, method):
    rng = np.random.default_rng(4)
    a = hermitian_with_spectrum([8.0, 4.0, 2.0, 1.0], rng)
    w, v = _eig(xp, a)
    g_v = as_xp(xp, phase_free(to_numpy(v), random_complex(rng, a.shape)))
    exact = svdpi.eig_vjp(w, v, None, g_v, method="analytic")
    got = svdpi.eig_vjp(w, v, None, g_v, method=method, num_iters=200)
    assert_close(got, exact, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_analytic_jvp_matches_central_differences_of_the_canonical_eigenvectors(xp, method):
    """The canonical eigenvectors are a function of a: differences along Hermitian directions.

    For "pi"/"taylor" the eigenvalue tangent is exact (dλ = diag(Vᴴ dA V)); the
    eigenvector tangent is the analytic one only for "analytic".
    """
    rng = np.random.default_rng(5)
    a = hermitian_with_spectrum([4.0, 2.5, 1.0, -0.5], rng, (2,))
    t = random_hermitian(rng, a.shape)
    w, v = _eig(xp, a, canonical=True)
    dw, dv = svdpi.eig_jvp(w, v, as_xp(xp, t), method=method, canonical=True)
    h = 1e-6
    plus, minus = svdpi.eig(a + h * t, canonical=True), svdpi.eig(a - h * t, canonical=True)
    assert_close(dw, (plus[0] - minus[0]) / (2 * h), rtol=1e-8)
    if method == "analytic":
        assert_close(dv, (plus[1] - minus[1]) / (2 * h), rtol=1e-8)
    # The canonical pivot entries stay real: their tangent is real.
    pivot = np.argmax(np.abs(to_numpy(v)), axis=-2)
    taken = np.take_along_axis(to_numpy(dv), pivot[..., None, :], axis=-2)
    np.testing.assert_allclose(np.imag(taken), 0.0, atol=1e-15 * np.abs(to_numpy(dv)).max())


def test_canonical_vjp_of_a_phase_dependent_loss_matches_central_differences(xp):
    """With canonical=True every loss of the eigenvectors has a gradient, Re Σ V included."""
    rng = np.random.default_rng(6)
    a = hermitian_with_spectrum([3.0, 2.0, 1.0, 0.25], rng)
    g_v = random_complex(rng, a.shape)  # not phase-free
    w, v = _eig(xp, a, canonical=True)
    grad = to_numpy(svdpi.eig_vjp(w, v, None, as_xp(xp, g_v), method="analytic", canonical=True))

    def loss(x):
        return inner(g_v, svdpi.eig(x, canonical=True)[1])

    for direction in (random_hermitian(rng, a.shape), 1j * (g_v - adjoint(g_v))):
        expected = (loss(a + 1e-6 * direction) - loss(a - 1e-6 * direction)) / 2e-6
        assert inner(grad, direction) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("canonical", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_jvp_is_the_transpose_of_the_vjp(xp, method, canonical):
    rng = np.random.default_rng(7)
    spectrum = [3.0, 2.0, 1.5, 0.5] if method == "analytic" else [3.0, 1.0, 1.0, 0.5]
    a = hermitian_with_spectrum(spectrum, rng, (2,))
    w, v = _eig(xp, a, canonical=canonical)
    g_v = random_complex(rng, a.shape)
    if not canonical:
        g_v = phase_free(to_numpy(v), g_v)
    gl = rng.standard_normal(w.shape)
    t = random_complex(rng, a.shape)
    options = {"method": method, "num_iters": 5, "canonical": canonical}
    grad = svdpi.eig_vjp(w, v, as_xp(xp, gl), as_xp(xp, g_v), **options)
    dw, dv = svdpi.eig_jvp(w, v, as_xp(xp, t), **options)
    left = inner(to_numpy(grad), t)
    right = float(np.sum(gl * to_numpy(dw))) + inner(g_v, to_numpy(dv))
    assert abs(left - right) <= 1e-12 * (abs(left) + abs(right))


def test_gradient_is_hermitian_and_real_data_as_complex_gives_the_real_result(xp):
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a = (q * np.array([4.0, 3.0, 3.0, 1.0, 0.2])) @ q.T
    g_v, gl, t = rng.standard_normal((5, 5)), rng.standard_normal(5), rng.standard_normal((5, 5))
    for method in METHODS[:2]:
        w, v = _eig(xp, a)
        real = svdpi.eig_vjp(w, v, as_xp(xp, gl), as_xp(xp, g_v), method=method)
        real_jvp = svdpi.eig_jvp(w, v, as_xp(xp, t), method=method)
        v_c = xp.astype(v, xp.complex128)
        cx = svdpi.eig_vjp(w, v_c, as_xp(xp, gl), as_xp(xp, g_v + 0j), method=method)
        cx_jvp = svdpi.eig_jvp(w, v_c, as_xp(xp, t + 0j), method=method)
        assert_close(cx, to_numpy(real).astype(complex), rtol=1e-14)
        assert_close(cx_jvp[1], to_numpy(real_jvp[1]).astype(complex), rtol=1e-14)
        assert_close(cx_jvp[0], real_jvp[0], rtol=1e-14)
    grad = to_numpy(cx)
    np.testing.assert_allclose(grad, adjoint(grad), atol=1e-15)


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize("spectrum", [[2.0, 2.0, 2.0, 1.0], [3.0, 1.0, 1.0, 0.0]])
def test_degenerate_spectra_give_finite_bounded_gradients(xp, spectrum, method):
    rng = np.random.default_rng(9)
    a = hermitian_with_spectrum(spectrum, rng)
    w, v = _eig(xp, a)
    g_v = phase_free(to_numpy(v), random_complex(rng, a.shape))
    grad = to_numpy(svdpi.eig_vjp(w, v, None, as_xp(xp, g_v), method=method))
    assert np.isfinite(grad).all()
    # |A_jm| <= (num_iters + 1) / floor, the bound of the real case.
    floor = max(4 * np.finfo(float).eps * max(spectrum), min(s for s in spectrum if s > 0))
    assert np.abs(grad).max() <= 20 / floor * np.abs(g_v).sum()
    _, dv = svdpi.eig_jvp(w, v, as_xp(xp, random_hermitian(rng, a.shape)), method=method)
    assert np.isfinite(to_numpy(dv)).all()


def _exact_vjp(lam, g, num_iters):
    """The "pi" herm(Aᵀ ∘ g) for V = I, in exact rational arithmetic (huge num_iters)."""
    n = len(lam)
    lam = [Fraction(float(x)) for x in lam]

    def series(small, big, terms):
        if small == big:
            return Fraction(terms)
        assert terms * np.log(float(big / small)) > 200  # r^terms < 1e-87
        return 1 / (1 - small / big)

    def a(j, m):
        if j < m:
            return series(lam[m], lam[j], num_iters + 1) / lam[j]
        return -series(lam[j], lam[m], num_iters) / lam[m]

    gr = [[Fraction(float(x)) for x in row] for row in np.real(g)]
    gi = [[Fraction(float(x)) for x in row] for row in np.imag(g)]
    real = [
        [0 if i == j else (a(j, i) * gr[i][j] + a(i, j) * gr[j][i]) / 2 for j in range(n)]
        for i in range(n)
    ]
    imag = [
        [0 if i == j else (a(j, i) * gi[i][j] - a(i, j) * gi[j][i]) / 2 for j in range(n)]
        for i in range(n)
    ]
    return np.array(real, dtype=float) + 1j * np.array(imag, dtype=float)


@pytest.mark.parametrize("num_iters", [10**6, 2**24, 2**53])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_equal_eigenvalues_with_a_huge_num_iters(xp, num_iters, dtype):
    """The imaginary part keeps r^T too: its antisymmetrised product is exact.

    An antisymmetric imaginary part of Vᴴ ḡV at equal eigenvalues gives
    ((T + 1) − T) / 2λ per entry: P − Pᵀ would lose it once T + 1 rounds to T.
    """
    rng = np.random.default_rng(10)
    g = rng.standard_normal((3, 3)) + 1j * np.array([[0, 1, 2], [-1, 0, 1.5], [-2, -1.5, 0]])
    a = xp.asarray(np.diag([3.0, 1.0, 1.0]), dtype=getattr(xp, dtype))
    w, v = svdpi.eig(a)
    np.testing.assert_array_equal(np.abs(to_numpy(v)), np.eye(3))  # V = I up to signs
    v = xp.asarray(np.eye(3), dtype=getattr(xp, dtype))
    got = to_numpy(svdpi.eig_vjp(w, v, None, xp.asarray(g, dtype=v.dtype), num_iters=num_iters))
    expected = _exact_vjp(to_numpy(w), g.astype(dtype), num_iters)
    assert expected[1, 2].imag == pytest.approx(0.5 * 1.5, rel=1e-15)  # the r^T term
    eps = np.finfo(dtype).eps
    for part in (np.real, np.imag):  # the real part is of order num_iters: apart
        scale = np.abs(part(expected)).max()
        np.testing.assert_allclose(part(got), part(expected), rtol=8 * eps, atol=8 * eps * scale)


def test_complex64_agrees_with_complex128(xp):
    rng = np.random.default_rng(11)
    a = hermitian_with_spectrum([3.0, 2.0, 1.0, 0.5], rng, (2,))
    g_v = random_complex(rng, a.shape)
    for method in METHODS:
        results = []
        for single in (False, True):
            w, v = svdpi.eig(as_xp(xp, a, single=single), canonical=True)
            gv = as_xp(xp, g_v, single=single)
            results.append(to_numpy(svdpi.eig_vjp(w, v, None, gv, method=method, canonical=True)))
        assert_close(results[1].astype(complex), results[0], rtol=2e-4, err_msg=method)


# ------------------------------------------------------------------ the phase


def test_a_phase_dependent_loss_raises_like_torch(xp):
    rng = np.random.default_rng(12)
    a = hermitian_with_spectrum([3.0, 2.0, 1.0], rng, (2,))
    w, v = _eig(xp, a)
    g_v = xp.ones_like(v)  # d(Re Σ V)/dV: Im(v_jᴴ 1) ≠ 0 for a random V
    if is_lazy_array(v):
        # Values cannot be read (JAX): the gradient of those matrices is NaN instead.
        assert np.isnan(to_numpy(svdpi.eig_vjp(w, v, None, g_v))).all()
        return
    with pytest.raises(ValueError, match="arbitrary phase"):
        svdpi.eig_vjp(w, v, None, g_v)
    # The same loss of the canonical eigenvectors has a gradient.
    wc, vc = _eig(xp, a, canonical=True)
    assert np.isfinite(to_numpy(svdpi.eig_vjp(wc, vc, None, g_v, canonical=True))).all()
    # Round-off in a phase-free cotangent passes; a batch with one bad matrix raises.
    free = phase_free(to_numpy(v), to_numpy(g_v))
    assert np.isfinite(to_numpy(svdpi.eig_vjp(w, v, None, as_xp(xp, free)))).all()
    mixed = free.copy()
    mixed[1] = to_numpy(g_v)[1]
    with pytest.raises(ValueError, match="arbitrary phase"):
        svdpi.eig_vjp(w, v, None, as_xp(xp, mixed))


def test_phase_check_matches_torch_on_the_same_loss():
    torch = pytest.importorskip("torch")
    a = hermitian_with_spectrum([3.0, 2.0, 1.0], np.random.default_rng(13))
    leaf = torch.tensor(a, requires_grad=True)
    _, vt = torch.linalg.eigh(leaf)
    with pytest.raises(RuntimeError, match="e\\^\\{i phi\\}"):
        vt.real.sum().backward()  # torch's own error, for the same kind of loss
    w, v = svdpi.eig(a)
    with pytest.raises(ValueError, match="phase"):
        svdpi.eig_vjp(w, v, None, np.ones_like(v))


def test_the_private_vjp_with_the_check_off_is_the_exact_transpose():
    """phase="off" drops the phase-dependent part: the transpose of the JVP for any cotangent."""
    import array_api_compat.numpy as xp

    from svdpi.adapter import vjp_from_projected

    rng = np.random.default_rng(14)
    a = hermitian_with_spectrum([3.0, 2.0, 1.0, 0.5], rng)
    w, v = svdpi.eig(a)
    g_v, t = random_complex(rng, a.shape), random_complex(rng, a.shape)
    grad = vjp_from_projected(
        w, v, None, adjoint(v) @ g_v, method="pi", num_iters=19, xp=xp, phase="off"
    )
    _, dv = svdpi.eig_jvp(w, v, t)
    assert inner(grad, t) == pytest.approx(inner(g_v, dv), rel=1e-12)
    nan = vjp_from_projected(
        w, v, None, adjoint(v) @ g_v, method="pi", num_iters=19, xp=xp, phase="nan"
    )
    assert np.isnan(nan).all()


# ----------------------------------------------------------- canonical phase


def test_canonical_eigenvectors_are_the_same_whatever_phase_the_solver_picked(xp):
    """Reproducible: eigenvectors multiplied by any phases canonicalise to the same matrix."""
    from svdpi._complex import canonical_columns

    rng = np.random.default_rng(15)
    a = hermitian_with_spectrum([4.0, 3.0, 2.0, 1.0], rng, (3,))
    _, v = _eig(xp, a, canonical=True)
    v = to_numpy(v)
    pivot = np.argmax(np.abs(v), axis=-2)
    taken = np.take_along_axis(v, pivot[..., None, :], axis=-2)
    assert (np.imag(taken) == 0).all()
    assert (np.real(taken) > 0).all()
    phases = np.exp(1j * rng.uniform(0, 2 * np.pi, (3, 1, 4)))
    again, _ = canonical_columns(as_xp(xp, v * phases), xp)
    assert_close(again, v, rtol=1e-15)
    # Another library's solver (NumPy's LAPACK), which picked its own phases.
    _, v_ref = svdpi.eig(a, canonical=True)
    assert_close(v, v_ref, rtol=1e-12)


def test_canonical_is_a_sign_convention_for_real_input(xp):
    from svdpi._complex import canonical_columns

    rng = np.random.default_rng(16)
    q, _ = np.linalg.qr(rng.standard_normal((2, 4, 4)))
    a = (q * np.array([4.0, 3.0, 2.0, 1.0])) @ np.swapaxes(q, -1, -2)
    w, v = svdpi.eig(as_xp(xp, a), canonical=True)
    assert v.dtype == xp.float64
    v = to_numpy(v)
    taken = np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], axis=-2)
    assert (taken > 0).all()
    flipped, _ = canonical_columns(as_xp(xp, -v), xp)
    np.testing.assert_array_equal(to_numpy(flipped), v)
    # The sign is locally constant: the derivatives are those without canonical.
    g_v, t = rng.standard_normal(a.shape), rng.standard_normal(a.shape)
    wx, vx = as_xp(xp, to_numpy(w)), as_xp(xp, v)
    for canonical in (True,):
        assert_close(
            svdpi.eig_vjp(wx, vx, None, as_xp(xp, g_v), canonical=canonical),
            svdpi.eig_vjp(wx, vx, None, as_xp(xp, g_v)),
            rtol=0,
        )
        assert_close(
            svdpi.eig_jvp(wx, vx, as_xp(xp, t), canonical=canonical)[1],
            svdpi.eig_jvp(wx, vx, as_xp(xp, t))[1],
            rtol=0,
        )
    # And match central differences of the canonical eigenvectors.
    _, dv = svdpi.eig_jvp(
        wx, vx, as_xp(xp, t + np.swapaxes(t, -1, -2)), method="analytic", canonical=True
    )
    s = t + np.swapaxes(t, -1, -2)
    expected = (
        svdpi.eig(a + 1e-6 * s, canonical=True)[1] - svdpi.eig(a - 1e-6 * s, canonical=True)[1]
    ) / 2e-6
    assert_close(dv, expected, rtol=1e-8)


def test_canonical_eigenvectors_agree_across_libraries():
    """NumPy, PyTorch and JAX (x64) solvers pick different phases; canonical removes them."""
    rng = np.random.default_rng(17)
    a = hermitian_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5], rng, (4,))
    reference = svdpi.eig(a, canonical=True).eigenvectors
    raw = [svdpi.eig(a).eigenvectors]
    torch = pytest.importorskip("torch")
    result = svdpi.eig(torch.tensor(a), canonical=True).eigenvectors
    raw.append(svdpi.eig(torch.tensor(a)).eigenvectors.numpy())
    assert_close(result, reference, rtol=1e-12)
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        import jax.numpy as jnp

        assert_close(svdpi.eig(jnp.asarray(a), canonical=True).eigenvectors, reference, rtol=1e-12)


# ------------------------------------------------------------------- errors


def test_complex_where_it_makes_no_sense_is_refused():
    from svdpi.adapter import grouped_covariance

    a = hermitian_with_spectrum([3.0, 2.0, 1.0], np.random.default_rng(18))
    w, v = svdpi.eig(a)
    with pytest.raises(TypeError, match="eigenvalues has complex dtype"):
        svdpi.eig_vjp(w + 0j, v, None, v)
    with pytest.raises(TypeError, match="grad_eigenvalues must have dtype float64"):
        svdpi.eig_vjp(w, v, w + 0j, None)
    with pytest.raises(TypeError, match="grad_eigenvectors must have dtype complex128"):
        svdpi.eig_vjp(w, v, None, v.real)
    with pytest.raises(TypeError, match="tangent_a must have dtype complex128"):
        svdpi.eig_jvp(w, v, a.real)
    with pytest.raises(TypeError, match="real dtype float64 of the eigenvectors"):
        svdpi.eig_vjp(w.astype(np.float32), v, None, None)
    with pytest.raises(TypeError, match="grad_eigenvectors must have dtype float64"):
        svdpi.eig_vjp(w, v.real, None, v)
    with pytest.raises(TypeError, match="eigenvalues has complex dtype"):
        svdpi.truncation_mask(w + 0j, max_energy=0.5)
    with pytest.raises(TypeError, match="x has complex dtype"):
        grouped_covariance(np.ones((2, 4, 3), complex), num_groups=2)
    with pytest.raises(TypeError, match="canonical must be a bool"):
        svdpi.eig(a, canonical=1)
    with pytest.raises(TypeError, match="canonical must be a bool"):
        svdpi.eig_vjp(w, v, None, None, canonical="yes")
    with pytest.raises(TypeError, match=r"a must have a floating dtype .*complex128"):
        svdpi.eig(np.eye(2, dtype=np.int64))
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning, match="ComplexHalf"):  # torch's own, on creation
        half = torch.zeros(2, 2, dtype=torch.complex32)
    with pytest.raises(TypeError, match="half precision"):
        svdpi.eig(half)


def test_meta_tensors_give_shapes_and_never_read_values():
    """PyTorch's meta device has no values: no finiteness or phase check, meta results."""
    torch = pytest.importorskip("torch")
    a = torch.zeros(2, 3, 3, dtype=torch.complex128, device="meta")
    w, v = svdpi.eig(a, canonical=True)
    assert (w.device.type, w.dtype, v.dtype) == ("meta", torch.float64, torch.complex128)
    for canonical in (False, True):
        grad = svdpi.eig_vjp(w, v, w, v, canonical=canonical)
        dw, dv = svdpi.eig_jvp(w, v, a, canonical=canonical)
        for x, shape in ((grad, (2, 3, 3)), (dw, (2, 3)), (dv, (2, 3, 3))):
            assert x.device.type == "meta"
            assert tuple(x.shape) == shape
    u, s, vh = svdpi.svd(torch.zeros(4, 3, dtype=torch.complex64, device="meta"))
    assert svdpi.svd_vjp(u, s, vh, u, None, vh).device.type == "meta"
