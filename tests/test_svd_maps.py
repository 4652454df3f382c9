"""Functions of the singular values (singular_value_map, polar) and their exact derivatives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _helpers import to_numpy
from _svd_helpers import (
    assert_close,
    central_difference,
    inner,
    random_matrix,
    unitary,
    with_singular_values,
)
from array_api_compat import array_namespace

import svdpi
from svdpi.functions import Log, Power, SpectralFunction

SHAPES = [(5, 3), (3, 5), (4, 4)]
SPECTRA = {
    "separated": [3.0, 2.0, 1.0, 0.5],
    "double": [3.0, 2.0, 2.0, 0.5],
    "triple": [2.0, 2.0, 2.0, 2.0],
    "zero": [3.0, 1.5, 0.0, 0.0],
}


@dataclasses.dataclass(frozen=True)
class Tanh(SpectralFunction):
    """An odd function with f'(0) = 1, written against the array API (a user's function).

    ``tanh x − tanh y = sinh(x − y) / (cosh x cosh y)``: a divided difference
    without cancellation.
    """

    def value(self, x, /, *, xp=None):
        return (xp or array_namespace(x)).tanh(x)

    def derivative(self, x, /, *, xp=None):
        return 1.0 / (xp or array_namespace(x)).cosh(x) ** 2

    def divided_difference(self, x, y, /, *, xp=None):
        xp = xp or array_namespace(x, y)
        d = x - y
        zero = d == 0
        safe = xp.where(zero, xp.ones_like(d), d)
        sinhc = xp.where(zero, xp.ones_like(d), xp.sinh(safe) / safe)
        return sinhc / (xp.cosh(x) * xp.cosh(y))


@dataclasses.dataclass(frozen=True)
class Shifted(SpectralFunction):
    """``f(σ) = σ + 1``: not zero at zero."""

    def value(self, x, /, *, xp=None):
        return x + 1.0


FUNCTIONS = {"square": Power(2.0), "tanh": Tanh(), "cube": Power(3.0)}


def _as(xp, a):
    return xp.asarray(
        np.ascontiguousarray(a), dtype=xp.complex128 if np.iscomplexobj(a) else xp.float64
    )


def _map(fn):
    if fn == "polar":
        return svdpi.polar, svdpi.polar_vjp, svdpi.polar_jvp
    f = FUNCTIONS[fn]
    return (
        lambda u, s, vh: svdpi.singular_value_map(u, s, vh, f),
        lambda u, s, vh, g: svdpi.singular_value_map_vjp(u, s, vh, f, g),
        lambda u, s, vh, t: svdpi.singular_value_map_jvp(u, s, vh, f, t),
    )


def _cases():
    # σ³ rather than σ²: the odd extension of σ² is σ|σ|, not twice differentiable at
    # σ = 0, and central differences of it there are only O(h) accurate.
    for fn in ("cube", "tanh", "polar"):
        for spectrum in SPECTRA:
            if fn == "polar" and spectrum == "zero":
                continue  # no derivative: tested apart
            yield fn, spectrum


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize(("fn", "spectrum"), list(_cases()))
def test_derivative_matches_central_differences(xp, fn, spectrum, m, n, complex_):
    """Along real and (for complex input) imaginary directions; repeated and zero σ included."""
    rng = np.random.default_rng(m + 3 * n)
    a = with_singular_values(rng, m, n, SPECTRA[spectrum], complex_=complex_)
    value, vjp, jvp = _map(fn)
    u, s, vh = svdpi.svd(_as(xp, a))
    directions = [random_matrix(rng, a.shape)]
    if complex_:
        directions.append(1j * random_matrix(rng, a.shape))
    for t in directions:
        t = t.astype(a.dtype)
        expected = central_difference(lambda x: value(*svdpi.svd(x)), a, t, h=1e-5)
        assert_close(jvp(u, s, vh, _as(xp, t)), expected, rtol=1e-8)
    # The VJP is the same self-adjoint map: <vjp(g), t> = <g, jvp(t)>.
    g = random_matrix(rng, a.shape, complex_)
    t = random_matrix(rng, a.shape, complex_)
    left = inner(to_numpy(vjp(u, s, vh, _as(xp, g))), t)
    right = inner(g, to_numpy(jvp(u, s, vh, _as(xp, t))))
    assert left == pytest.approx(right, rel=1e-12)


@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize("fn", ["square", "tanh", "polar"])
def test_value_is_the_function_of_the_singular_values(xp, fn, m, n):
    rng = np.random.default_rng(1)
    a = with_singular_values(rng, m, n, [2.0, 2.0, 0.7, 0.2])
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    f = (
        (lambda x: np.ones_like(x))
        if fn == "polar"
        else (lambda x: to_numpy(FUNCTIONS[fn].value(x)))
    )
    expected = (u * f(s)) @ vh
    assert_close(_map(fn)[0](*svdpi.svd(_as(xp, a))), expected, rtol=1e-13)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize("fn", ["square", "tanh", "polar"])
def test_derivative_does_not_depend_on_the_basis_of_a_repeated_singular_value(
    xp, fn, m, n, complex_
):
    rng = np.random.default_rng(2)
    k = min(m, n)
    spectrum = [3.0, 1.0, 1.0, 1.0][:k]
    a = with_singular_values(rng, m, n, spectrum, complex_=complex_)
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    q = np.eye(k, dtype=u.dtype)
    q[1:, 1:] = unitary(rng, k - 1, complex_=complex_)  # rotate inside the repeated block
    u2, vh2 = u @ q, np.conj(q.T) @ vh
    assert_close((u2 * s) @ vh2, a, rtol=1e-13)
    g = random_matrix(rng, a.shape, complex_)
    vjp = _map(fn)[1]
    first = vjp(*(_as(xp, x) for x in (u, s, vh, g)))
    second = vjp(*(_as(xp, x) for x in (u2, s, vh2, g)))
    assert_close(second, to_numpy(first), rtol=1e-12)


def test_zero_singular_values_in_either_factor_do_not_matter():
    """f(0) = 0: the singular vectors of zero singular values rotate independently."""
    rng = np.random.default_rng(3)
    a = with_singular_values(rng, 5, 4, [2.0, 1.0, 0.0, 0.0])
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    q1, q2 = np.eye(4), np.eye(4)
    q1[2:, 2:] = unitary(rng, 2)
    q2[2:, 2:] = unitary(rng, 2)
    u2, vh2 = u @ q1, q2.T @ vh  # a different pair of null bases
    assert_close((u2 * s) @ vh2, a, atol=1e-14)
    g = rng.standard_normal(a.shape)
    for f in (Tanh(), Power(2.0)):
        assert_close(
            svdpi.singular_value_map_vjp(u2, s, vh2, f, g),
            svdpi.singular_value_map_vjp(u, s, vh, f, g),
            rtol=1e-12,
        )


def test_close_singular_values_against_a_high_precision_difference():
    """A gap of 1e-9: float64 differences are useless there, 60-digit ones are not."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(4)
    a = with_singular_values(rng, 4, 3, [2.0, 1.0 + 1e-9, 1.0])
    t = rng.standard_normal(a.shape)
    u, s, vh = svdpi.svd(a)
    with mpmath.workdps(60):
        am, tm = mpmath.matrix(a.tolist()), mpmath.matrix(t.tolist())
        h = mpmath.mpf("1e-25")

        def value(x, f):
            um, sm, vm = mpmath.svd_r(x, full_matrices=False)
            return um * mpmath.diag([f(v) for v in sm]) * vm

        for f_mp, f, name in [
            (mpmath.tanh, Tanh(), "tanh"),
            (lambda v: v**3, Power(3.0), "cube"),
            (lambda v: mpmath.mpf(1), None, "polar"),
        ]:
            difference = (value(am + h * tm, f_mp) - value(am - h * tm, f_mp)) / (2 * h)
            expected = np.array(difference.tolist(), dtype=float)
            if f is None:
                actual = svdpi.polar_jvp(u, s, vh, t)
            else:
                actual = svdpi.singular_value_map_jvp(u, s, vh, f, t)
            assert_close(actual, expected, rtol=1e-12, err_msg=name)


def test_polar_of_a_rank_deficient_matrix_has_a_nan_derivative(xp):
    rng = np.random.default_rng(5)
    for spectrum in ([2.0, 1.0, 0.0], [2.0, 1.0, 1e-17]):
        a = with_singular_values(rng, 4, 3, spectrum)
        u, s, vh = svdpi.svd(_as(xp, a))
        q = to_numpy(svdpi.polar(u, s, vh))
        assert np.isfinite(q).all()  # a polar factor, one of many
        grad = to_numpy(svdpi.polar_vjp(u, s, vh, _as(xp, np.ones(a.shape))))
        assert np.isnan(grad).all()
    # A batch: only the deficient matrix's derivative is NaN.
    a = np.stack(
        [with_singular_values(rng, 3, 3, sv) for sv in ([2.0, 1.0, 0.5], [1.0, 1.0, 0.0])]
    )
    grad = to_numpy(svdpi.polar_jvp(*svdpi.svd(_as(xp, a)), _as(xp, np.ones(a.shape))))
    assert np.isfinite(grad[0]).all()
    assert np.isnan(grad[1]).all()


def test_polar_is_the_nearest_orthogonal_matrix(xp):
    rng = np.random.default_rng(6)
    a = random_matrix(rng, (2, 5, 3), True)
    q = to_numpy(svdpi.polar(*svdpi.svd(_as(xp, a))))
    assert_close(
        np.conj(np.swapaxes(q, -1, -2)) @ q, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-13
    )
    h = np.conj(np.swapaxes(q, -1, -2)) @ a  # the Hermitian PSD factor
    assert_close(h, np.conj(np.swapaxes(h, -1, -2)), atol=1e-13)
    assert np.all(np.linalg.eigvalsh(h) > 0)


@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_truncated_map_matches_central_differences_where_there_is_a_gap(xp, m, n):
    """The best rank-2 approximation: f(σ) = σ on the two largest, repeated ones on either side."""
    rng = np.random.default_rng(7)
    a = with_singular_values(rng, m, n, [2.0, 2.0, 1.0, 1.0])
    mask_np = np.arange(min(m, n)) < 2
    f = Power(1.0)

    def value(x):
        u, s, vh = np.linalg.svd(x, full_matrices=False)
        return (u[:, :2] * s[:2]) @ vh[:2]

    u, s, vh = svdpi.svd(_as(xp, a))
    mask = xp.asarray(mask_np)
    assert_close(svdpi.singular_value_map(u, s, vh, f, mask=mask), value(a), rtol=1e-13)
    t = random_matrix(rng, a.shape)
    actual = svdpi.singular_value_map_jvp(u, s, vh, f, _as(xp, t), mask=mask)
    assert_close(actual, central_difference(value, a, t, h=1e-6), rtol=1e-8)


def test_truncated_map_without_a_gap_has_a_nan_derivative():
    rng = np.random.default_rng(8)
    # Factors with an exactly repeated singular value (an SVD of the product
    # would split it by round-off).
    u = np.linalg.qr(rng.standard_normal((4, 3)))[0]
    vh = np.linalg.qr(rng.standard_normal((3, 3)))[0].T
    s = np.array([2.0, 1.0, 1.0])
    a = (u * s) @ vh
    mask = np.array([True, True, False])  # cuts through the repeated singular value
    grad = svdpi.singular_value_map_vjp(u, s, vh, Power(1.0), np.ones(a.shape), mask=mask)
    assert np.isnan(grad).any()
    mask = np.array([True, False, False])  # a gap at the cut
    grad = svdpi.singular_value_map_vjp(u, s, vh, Power(1.0), np.ones(a.shape), mask=mask)
    assert np.isfinite(grad).all()


def test_function_arguments_are_checked():
    u, s, vh = svdpi.svd(np.eye(3, 2))
    g = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"f\(0\) = 0"):
        svdpi.singular_value_map(u, s, vh, Shifted())
    with pytest.raises(ValueError, match="domain 'positive'"):
        svdpi.singular_value_map_vjp(u, s, vh, Log(), g)
    with pytest.raises(ValueError, match="domain 'positive'"):
        svdpi.singular_value_map_jvp(u, s, vh, Power(-0.5), g)
    with pytest.raises(TypeError, match="SpectralFunction"):
        svdpi.singular_value_map(u, s, vh, np.tanh)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        svdpi.singular_value_map(u, s, vh, Power(2.0), mask=np.ones(2))
    with pytest.raises(ValueError, match="mask must have the shape"):
        svdpi.singular_value_map(u, s, vh, Power(2.0), mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="grad must have shape"):
        svdpi.polar_vjp(u, s, vh, g.T)
    with pytest.raises(TypeError, match="tangent must have dtype"):
        svdpi.polar_jvp(u, s, vh, g.astype(np.float32))


def test_f_at_zero_is_checked_once_per_function_and_dtype():
    from svdpi._svd_maps import _zero_at_zero

    calls = []

    @dataclasses.dataclass(frozen=True)
    class Counted(Tanh):
        def value(self, x, /, *, xp=None):
            calls.append(x.shape)
            return super().value(x, xp=xp)

    u, s, vh = svdpi.svd(np.eye(3, 2))
    for _ in range(3):
        svdpi.singular_value_map_vjp(u, s, vh, Counted(), np.ones((3, 2)))
    assert calls.count(()) == 1  # f(0) evaluated once, on a 0-d array
    assert _zero_at_zero[(Counted(), "numpy", str(s.dtype))] is True


def test_empty_factors_give_empty_results(xp):
    for shape in [(3, 0), (0, 3), (2, 0, 0)]:
        a = xp.zeros(shape, dtype=xp.float64)
        u, s, vh = svdpi.svd(a)
        assert tuple(svdpi.singular_value_map(u, s, vh, Tanh()).shape) == shape
        assert tuple(svdpi.polar_vjp(u, s, vh, a).shape) == shape
        assert tuple(svdpi.singular_value_map_jvp(u, s, vh, Power(2.0), a).shape) == shape


def test_truncated_map_with_a_gap_below_the_floor_is_finite():
    """Issue 18's class: distinct singular values closer than max(m, n) · eps · σ_max.

    0.2's rule for eigenvalues (and the SVD maps' until 0.3) called them equal
    and returned NaN; the truncated function has a derivative, φ over the gap.
    """
    # Exact in float32: the gap 2^-22 is below 5 · eps · 1 = 6e-7 there.
    s64 = np.array([1.0, 0.5 + 2.0**-22, 0.5, 0.1], dtype=np.float32).astype(np.float64)
    rng = np.random.default_rng(9)
    u64 = np.linalg.qr(rng.standard_normal((5, 4)))[0]
    vh64 = np.linalg.qr(rng.standard_normal((4, 4)))[0].T
    g64 = rng.standard_normal((5, 4))
    mask = np.array([True, True, False, False])
    results = [
        svdpi.singular_value_map_vjp(
            u64.astype(dt), s64.astype(dt), vh64.astype(dt), Power(1.0), g64.astype(dt), mask=mask
        )
        for dt in (np.float32, np.float64)
    ]
    assert np.isfinite(results[0]).all()
    np.testing.assert_allclose(
        results[0], results[1], rtol=0, atol=1e-3 * np.abs(results[1]).max()
    )
