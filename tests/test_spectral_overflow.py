"""Spectral maps where values or derivatives leave the dtype's range: inf, not NaN.

Each test here failed before the change it tests (checked on the branch's
base): ``V diag(e^λ) Vᵀ`` multiplied an overflowing ``e^λ`` by exact zeros
of ``V`` (NaN, where ``torch.linalg.matrix_exp`` gives ``inf`` and 0), the
exact VJP of ``Exp`` did the same with its kernel, the float32 exact VJP of
``Power(2)`` near the dtype's maximum multiplied a finite but huge kernel
entry by the cotangent (NaN), and second derivatives of a spectrum spanning
more than 1e25 in float32 overflowed in units of ``max|λ|`` where their true
values are representable. The oracles are high-precision evaluations
(mpmath, of the eigenpairs given, rounded to the dtype at the end: ``±inf``
where the true entry overflows) and closed forms.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from _helpers import from_numpy, to_numpy
from _mpmath_oracles import divided_difference, oracle_for

import svdpi
from svdpi.functions import Exp, Power

METHODS = ["exact", "pi", "taylor", "analytic"]


def _rotation(theta, n, dtype=np.float64):
    """A rotation by ``theta`` in the plane of the first two coordinates (n × n)."""
    v = np.eye(n)
    c, s = math.cos(theta), math.sin(theta)
    v[:2, :2] = [[c, -s], [s, c]]
    return v.astype(dtype)


def _rounded(m, dtype):
    """An mpmath matrix rounded to ``dtype`` (``±inf`` beyond its range)."""
    big = mpmath.mpf(float(np.finfo(dtype).max))
    out = np.empty((m.rows, m.cols), dtype=dtype)
    for i in range(m.rows):
        for j in range(m.cols):
            x = m[i, j]
            out[i, j] = math.copysign(math.inf, x) if abs(x) > big else float(x)
    return out


def _mp(a):
    return mpmath.matrix([[mpmath.mpf(float(x)) for x in row] for row in np.asarray(a)])


def _exact_vjp_oracle(fn, lam, v, g):
    """``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` with ``G_ij = f[λi, λj]`` in 80 digits, for the given pairs."""
    mpmath.mp.dps = 80
    oracle = oracle_for(fn)
    n = len(lam)
    vm = _mp(v)
    gm = _mp((np.asarray(g, np.float64) + np.asarray(g, np.float64).T) / 2)
    p = vm.T * gm * vm
    inner = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(n):
            inner[i, j] = divided_difference(oracle, float(lam[i]), float(lam[j])) * p[i, j]
    return vm * inner * vm.T


def _assert_matches(got, expected):
    """Equal infinities (and zeros) where expected; finite entries to a few ulps of the largest."""
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf])
    assert np.isfinite(got[~inf]).all()
    finite = expected[~inf]
    if finite.size:
        rtol = 1e-12 if expected.dtype == np.float64 else 1e-5
        scale = np.max(np.abs(finite))
        np.testing.assert_allclose(got[~inf], finite, rtol=0, atol=rtol * scale)


# ----------------------------------------------------------------- forward


@pytest.mark.parametrize(("dtype", "big"), [("float64", 800.0), ("float32", 100.0)])
def test_exp_of_an_overflowing_eigenvalue_is_inf_and_zero_as_matrix_exp(xp, dtype, big):
    """diag(big, 0): e^big overflows; was [[inf, NaN], [NaN, NaN]]."""
    dt = getattr(xp, dtype)
    w, v = svdpi.eig(from_numpy(xp, np.diag([big, 0.0]), dt))
    with np.errstate(over="ignore"):
        got = to_numpy(svdpi.spectral_map(w, v, Exp()))
    np.testing.assert_array_equal(got, np.array([[np.inf, 0.0], [0.0, 1.0]], dtype))


@pytest.mark.parametrize(
    ("lam", "theta"),
    [
        ([800.0, 799.5, 1.0], math.pi / 4),  # terms of opposite sign meet: +inf off the diagonal
        ([720.0, 0.0, -1.0], 1e-300),  # e^720 · 1e-300 ≈ 1e13: finite off the diagonal
        ([1e6, 3.0, 2.0], 0.3),  # far beyond: inf wherever an eigenvector reaches
    ],
)
def test_exp_where_terms_overflow_against_mpmath(xp, lam, theta):
    v = _rotation(theta, 3)
    mpmath.mp.dps = 80
    vm = _mp(v)
    expected = _rounded(
        vm * mpmath.diag([mpmath.exp(mpmath.mpf(x)) for x in lam]) * vm.T, np.float64
    )
    with np.errstate(over="ignore"):
        got = to_numpy(svdpi.spectral_map(from_numpy(xp, lam), from_numpy(xp, v), Exp()))
    _assert_matches(got, expected)


def test_exp_forward_is_unchanged_where_nothing_overflows(xp):
    """The second product adds zeros: the result is the plain V diag(e^λ) Vᵀ, bit for bit."""
    rng = np.random.default_rng(0)
    v, _ = np.linalg.qr(rng.standard_normal((4, 5, 5)))
    lam = rng.uniform(-5.0, 5.0, (4, 5))
    got = to_numpy(svdpi.spectral_map(from_numpy(xp, lam), from_numpy(xp, v), Exp()))
    plain = to_numpy(
        (from_numpy(xp, v) * xp.exp(from_numpy(xp, lam))[..., None, :])
        @ xp.matrix_transpose(from_numpy(xp, v))
    )
    np.testing.assert_array_equal(got, plain)


def test_torch_expm_overflow_is_matrix_exp():
    torch = pytest.importorskip("torch")
    import svdpi.torch

    for dtype, big in ((torch.float64, 800.0), (torch.float32, 100.0)):
        a = torch.diag(torch.tensor([big, 0.0], dtype=dtype))
        expected = torch.linalg.matrix_exp(a)
        assert torch.equal(svdpi.torch.expm(a), expected)
        q = torch.tensor(_rotation(1e-30, 2), dtype=dtype)
        rotated = q @ a @ q.T
        got = svdpi.torch.expm(rotated)
        assert not torch.isnan(got).any()
        # e^big · sin²θ + cos²θ at (1, 1): finite in float64 (≈ 2.7e287), inf in float32.
        assert got[0, 0] == math.inf
        assert got[1, 1] >= 1.0


# ---------------------------------------------------------- first derivatives


@pytest.mark.parametrize(
    ("lam", "theta"),
    [([800.0, 0.0, 1.0], 0.0), ([720.0, 0.0, -1.0], 1e-300), ([800.0, 799.5, 1.0], 0.5)],
)
def test_exact_vjp_of_exp_where_it_overflows_against_mpmath(xp, lam, theta):
    """inf where the Daleckii–Krein derivative overflows, finite where not (was NaN everywhere)."""
    v = _rotation(theta, 3)
    g = np.array([[1.0, 0.5, -2.0], [0.5, 0.0, 1.0], [-2.0, 1.0, 3.0]])
    expected = _rounded(_exact_vjp_oracle(Exp(), lam, v, g), np.float64)
    w, vv, gg = from_numpy(xp, lam), from_numpy(xp, v), from_numpy(xp, g)
    with np.errstate(over="ignore"):
        got = to_numpy(svdpi.spectral_map_vjp(w, vv, Exp(), gg))
        jvp = to_numpy(svdpi.spectral_map_jvp(w, vv, Exp(), gg))
    _assert_matches(got, expected)
    np.testing.assert_array_equal(jvp, got)  # G is symmetric: the same map


def test_float32_exact_vjp_of_the_square_near_the_maximum(xp):
    """Power(2): the VJP is Ḡ A + A Ḡ (closed form, float64); 2λ ≈ 6e38 overflows float32.

    Was NaN: finite kernel entries λi + λj ≈ 3e38 times the cotangent overflowed
    inside the product. Now ±inf where the true entry overflows, finite where not.
    """
    lam = np.array([3e38, 2e38, 1.0, 0.5], np.float32)
    v = _rotation(0.5, 4, np.float32)
    g = np.array(
        [[1.0, -2.0, 0.01, 0.02], [-2.0, 3.0, -0.03, 0.01], [0.01, -0.03, 1.0, 2.0],
         [0.02, 0.01, 2.0, -1.0]],
        np.float32,
    )  # fmt: skip
    a = (v.astype(np.float64) * lam.astype(np.float64)) @ v.T.astype(np.float64)
    g64 = g.astype(np.float64)
    exact = g64 @ a + a @ g64
    big = np.abs(exact) > np.finfo(np.float32).max
    expected = np.where(big, np.sign(exact) * np.inf, exact).astype(np.float32)
    f32 = xp.float32
    with np.errstate(over="ignore"):
        got = to_numpy(
            svdpi.spectral_map_vjp(
                from_numpy(xp, lam, f32),
                from_numpy(xp, v, f32),
                Power(2.0),
                from_numpy(xp, g, f32),
            )
        )
    assert big.any()
    assert (~big).any()
    _assert_matches(got, expected)


# ------------------------------------------------ 0 < p < 1 at the zero matrix


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p", [0.5, 0.25, 0.75])
def test_root_gradient_at_the_zero_matrix_is_nan_as_through_eigh(xp, method, p):
    """λ^p with 0 < p < 1 has an infinite slope at 0: no derivative at the zero matrix.

    Every method gives NaN in every entry (never a finite number), as
    PyTorch's autograd through ``eigh`` does (tested below).
    """
    w, v = svdpi.eig(from_numpy(xp, np.zeros((3, 3))))
    g = from_numpy(xp, np.eye(3))
    with np.errstate(all="ignore"):
        got = to_numpy(svdpi.spectral_map_vjp(w, v, Power(p), g, method=method))
    assert np.isnan(got).all()


def test_torch_eigh_autograd_of_the_root_at_the_zero_matrix_is_nan():
    """The reference behaviour the NaN above follows."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    w, v = torch.linalg.eigh(x)
    root = (v * w.clamp(min=0).sqrt().unsqueeze(-2)) @ v.mT
    (grad,) = torch.autograd.grad(root.trace(), x)
    assert torch.isnan(grad).all()


# ----------------------------------------------------------- second derivatives


def _hvp_oracle(p, lam, v, g, t):
    """``V M Vᵀ``, ``M_ab = Σ_c f[λa, λb, λc] (E_ac X_cb + X_ac E_cb)``, in high precision."""
    oracle = oracle_for(Power(p))
    n = len(lam)
    vm = _mp(v)
    x = vm.T * _mp(g) * vm
    e = vm.T * _mp(t) * vm
    m = mpmath.matrix(n, n)
    for a in range(n):
        for b in range(n):
            m[a, b] = sum(
                divided_difference(oracle, float(lam[a]), float(lam[b]), float(lam[c]))
                * (e[a, c] * x[c, b] + x[a, c] * e[c, b])
                for c in range(n)
            )
    return vm * m * vm.T


@pytest.mark.parametrize("p", [0.5, 0.3, 1.5])
@pytest.mark.parametrize("lam", [[1e30, 1e3, 1.0, 0.5], [1e26, 1.0, 0.25, 1e-3]])
def test_float32_hvp_of_a_spectrum_spanning_beyond_1e25(xp, p, lam):
    """Second derivatives of degree p − 2 < 0 overflowed at the small eigenvalues.

    In units of max|λ| (1e-30 for the eigenvalue 1 here) they exceed float32's
    range (NaN) where their true values are of order 1; units of
    ``min(max|λ|, 1)`` keep them as they are.
    """
    f32 = xp.float32
    lam = np.array(lam, np.float32)
    rng = np.random.default_rng(5)
    v = np.linalg.qr(rng.standard_normal((4, 4)))[0].astype(np.float32)
    g = rng.standard_normal((4, 4)).astype(np.float32)
    g = g + g.T
    t = rng.standard_normal((4, 4)).astype(np.float32)
    t = t + t.T
    args = [from_numpy(xp, x, f32) for x in (lam, v)]
    with np.errstate(all="ignore"):
        got = to_numpy(
            svdpi.spectral_map_hvp(*args, Power(p), from_numpy(xp, g, f32), from_numpy(xp, t, f32))
        )
    expected = _rounded(_hvp_oracle(p, lam, v, g, t), np.float32)
    assert np.isfinite(expected).all()
    _assert_matches(got, expected)
