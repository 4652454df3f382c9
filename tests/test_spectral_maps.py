"""spectral_map and its derivatives over any SpectralFunction, second order included.

The functions here are test-local subclasses whose divided differences are
exact in closed form (``x³``, ``1/x``, ``x²``), or naive where the spectra are
well separated, so that every oracle is independent of svdpi's own built-ins:
central differences of svdpi's forward and VJP, and (double) autograd
through ``torch.linalg.eigh``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, spd_with_spectrum, to_numpy

import svdpi
from svdpi.functions import Log, Power, SpectralFunction


class Cubic(SpectralFunction):
    """``x³`` on the real line: ``f[x, y] = x² + xy + y²``, ``f[x, y, z] = x + y + z``."""

    def value(self, x, /, *, xp=None):
        return x * x * x

    def derivative(self, x, /, *, xp=None):
        return 3.0 * x * x

    def second_derivative(self, x, /, *, xp=None):
        return 6.0 * x

    def divided_difference(self, x, y, /, *, xp=None):
        return x * x + x * y + y * y

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        return x + y + z


class NaiveLog(SpectralFunction):
    """``log x`` with the floor, divided differences as written (separated spectra only)."""

    domain = "positive"

    def value(self, x, /, *, xp=None):
        return np.log(x) if xp is None else xp.log(x)

    def derivative(self, x, /, *, xp=None):
        return 1.0 / x

    def divided_difference(self, x, y, /, *, xp=None):
        same = x == y
        return xp.where(same, 1.0 / x, (xp.log(x) - xp.log(y)) / xp.where(same, 1.0, x - y))


@dataclasses.dataclass(frozen=True)
class Inverse(Power):
    """``1/x`` as the built-in ``Power(-1)``, with ``f[x, y, z] = 1 / (xyz)``."""

    p: float = -1.0

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        return 1.0 / (x * y * z)


@dataclasses.dataclass(frozen=True)
class Square(Power):
    """``x²`` as the built-in ``Power(2)`` (zero clamp), with ``f[x, y, z] = 1``."""

    p: float = 2.0

    def second_divided_difference(self, x, y, z, /, *, xp=None):
        return x * 0.0 + y * 0.0 + z * 0.0 + 1.0


def _symmetric(rng, n, batch=()):
    t = rng.standard_normal((*batch, n, n))
    return (t + np.swapaxes(t, -1, -2)) / 2


def _eig(xp, a):
    return svdpi.eig(from_numpy(xp, a))


def _inner(x, y):
    return float(np.sum(to_numpy(x) * to_numpy(y)))


# ------------------------------------------------------------ first order


def test_forward_of_a_users_function_matches_numpy_eigh(xp):
    rng = np.random.default_rng(0)
    a = spd_with_spectrum([3.0, 1.0, -0.5, -2.0], rng, batch=(2,))
    w, v = _eig(xp, a)
    assert_close(svdpi.spectral_map(w, v, Cubic()), a @ a @ a, rtol=1e-12)


def test_exact_vjp_of_a_users_function_matches_torch_autograd_through_eigh():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = spd_with_spectrum([3.0, 1.0, -0.5, -2.0], rng, batch=(3,))
    g = rng.standard_normal((3, 4, 4))
    b = torch.tensor(a, requires_grad=True)
    w_t, v_t = torch.linalg.eigh((b + b.mT) / 2)
    loss = torch.sum(torch.tensor(g) * ((v_t * (w_t**3)[..., None, :]) @ v_t.mT))
    (expected,) = torch.autograd.grad(loss, b)
    w, v = svdpi.eig(a)
    assert_close(svdpi.spectral_map_vjp(w, v, Cubic(), g), expected.numpy(), rtol=1e-11)


@pytest.mark.parametrize("method", ["exact", "pi", "taylor", "analytic"])
def test_matrix_functions_are_spectral_maps(xp, method):
    """The wrappers are one formula: bitwise the spectral map of Power / Log."""
    rng = np.random.default_rng(2)
    w, v = _eig(xp, spd_with_spectrum([4.0, 2.0, 1.0, 0.5], rng))
    g = from_numpy(xp, rng.standard_normal((4, 4)))
    mask = from_numpy(xp, np.array([True, True, True, False]), xp.bool)
    kw = {"mask": mask, "method": method, "num_iters": 7}
    pairs = [
        (
            svdpi.matrix_power_vjp(w, v, -0.5, g, **kw),
            svdpi.spectral_map_vjp(w, v, Power(-0.5), g, **kw),
        ),
        (svdpi.matrix_log_jvp(w, v, g, **kw), svdpi.spectral_map_jvp(w, v, Log(), g, **kw)),
        (
            svdpi.zca_whitening_matrix_vjp(w, v, g, **kw),
            svdpi.spectral_map_vjp(w, v, Power(-0.5), g, **kw),
        ),
        (
            svdpi.pca_projector_vjp(w, v, g, **kw),
            svdpi.spectral_map_vjp(w, v, Power(0.0), g, **kw),
        ),
        (
            svdpi.matrix_power(w, v, 0.5, mask=mask),
            svdpi.spectral_map(w, v, Power(0.5), mask=mask),
        ),
    ]
    for got, expected in pairs:
        np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))


def test_defaults_exact_for_matrix_functions_pi_for_the_layers_by_hand(xp):
    rng = np.random.default_rng(3)
    w, v = _eig(xp, spd_with_spectrum([4.0, 2.0, 1.9, 0.5], rng))
    g = from_numpy(xp, rng.standard_normal((4, 4)))
    same = np.testing.assert_array_equal
    same(
        to_numpy(svdpi.matrix_power_vjp(w, v, 0.5, g)),
        to_numpy(svdpi.matrix_power_vjp(w, v, 0.5, g, method="exact")),
    )
    same(
        to_numpy(svdpi.matrix_log_jvp(w, v, g)),
        to_numpy(svdpi.matrix_log_jvp(w, v, g, method="exact")),
    )
    same(
        to_numpy(svdpi.spectral_map_vjp(w, v, Log(), g)),
        to_numpy(svdpi.matrix_log_vjp(w, v, g, method="exact")),
    )
    same(
        to_numpy(svdpi.zca_whitening_matrix_vjp(w, v, g)),
        to_numpy(svdpi.matrix_power_vjp(w, v, -0.5, g, method="pi")),
    )
    same(
        to_numpy(svdpi.pca_projector_vjp(w, v, g, n_components=2)),
        to_numpy(svdpi.pca_projector_vjp(w, v, g, n_components=2, method="pi")),
    )


@pytest.mark.parametrize("method", ["exact", "pi", "taylor"])
def test_a_users_floored_function_matches_finite_differences(xp, method):
    """A positive-domain function that svdpi does not know (no units): floor included."""
    rng = np.random.default_rng(4)
    a = spd_with_spectrum([2.0, 1.0, 0.5, -1e-3], rng)
    g, t = rng.standard_normal((4, 4)), _symmetric(rng, 4)
    w, v = _eig(xp, a)
    if method == "exact":

        def loss(s):
            return np.sum(g * to_numpy(svdpi.spectral_map(*_eig(xp, a + s * t), NaiveLog())))

        fd = (loss(1e-7) - loss(-1e-7)) / 2e-7
        vjp = svdpi.spectral_map_vjp(w, v, NaiveLog(), from_numpy(xp, g))
        assert _inner(vjp, t) == pytest.approx(fd, rel=1e-6)
    # The chain-rule methods: the same as for the built-in log, which has units.
    got = svdpi.spectral_map_vjp(w, v, NaiveLog(), from_numpy(xp, g), method=method, num_iters=5)
    expected = svdpi.matrix_log_vjp(w, v, from_numpy(xp, g), method=method, num_iters=5)
    assert_close(got, expected, rtol=1e-9)


def test_vjp_is_the_transpose_of_jvp_for_a_users_function(xp):
    rng = np.random.default_rng(5)
    w, v = _eig(xp, spd_with_spectrum([3.0, 1.0, 1.0, -0.5], rng, batch=(2,)))
    g, t = (
        from_numpy(xp, rng.standard_normal((2, 4, 4))),
        from_numpy(xp, rng.standard_normal((2, 4, 4))),
    )
    for method in ("exact", "pi", "taylor"):
        vjp = svdpi.spectral_map_vjp(w, v, Cubic(), g, method=method)
        jvp = svdpi.spectral_map_jvp(w, v, Cubic(), t, method=method)
        assert _inner(vjp, t) == pytest.approx(_inner(g, jvp), rel=1e-12)


def test_none_cotangent_and_tangent_mean_zero(xp):
    w, v = _eig(xp, np.diag([2.0, 1.0]))
    for result in (
        svdpi.spectral_map_vjp(w, v, Cubic(), None),
        svdpi.spectral_map_jvp(w, v, Cubic(), None),
        svdpi.spectral_map_hvp(w, v, Cubic(), None, v),
        svdpi.spectral_map_hvp(w, v, Cubic(), v, None),
    ):
        np.testing.assert_array_equal(to_numpy(result), np.zeros((2, 2)))


def test_masked_exact_kernel_is_finite_and_basis_free_at_ties_in_the_kept_block(xp):
    """A repeated kept eigenvalue, a gap at the cut: rotate the kept block, same result."""
    w = np.array([2.0, 2.0, 2.0, 0.5])
    q = np.linalg.qr(np.random.default_rng(6).standard_normal((4, 4)))[0]
    rotation = np.eye(4)
    rotation[:3, :3] = np.linalg.qr(np.random.default_rng(60).standard_normal((3, 3)))[0]
    g = from_numpy(xp, np.random.default_rng(7).standard_normal((4, 4)))
    mask = from_numpy(xp, np.array([True, True, True, False]), xp.bool)
    results = [
        to_numpy(
            svdpi.spectral_map_vjp(from_numpy(xp, w), from_numpy(xp, basis), fn, g, mask=mask)
        )
        for fn in (Power(-0.5), Cubic())
        for basis in (q, q @ rotation)
    ]
    for first, second in (results[:2], results[2:]):
        assert np.isfinite(first).all()
        np.testing.assert_allclose(second, first, rtol=0, atol=1e-12 * np.abs(first).max())


@pytest.mark.parametrize("fn", [Power(-0.5), Log()])
def test_a_repeated_largest_eigenvalue_with_the_floor_acting_gives_nan(xp, fn):
    """max|λ| of a repeated eigenvalue is not differentiable, nor is the floor n·eps·max|λ|."""
    w, v = from_numpy(xp, np.array([2.0, 2.0, 0.0])), from_numpy(xp, np.eye(3))
    g = from_numpy(xp, np.ones((3, 3)))
    assert np.isnan(to_numpy(svdpi.spectral_map_vjp(w, v, fn, g))).all()
    # No eigenvalue under the floor: the repeated top is harmless.
    w = from_numpy(xp, np.array([2.0, 2.0, 1.0]))
    assert np.isfinite(to_numpy(svdpi.spectral_map_vjp(w, v, fn, g))).all()


def test_bad_functions_are_rejected():
    w, v = svdpi.eig(np.eye(2))
    with pytest.raises(TypeError, match=r"fn must be a svdpi\.functions\.SpectralFunction"):
        svdpi.spectral_map(w, v, np.sqrt)

    class Odd(Cubic):
        domain = "complex"

    with pytest.raises(ValueError, match=r"fn\.domain must be one of"):
        svdpi.spectral_map_vjp(w, v, Odd(), np.eye(2))


# ----------------------------------------------------------- second order


def _hvp_fd(xp, a, fn, g, t, mask=None, h=1e-6):
    """Central difference of svdpi's exact VJP along ``t``."""

    def vjp(s):
        w, v = _eig(xp, a + s * t)
        return to_numpy(svdpi.spectral_map_vjp(w, v, fn, from_numpy(xp, g), mask=mask))

    return (vjp(h) - vjp(-h)) / (2 * h)


CASES = {
    "cubic, indefinite": (Cubic(), [3.0, 1.0, -0.5, -2.0]),
    "inverse, separated": (Inverse(), [4.0, 2.0, 1.0, 0.5]),
    "square, separated": (Square(), [4.0, 2.0, 1.0, 0.5]),
    "inverse, triple": (Inverse(), [2.0, 0.7, 0.7, 0.7]),
    "cubic, double": (Cubic(), [2.0, 1.0, 1.0, -0.5]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hvp_is_the_derivative_of_the_exact_vjp(xp, case):
    fn, spectrum = CASES[case]
    rng = np.random.default_rng(8)
    a = spd_with_spectrum(spectrum, rng)
    g, t = _symmetric(rng, 4), _symmetric(rng, 4)
    w, v = _eig(xp, a)
    hvp = to_numpy(svdpi.spectral_map_hvp(w, v, fn, from_numpy(xp, g), from_numpy(xp, t)))
    assert_close(hvp, _hvp_fd(xp, a, fn, g, t), rtol=1e-7)


@pytest.mark.parametrize("fn", [Cubic(), Inverse()])
def test_hvp_equals_double_autograd_through_eigh(fn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    a = spd_with_spectrum([4.0, 2.0, 1.0, 0.5], rng, batch=(2,))
    g, t = _symmetric(rng, 4, (2,)), _symmetric(rng, 4, (2,))
    b = torch.tensor(a, requires_grad=True)
    w_t, v_t = torch.linalg.eigh((b + b.mT) / 2)
    values = w_t**3 if isinstance(fn, Cubic) else 1.0 / w_t
    loss = torch.sum(torch.tensor(g) * ((v_t * values[..., None, :]) @ v_t.mT))
    (grad,) = torch.autograd.grad(loss, b, create_graph=True)
    (expected,) = torch.autograd.grad(torch.sum(grad * torch.tensor(t)), b)
    w, v = svdpi.eig(a)
    assert_close(svdpi.spectral_map_hvp(w, v, fn, g, t), expected.numpy(), rtol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_hvp_is_symmetric_in_grad_and_tangent(xp, case):
    fn, spectrum = CASES[case]
    rng = np.random.default_rng(10)
    w, v = _eig(xp, spd_with_spectrum(spectrum, rng, batch=(2,)))
    g, t = from_numpy(xp, _symmetric(rng, 4, (2,))), from_numpy(xp, _symmetric(rng, 4, (2,)))
    assert_close(
        svdpi.spectral_map_hvp(w, v, fn, g, t), svdpi.spectral_map_hvp(w, v, fn, t, g), rtol=1e-12
    )


def test_hvp_at_a_triple_tie_is_finite_and_basis_free(xp):
    w = np.array([2.0, 0.7, 0.7, 0.7])
    q = np.linalg.qr(np.random.default_rng(11).standard_normal((4, 4)))[0]
    rotation = np.eye(4)
    rotation[1:, 1:] = np.linalg.qr(np.random.default_rng(110).standard_normal((3, 3)))[0]
    rng = np.random.default_rng(12)
    g, t = from_numpy(xp, _symmetric(rng, 4)), from_numpy(xp, _symmetric(rng, 4))
    first, second = (
        to_numpy(svdpi.spectral_map_hvp(from_numpy(xp, w), from_numpy(xp, basis), Inverse(), g, t))
        for basis in (q, q @ rotation)
    )
    assert np.isfinite(first).all()
    np.testing.assert_allclose(second, first, rtol=0, atol=1e-12 * np.abs(first).max())


def test_hvp_with_a_mask_is_the_derivative_of_the_truncated_vjp(xp):
    rng = np.random.default_rng(13)
    a = spd_with_spectrum([4.0, 2.0, 2.0, 0.5], rng)
    g, t = _symmetric(rng, 4), _symmetric(rng, 4)
    mask = from_numpy(xp, np.array([True, True, True, False]), xp.bool)
    w, v = _eig(xp, a)
    for fn in (Cubic(), Inverse()):
        hvp = svdpi.spectral_map_hvp(w, v, fn, from_numpy(xp, g), from_numpy(xp, t), mask=mask)
        assert_close(hvp, _hvp_fd(xp, a, fn, g, t, mask=mask), rtol=1e-6)


def test_hvp_with_negative_eigenvalues_clamped_at_zero(xp):
    """x² on the PSD part: eigenvalues below 0 are constants of the function."""
    rng = np.random.default_rng(14)
    a = spd_with_spectrum([2.0, 1.0, -0.3, -1e-3], rng)
    g, t = _symmetric(rng, 4), _symmetric(rng, 4)
    w, v = _eig(xp, a)
    hvp = svdpi.spectral_map_hvp(w, v, Square(), from_numpy(xp, g), from_numpy(xp, t))
    assert_close(hvp, _hvp_fd(xp, a, Square(), g, t), rtol=1e-6)


def test_hvp_where_the_floor_moves_is_nan_and_at_the_zero_matrix_zero(xp):
    rng = np.random.default_rng(15)
    g, t = from_numpy(xp, _symmetric(rng, 3)), from_numpy(xp, _symmetric(rng, 3))
    w, v = from_numpy(xp, np.array([2.0, 1.0, 0.0])), from_numpy(xp, np.eye(3))
    assert np.isnan(to_numpy(svdpi.spectral_map_hvp(w, v, Inverse(), g, t))).all()
    # Dropped by the mask, the clamped pair no longer matters.
    mask = from_numpy(xp, np.array([True, True, False]), xp.bool)
    assert np.isfinite(to_numpy(svdpi.spectral_map_hvp(w, v, Inverse(), g, t, mask=mask))).all()
    # The zero matrix: every eigenvalue at the constant floor, F constant nearby.
    zero = from_numpy(xp, np.zeros(3))
    np.testing.assert_array_equal(
        to_numpy(svdpi.spectral_map_hvp(zero, v, Inverse(), g, t)), np.zeros((3, 3))
    )


@pytest.mark.parametrize("scale", [1e-90, 1e90])
def test_hvp_of_a_power_scales_with_the_matrix(scale):
    """Units: hvp(c·A) = c^(p−2) hvp(A) for p = −1, however large c^-3 gets."""
    rng = np.random.default_rng(16)
    w, v = svdpi.eig(spd_with_spectrum([4.0, 2.0, 1.0, 0.5], rng))
    g, t = _symmetric(rng, 4), _symmetric(rng, 4)
    reference = svdpi.spectral_map_hvp(w, v, Inverse(), g, t)
    got = svdpi.spectral_map_hvp(w * scale, v, Inverse(), g, t)
    np.testing.assert_allclose(got * scale * scale * scale, reference, rtol=1e-12)
    # Beyond the range the result overflows, entry by entry, to ±inf, and is never NaN.
    with np.errstate(over="ignore"):
        huge = svdpi.spectral_map_hvp(w * scale**2, v, Inverse(), g, t)
    expected = np.inf if scale < 1 else 0.0
    np.testing.assert_array_equal(np.abs(huge), np.full((4, 4), expected))


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
def test_hvp_of_other_methods_raises_naming_the_method(method):
    w, v = svdpi.eig(np.diag([2.0, 1.0]))
    with pytest.raises(ValueError, match=f"method='exact' only, got method='{method}'"):
        svdpi.spectral_map_hvp(w, v, Cubic(), np.eye(2), np.eye(2), method=method)


def test_hvp_shapes_and_empty_inputs(xp):
    w, v = from_numpy(xp, np.zeros((2, 0))), from_numpy(xp, np.zeros((2, 0, 0)))
    assert tuple(svdpi.spectral_map_hvp(w, v, Cubic(), v, v).shape) == (2, 0, 0)
    w, v = _eig(xp, np.diag([2.0, 1.0]))
    with pytest.raises(ValueError, match="tangent must have shape"):
        svdpi.spectral_map_hvp(w, v, Cubic(), v, from_numpy(xp, np.eye(3)))
