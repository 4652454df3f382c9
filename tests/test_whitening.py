"""ZCA whitening / PCA projector matrices and their VJPs."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, random_spd, spd_with_spectrum, to_numpy

import svdpi


def _covariance(rng, d=4, samples=400):
    x = rng.standard_normal((d, samples)) * np.linspace(0.5, 3.0, d)[:, None]
    x = x - x.mean(axis=1, keepdims=True)
    return x, x @ x.T / samples


def test_zca_whitens_and_is_symmetric(xp):
    rng = np.random.default_rng(0)
    x, cov = _covariance(rng)
    w, v = svdpi.eig(from_numpy(xp, cov))
    whitening = to_numpy(svdpi.zca_whitening_matrix(w, v))
    y = whitening @ x
    np.testing.assert_allclose(y @ y.T / x.shape[1], np.eye(4), atol=1e-10)
    np.testing.assert_allclose(whitening, whitening.T, atol=1e-12)
    # ZCA is the whitening closest to the identity: the symmetric inverse square root.
    np.testing.assert_allclose(whitening @ whitening @ cov, np.eye(4), atol=1e-10)


def test_zca_mask_leaves_out_eigenpairs(xp):
    rng = np.random.default_rng(1)
    _, cov = _covariance(rng)
    w, v = svdpi.eig(from_numpy(xp, cov))
    mask = svdpi.truncation_mask(w, min_eigenvalue=float(to_numpy(w)[1]) * 0.999)
    assert to_numpy(mask).tolist() == [True, True, False, False]
    whitening = to_numpy(svdpi.zca_whitening_matrix(w, v, mask=mask))
    v_np, w_np = to_numpy(v), to_numpy(w)
    expected = v_np[:, :2] @ np.diag(w_np[:2] ** -0.5) @ v_np[:, :2].T
    np.testing.assert_allclose(whitening, expected, atol=1e-12)


def _loss_through(matrix_fn, cov, c):
    return np.sum(c * matrix_fn(*svdpi.eig(cov)))


@pytest.mark.parametrize(
    ("kind", "method", "num_iters"),
    [("zca", "analytic", 19), ("zca", "pi", 300), ("pca", "analytic", 19), ("pca", "pi", 300)],
)
def test_vjp_matches_finite_differences(kind, method, num_iters):
    """On a separated spectrum "analytic" (and "pi" with many steps) is the true gradient."""
    rng = np.random.default_rng(2)
    cov = spd_with_spectrum([4.0, 2.0, 1.0, 0.5], rng)
    c = rng.standard_normal((4, 4))
    w, v = svdpi.eig(cov)
    if kind == "zca":
        g = svdpi.zca_whitening_matrix_vjp(w, v, c, method=method, num_iters=num_iters)

        def matrix_fn(w, v):
            return svdpi.zca_whitening_matrix(w, v)
    else:
        g = svdpi.pca_projector_vjp(w, v, c, n_components=2, method=method, num_iters=num_iters)

        def matrix_fn(w, v):
            return svdpi.pca_projector(v, n_components=2)

    t = rng.standard_normal((4, 4))
    t = (t + t.T) / 2
    h = 1e-6
    fd = (_loss_through(matrix_fn, cov + h * t, c) - _loss_through(matrix_fn, cov - h * t, c)) / (
        2 * h
    )
    assert np.sum(g * t) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_vjps_match_torch_autograd_through_eig(xp, method, use_mask):
    """The hand-written chain rule equals autograd through svdpi.torch.eig, batched."""
    torch = pytest.importorskip("torch")
    import svdpi.torch

    rng = np.random.default_rng(3)
    cov = random_spd(5, rng, batch=(3,))
    g_w = rng.standard_normal((3, 5, 5))
    g_p = rng.standard_normal((3, 5, 5))
    w, v = svdpi.eig(from_numpy(xp, cov))
    mask = svdpi.truncation_mask(w, max_energy=0.8) if use_mask else None
    got_zca = svdpi.zca_whitening_matrix_vjp(
        w, v, from_numpy(xp, g_w), mask=mask, method=method, num_iters=7
    )
    got_pca = svdpi.pca_projector_vjp(
        w, v, from_numpy(xp, g_p), n_components=3, mask=mask, method=method, num_iters=7
    )

    cov_t = torch.from_numpy(cov).requires_grad_(True)
    wt, vt = svdpi.torch.eig(cov_t, method=method, num_iters=7)
    scale = wt.rsqrt()
    keep = torch.ones_like(wt, dtype=torch.bool)
    if use_mask:
        keep = torch.from_numpy(to_numpy(mask))
    zca = (vt * torch.where(keep, scale, 0.0).unsqueeze(-2)) @ vt.mT
    top = (torch.arange(5) < 3) & keep
    pca = (vt * top.to(vt.dtype).unsqueeze(-2)) @ vt.mT
    loss = (zca * torch.from_numpy(g_w)).sum() + (pca * torch.from_numpy(g_p)).sum()
    (expected,) = torch.autograd.grad(loss, cov_t)
    expected = (expected + expected.mT) / 2
    assert_close(to_numpy(got_zca) + to_numpy(got_pca), expected, rtol=1e-10)


def test_truncation_rules():
    w = np.array([6.0, 3.0, 1.0, 0.0])
    assert svdpi.truncation_mask(w).tolist() == [True] * 4
    assert svdpi.truncation_mask(w, min_eigenvalue=0.5).tolist() == [True, True, True, False]
    # Energies 0.6, 0.9, 1.0, 1.0. "preceding": the pair crossing 0.9 is kept.
    assert svdpi.truncation_mask(w, max_energy=0.9).tolist() == [True, True, False, False]
    assert svdpi.truncation_mask(w, max_energy=0.95).tolist() == [True, True, True, False]
    # "inclusive" (the paper's code) drops the last pair of a full-rank spectrum too.
    full = np.array([4.0, 3.0, 2.0, 1.0])
    assert svdpi.truncation_mask(full, max_energy=1 - 1e-5).tolist() == [True] * 4
    assert svdpi.truncation_mask(full, max_energy=1 - 1e-5, energy_rule="inclusive").tolist() == [
        True,
        True,
        True,
        False,
    ]


def test_truncation_mask_is_batched(xp):
    w = from_numpy(xp, np.array([[4.0, 1e-9], [2.0, 1.0]]))
    mask = svdpi.truncation_mask(w, min_eigenvalue=1e-5, max_energy=0.99)
    assert to_numpy(mask).tolist() == [[True, False], [True, True]]


def test_singular_covariance_gives_finite_whitening(xp):
    rng = np.random.default_rng(4)
    cov = from_numpy(xp, spd_with_spectrum([2.0, 1.0, 0.0], rng))
    w, v = svdpi.eig(cov)
    whitening = to_numpy(svdpi.zca_whitening_matrix(w, v))
    g = to_numpy(svdpi.zca_whitening_matrix_vjp(w, v, from_numpy(xp, np.ones((3, 3)))))
    assert np.all(np.isfinite(whitening))
    assert np.all(np.isfinite(g))
