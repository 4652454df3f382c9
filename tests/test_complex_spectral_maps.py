"""Spectral maps ``F(A) = V diag(f(λ)) Vᴴ`` of complex Hermitian matrices (issue 17).

Oracles: ``V f(Λ) Vᴴ`` from numpy.linalg.eigh, autograd (first and second
order) through complex ``torch.linalg.eigh`` on separated spectra, central
differences along Hermitian directions, a 60-digit difference through
mpmath's Hermitian eigensolver near a tie, and the real code on real data.
"""

from __future__ import annotations

import numpy as np
import pytest
from _complex_helpers import (
    adjoint,
    as_xp,
    hermitian_with_spectrum,
    inner,
    random_complex,
    random_hermitian,
)
from _helpers import assert_close, to_numpy

import svdpi
from svdpi.functions import Exp, Log, Power

FUNCTIONS = {
    "sqrt": (Power(0.5), np.sqrt),
    "inv_sqrt": (Power(-0.5), lambda x: x**-0.5),
    "log": (Log(), np.log),
    "exp": (Exp(), np.exp),
}
METHODS = ("exact", "pi", "taylor", "analytic")


def _reference(a, f):
    w, v = np.linalg.eigh(a)
    return (v * f(w)[..., None, :]) @ adjoint(v)


def _eig(xp, a):
    return svdpi.eig(as_xp(xp, a))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_forward_matches_numpy_eigh(xp, name):
    fn, f = FUNCTIONS[name]
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], np.random.default_rng(0), (2,))
    result = svdpi.spectral_map(*_eig(xp, a), fn)
    assert result.dtype == xp.complex128
    assert_close(result, _reference(a, f), rtol=1e-13)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_exact_vjp_equals_torch_autograd_through_eigh(name):
    """L = Re Σ G ∘ F(A): PyTorch's .grad is the VJP of conj(G) (the maths note's convention)."""
    torch = pytest.importorskip("torch")
    fn, _ = FUNCTIONS[name]
    f_torch = {"sqrt": torch.sqrt, "inv_sqrt": torch.rsqrt, "log": torch.log, "exp": torch.exp}
    rng = np.random.default_rng(1)
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], rng, (2,))
    g = random_complex(rng, a.shape)
    leaf = torch.tensor(a, requires_grad=True)
    w_t, v_t = torch.linalg.eigh((leaf + leaf.mH) / 2)
    f_a = (v_t * f_torch[name](w_t)[..., None, :].to(v_t.dtype)) @ v_t.mH
    (torch.tensor(g) * f_a).real.sum().backward()
    w, v = svdpi.eig(a)
    for method in ("exact", "analytic"):
        got = svdpi.spectral_map_vjp(w, v, fn, np.conj(g), method=method)
        assert_close(got, leaf.grad.numpy(), rtol=1e-12, err_msg=method)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_exact_jvp_matches_central_differences_along_hermitian_directions(xp, name, masked):
    fn, _ = FUNCTIONS[name]
    rng = np.random.default_rng(2)
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], rng)
    t = random_hermitian(rng, a.shape)
    mask = np.array([True, True, True, False]) if masked else None
    mask_x = None if mask is None else xp.asarray(mask)

    def forward(x):
        return svdpi.spectral_map(*svdpi.eig(x), fn, mask=mask)

    expected = (forward(a + 1e-6 * t) - forward(a - 1e-6 * t)) / 2e-6
    w, v = _eig(xp, a)
    got = svdpi.spectral_map_jvp(w, v, fn, as_xp(xp, t), mask=mask_x)
    assert_close(got, expected, rtol=1e-8)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_series_tend_to_exact_on_a_separated_spectrum(xp, method):
    rng = np.random.default_rng(3)
    a = hermitian_with_spectrum([8.0, 4.0, 2.0, 1.0], rng)
    w, v = _eig(xp, a)
    g = as_xp(xp, random_complex(rng, a.shape))
    exact = svdpi.spectral_map_vjp(w, v, Power(-0.5), g)
    assert_close(
        svdpi.spectral_map_vjp(w, v, Power(-0.5), g, method="analytic"), exact, rtol=1e-12
    )
    got = svdpi.spectral_map_vjp(w, v, Power(-0.5), g, method=method, num_iters=200)
    assert_close(got, exact, rtol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_vjp_is_the_transpose_of_the_jvp(xp, method, masked):
    rng = np.random.default_rng(4)
    spectrum = [3.0, 2.0, 1.5, 0.5] if method == "analytic" else [3.0, 1.0, 1.0, 0.5]
    a = hermitian_with_spectrum(spectrum, rng, (2,))
    w, v = _eig(xp, a)
    mask = xp.asarray(np.array([[True, True, True, False]] * 2)) if masked else None
    g, t = random_complex(rng, a.shape), random_complex(rng, a.shape)
    options = {"mask": mask, "method": method, "num_iters": 5}
    vjp = to_numpy(svdpi.spectral_map_vjp(w, v, Log(), as_xp(xp, g), **options))
    jvp = to_numpy(svdpi.spectral_map_jvp(w, v, Log(), as_xp(xp, t), **options))
    assert inner(vjp, t) == pytest.approx(inner(g, jvp), rel=1e-12)
    np.testing.assert_allclose(vjp, adjoint(vjp), atol=1e-14 * np.abs(vjp).max())


def test_exact_is_basis_free_at_repeated_eigenvalues(xp):
    """A unitary rotation inside a repeated eigenspace changes nothing ("pi": finite)."""
    rng = np.random.default_rng(5)
    w = np.array([3.0, 1.0, 1.0, 1.0, 0.5])
    q = hermitian_with_spectrum(w, rng)  # for its eigenvectors
    _, v = np.linalg.eigh(q)
    v = v[:, ::-1]
    u, _ = np.linalg.qr(random_complex(rng, (3, 3)))
    rotated = v.copy()
    rotated[:, 1:4] = v[:, 1:4] @ u
    g = random_complex(rng, (5, 5))
    results = []
    for vectors in (v, rotated):
        args = (as_xp(xp, w), as_xp(xp, vectors), Power(-0.5), as_xp(xp, g))
        results.append(to_numpy(svdpi.spectral_map_vjp(*args)))
        for method in ("pi", "taylor"):
            assert np.isfinite(to_numpy(svdpi.spectral_map_vjp(*args, method=method))).all()
    assert_close(results[1], results[0], rtol=1e-14)


# -------------------------------------------------------------- second order


@pytest.mark.parametrize("fn", [Power(3.0), Power(-1.0), Log()], ids=repr)
def test_hvp_is_the_derivative_of_the_exact_vjp(xp, fn):
    rng = np.random.default_rng(6)
    a = hermitian_with_spectrum([4.0, 2.0, 2.0, 0.5], rng)
    g, t = random_hermitian(rng, a.shape), random_hermitian(rng, a.shape)

    def vjp(x):
        w, v = svdpi.eig(x)
        return svdpi.spectral_map_vjp(w, v, fn, g)

    expected = (vjp(a + 1e-6 * t) - vjp(a - 1e-6 * t)) / 2e-6
    w, v = _eig(xp, a)
    got = svdpi.spectral_map_hvp(w, v, fn, as_xp(xp, g), as_xp(xp, t))
    assert_close(got, expected, rtol=1e-7)
    swapped = svdpi.spectral_map_hvp(w, v, fn, as_xp(xp, t), as_xp(xp, g))
    assert_close(swapped, to_numpy(got), rtol=1e-12)


def test_hvp_equals_double_autograd_through_complex_eigh():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], rng, (2,))
    g, t = random_complex(rng, a.shape), random_hermitian(rng, a.shape)
    leaf = torch.tensor(a, requires_grad=True)
    w_t, v_t = torch.linalg.eigh((leaf + leaf.mH) / 2)
    f_a = (v_t * (1.0 / w_t)[..., None, :].to(v_t.dtype)) @ v_t.mH
    loss = (torch.tensor(g) * f_a).real.sum()
    (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
    # d/ds of the gradient along t: the derivative of Re<grad, t> = Re Σ conj(grad) t.
    (expected,) = torch.autograd.grad((grad.conj() * torch.tensor(t)).real.sum(), leaf)
    w, v = svdpi.eig(a)
    got = svdpi.spectral_map_hvp(w, v, Power(-1.0), np.conj(g), t)
    assert_close(got, expected.numpy(), rtol=1e-10)


# ------------------------------------------------------------------ wrappers


def test_matrix_functions_whitening_and_projector(xp):
    rng = np.random.default_rng(8)
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], rng, (2,))
    w, v = _eig(xp, a)
    whitening = to_numpy(svdpi.zca_whitening_matrix(w, v))
    assert_close(whitening, to_numpy(svdpi.matrix_power(w, v, -0.5)), rtol=1e-15)
    assert_close(whitening @ a @ whitening, np.broadcast_to(np.eye(4), a.shape), atol=1e-13)
    log = to_numpy(svdpi.matrix_log(w, v))
    assert_close(log, _reference(a, np.log), rtol=1e-13)
    projector = to_numpy(svdpi.pca_projector(v, n_components=2))
    assert_close(projector @ projector, projector, atol=1e-14)
    assert_close(projector, adjoint(projector), atol=1e-15)
    g, t = random_complex(rng, a.shape), random_hermitian(rng, a.shape)
    # The hand-written layers' VJPs ("pi") and the projector's exact one.
    for vjp in (
        svdpi.zca_whitening_matrix_vjp(w, v, as_xp(xp, g)),
        svdpi.matrix_power_vjp(w, v, 2.0, as_xp(xp, g)),
        svdpi.matrix_log_vjp(w, v, as_xp(xp, g), method="pi"),
        svdpi.pca_projector_vjp(w, v, as_xp(xp, g), n_components=2),
    ):
        assert vjp.dtype == xp.complex128
        assert np.isfinite(to_numpy(vjp)).all()

    def projector_of(x):
        return svdpi.pca_projector(svdpi.eig(x)[1], n_components=2)

    expected = (projector_of(a + 1e-6 * t) - projector_of(a - 1e-6 * t)) / 2e-6
    grad = to_numpy(svdpi.pca_projector_vjp(w, v, as_xp(xp, g), n_components=2, method="exact"))
    assert inner(grad, t) == pytest.approx(inner(g, expected), rel=1e-7)
    dlog = svdpi.matrix_log_jvp(w, v, as_xp(xp, t))
    expected = (_reference(a + 1e-6 * t, np.log) - _reference(a - 1e-6 * t, np.log)) / 2e-6
    assert_close(dlog, expected, rtol=1e-8)


def test_real_data_as_complex_gives_the_real_result(xp):
    rng = np.random.default_rng(9)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = (q * np.array([4.0, 2.0, 2.0, 0.5])) @ q.T
    w, v = _eig(xp, a)
    v_c = xp.astype(v, xp.complex128)
    g = rng.standard_normal((4, 4))
    for method in METHODS:
        real = to_numpy(svdpi.spectral_map_vjp(w, v, Log(), as_xp(xp, g), method=method))
        cx = svdpi.spectral_map_vjp(w, v_c, Log(), as_xp(xp, g + 0j), method=method)
        assert_close(cx, real.astype(complex), rtol=1e-14, err_msg=method)
    real = to_numpy(svdpi.spectral_map_hvp(w, v, Log(), as_xp(xp, g), as_xp(xp, g.T)))
    cx = svdpi.spectral_map_hvp(w, v_c, Log(), as_xp(xp, g + 0j), as_xp(xp, g.T + 0j))
    assert_close(cx, real.astype(complex), rtol=1e-14)


def test_complex64_agrees_with_complex128(xp):
    rng = np.random.default_rng(10)
    a = hermitian_with_spectrum([4.0, 2.0, 1.0, 0.5], rng)
    g = random_complex(rng, a.shape)
    results = []
    for single in (False, True):
        w, v = svdpi.eig(as_xp(xp, a, single=single))
        results.append(to_numpy(svdpi.spectral_map_vjp(w, v, Power(-0.5), as_xp(xp, g, single))))
    assert results[1].dtype == np.complex64
    assert_close(results[1].astype(complex), results[0], rtol=1e-5)


def test_close_eigenvalues_against_a_high_precision_difference():
    """A gap of 1e-9: float64 differences are useless there, 60-digit ones are not."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(11)
    a = hermitian_with_spectrum([2.0, 1.0 + 1e-9, 1.0, 0.5], rng)
    t = random_hermitian(rng, a.shape)
    w, v = svdpi.eig(a)
    with mpmath.workdps(60):
        am, tm = mpmath.matrix(a.tolist()), mpmath.matrix(t.tolist())
        h = mpmath.mpf("1e-25")

        def value(x, f):
            e, q = mpmath.eighe(x)
            return q * mpmath.diag([f(x) for x in e]) * q.transpose_conj()

        for f_mp, fn in ((mpmath.sqrt, Power(0.5)), (mpmath.log, Log()), (mpmath.exp, Exp())):
            difference = (value(am + h * tm, f_mp) - value(am - h * tm, f_mp)) / (2 * h)
            expected = np.array(difference.tolist(), dtype=complex)
            assert_close(
                svdpi.spectral_map_jvp(w, v, fn, t), expected, rtol=1e-12, err_msg=repr(fn)
            )
