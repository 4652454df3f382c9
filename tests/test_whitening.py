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


# The spectrum of issue 18 (a covariance of real images, float32) and its cut.
ISSUE_18_SPECTRUM = [
    3.3348064, 0.96776694, 0.24185362, 0.05995977, 0.036464404, 0.023448948, 0.0063433894,
    0.0054093115, 0.002350622, 0.0013302673, 0.00048606767, 0.00019676512, 0.00010180868,
    5.992971e-05, 5.360129e-05, 1.660959e-05,
]  # fmt: skip


@pytest.mark.parametrize("kept", [12, 13, 14, 15])
def test_masked_exact_whitening_and_projector_in_float32_at_close_cuts(xp, kept):
    """Issue 18: the exact gradient of a truncated whitening map was NaN in float32.

    0.2 counted eigenvalues closer than n · eps · max|λ| (6.36e-6 here) as
    equal and returned NaN, while the gap at the cut 14 | 15 is 6.33e-6:
    distinct eigenvalues, a finite derivative (about 2e7). Every cut here
    has one, and float32 agrees with float64 on the same eigenpairs.
    """
    w64 = np.array(ISSUE_18_SPECTRUM, dtype=np.float32).astype(np.float64)
    v64 = np.linalg.qr(np.random.default_rng(kept).standard_normal((16, 16)))[0]
    g64 = np.random.default_rng(0).standard_normal((16, 16))
    keep = np.arange(16) < kept
    results = {}
    for dtype in (xp.float32, xp.float64):
        w, v, g = (from_numpy(xp, x, dtype) for x in (w64, v64, g64))
        mask = from_numpy(xp, keep, xp.bool)
        results[dtype] = [
            to_numpy(svdpi.zca_whitening_matrix_vjp(w, v, g, mask=mask, method="exact")),
            to_numpy(svdpi.pca_projector_vjp(w, v, g, mask=mask, method="exact")),
        ]
    for single, double in zip(results[xp.float32], results[xp.float64], strict=True):
        assert np.isfinite(single).all()
        # The cut's 1/gap amplifies float32's rounding of the eigenvectors.
        assert_close(single, double, rtol=1e-4)


def test_the_issue_18_reproducer_is_finite():
    w = np.array(ISSUE_18_SPECTRUM, np.float32)
    g = svdpi.zca_whitening_matrix_vjp(
        w, np.eye(16, dtype=np.float32), np.ones((16, 16), np.float32),
        mask=np.arange(16) < 14, method="exact",
    )  # fmt: skip
    assert np.isfinite(g).all()
    # The kept-dropped entry across the cut: w_13^{-1/2} / (w_13 − w_14).
    expected = np.float64(w[13]) ** -0.5 / (np.float64(w[13]) - np.float64(w[14]))
    np.testing.assert_allclose(g[13, 14], expected, rtol=1e-5)
    assert abs(g[13, 14]) > 1e7
