"""svdpi.torch.spd.functional: distances, means, geodesics, exponential and logarithm maps.

Oracles: closed forms (commuting and diagonal matrices, the 2 × 2
eigenvalues of ``A⁻¹B`` from a quadratic, the geometric mean ``A # B`` of
two matrices), the metric's invariances (congruence, inversion, symmetry,
the triangle inequality), central differences for gradients, and pyRiemann
where it is installed.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from svdpi.torch.spd import functional as F  # noqa: E402

from ._helpers import assert_close  # noqa: E402


def _spd(batch, n, seed=0, ridge=1e-1, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 2 * n, generator=generator, dtype=torch.float64)
    return scale * (x @ x.mT / (2 * n)) + ridge * torch.eye(n, dtype=torch.float64)


def _scalar(value):
    return torch.tensor(value, dtype=torch.float64)


def _diag(*values):
    return torch.diag(torch.tensor(values, dtype=torch.float64))


def _invertible(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=generator, dtype=torch.float64) + 2 * torch.eye(
        n, dtype=torch.float64
    )


# -- distances -------------------------------------------------------------------------


def test_distances_of_commuting_matrices_have_closed_forms():
    a, b = _diag(1.0, 2.0, 5.0), _diag(3.0, 0.5, 5.0)
    expected = math.sqrt(math.log(3.0) ** 2 + math.log(0.25) ** 2)
    assert_close(F.airm_distance(a, b), _scalar(expected), rtol=1e-15)
    assert_close(F.log_euclidean_distance(a, b), _scalar(expected), rtol=1e-15)
    assert_close(F.airm_distance(a, b, squared=True), _scalar(expected**2), rtol=1e-15)


def test_airm_distance_of_2x2_matrices_from_the_quadratic():
    # λ(A⁻¹B) are the roots of λ² − tr(A⁻¹B) λ + det(B)/det(A).
    a = torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.5, -0.4], [-0.4, 3.0]], dtype=torch.float64)
    t = torch.trace(torch.linalg.solve(a, b)).item()
    d = (torch.linalg.det(b) / torch.linalg.det(a)).item()
    roots = [(t + s * math.sqrt(t * t - 4 * d)) / 2 for s in (1, -1)]
    expected = math.sqrt(sum(math.log(r) ** 2 for r in roots))
    assert_close(F.airm_distance(a, b), _scalar(expected), rtol=1e-14)
    # Log-Euclidean: against the 2 × 2 logarithm through eigh.
    assert F.log_euclidean_distance(a, b) != pytest.approx(expected, rel=1e-3)


def test_airm_distance_invariances():
    a, b, c = _spd((5,), 4, seed=1), _spd((5,), 4, seed=2), _spd((5,), 4, seed=3)
    m = _invertible(4, seed=4)
    d = F.airm_distance(a, b)
    assert_close(F.airm_distance(b, a), d, rtol=1e-13)  # symmetric
    assert_close(F.airm_distance(m @ a @ m.T, m @ b @ m.T), d, rtol=1e-11)  # congruence
    inverse = torch.linalg.inv
    assert_close(F.airm_distance(inverse(a), inverse(b)), d, rtol=1e-12)  # inversion
    assert (F.airm_distance(a, c) <= d + F.airm_distance(b, c) + 1e-12).all()  # triangle
    assert_close(F.airm_distance(a, a), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-7)


def test_log_euclidean_distance_invariances():
    a, b, c = _spd((5,), 4, seed=5), _spd((5,), 4, seed=6), _spd((5,), 4, seed=7)
    q, _ = torch.linalg.qr(_invertible(4, seed=8))
    d = F.log_euclidean_distance(a, b)
    assert_close(F.log_euclidean_distance(b, a), d, rtol=1e-14)
    # Orthogonal congruences (not all congruences) keep it.
    assert_close(F.log_euclidean_distance(q @ a @ q.T, q @ b @ q.T), d, rtol=1e-12)
    assert (F.log_euclidean_distance(a, c) <= d + F.log_euclidean_distance(b, c) + 1e-12).all()
    # The scaling a ↦ s·a moves every log by log s·I: d(sa, sb) = d(a, b) for both metrics.
    assert_close(F.log_euclidean_distance(3 * a, 3 * b), d, rtol=1e-12)


def test_distance_gradients():
    a, b = _spd((), 3, seed=9), _spd((), 3, seed=10)
    for distance in (F.airm_distance, F.log_euclidean_distance):
        a1 = a.clone().requires_grad_()
        (grad,) = torch.autograd.grad(distance(a1, b), a1)
        direction = _spd((), 3, seed=11) - _spd((), 3, seed=12)
        h = 1e-6
        difference = (distance(a + h * direction, b) - distance(a - h * direction, b)) / (2 * h)
        assert_close((grad * direction).sum(), difference, rtol=1e-7)
        # At a = b, d² is smooth with gradient 0; d is not differentiable, and
        # its gradient is a subgradient (bounded, finite).
        a2 = b.clone().requires_grad_()
        (squared,) = torch.autograd.grad(distance(a2, b, squared=True), a2)
        assert squared.abs().max() < 1e-10
        (at_zero,) = torch.autograd.grad(distance(a2, b), a2)
        assert torch.isfinite(at_zero).all()
    # The log-Euclidean difference is exactly 0 there: matrix_norm's subgradient 0.
    b1 = b.clone().requires_grad_()
    (at_zero,) = torch.autograd.grad(F.log_euclidean_distance(b1, b), b1)
    assert torch.equal(at_zero, torch.zeros_like(b))


def test_affine_invariant_gradient_is_finite_where_a_inv_b_has_repeated_eigenvalues():
    # B = 2A: every eigenvalue of A⁻¹B equals 2, a full tie inside logm.
    a = _spd((), 4, seed=13).requires_grad_()
    d = F.airm_distance(a, 2 * a.detach())
    (grad,) = torch.autograd.grad(d, a)
    assert_close(d, _scalar(math.sqrt(4) * math.log(2.0)), rtol=1e-13)
    h = 1e-6
    a0 = a.detach()
    direction = a0
    difference = (
        F.airm_distance(a0 + h * direction, 2 * a0) - F.airm_distance(a0 - h * direction, 2 * a0)
    ) / (2 * h)
    assert torch.isfinite(grad).all()
    assert_close((grad * direction).sum(), difference, rtol=1e-7)


# -- geodesics and the exponential / logarithm maps ------------------------------------


def test_geodesics_of_commuting_matrices():
    a, b = _diag(1.0, 4.0), _diag(9.0, 1.0)
    for geodesic in (F.airm_geodesic, F.log_euclidean_geodesic):
        for t in (0.0, 0.25, 0.5, 1.0, 1.5, -0.5):
            expected = _diag(9.0**t, 4.0 ** (1 - t))
            assert_close(geodesic(a, b, t), expected, rtol=1e-14)


def test_airm_geodesic_midpoint_is_the_geometric_mean_and_moves_at_constant_speed():
    a, b = _spd((3,), 4, seed=14), _spd((3,), 4, seed=15)
    middle = F.airm_geodesic(a, b, 0.5)
    # A # B is the unique SPD solution of X A⁻¹ X = B.
    assert_close(middle @ torch.linalg.solve(a, middle), b, rtol=1e-12)
    d = F.airm_distance(a, b)
    for t in (0.2, 0.7):
        point = F.airm_geodesic(a, b, t)
        assert_close(F.airm_distance(a, point), t * d, rtol=1e-11)
        assert_close(F.airm_distance(point, b), (1 - t) * d, rtol=1e-11)
    assert_close(F.airm_geodesic(a, b, 0.0), a, rtol=1e-13)
    assert_close(F.airm_geodesic(a, b, 1.0), b, rtol=1e-13)


def test_geodesics_with_a_tensor_t_are_differentiable_in_t():
    a, b = _spd((2,), 3, seed=16), _spd((2,), 3, seed=17)
    for geodesic in (F.airm_geodesic, F.log_euclidean_geodesic):
        t = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
        points = geodesic(a, b, t)
        assert_close(points[0], geodesic(a[0], b[0], 0.3), rtol=1e-12)
        assert_close(points[1], geodesic(a[1], b[1], 0.6), rtol=1e-12)
        (grad,) = torch.autograd.grad(points.sum(), t)
        h = 1e-6
        difference = (geodesic(a, b, t.detach() + h) - geodesic(a, b, t.detach() - h)).sum(
            (-2, -1)
        ) / (2 * h)
        assert_close(grad, difference, rtol=1e-7)


def test_log_and_exp_maps_are_inverse_and_have_the_geodesic_length():
    p, x = _spd((3,), 4, seed=18), _spd((3,), 4, seed=19)
    v = F.log_map_airm(p, x)
    assert_close(v, v.mT, rtol=0)
    assert_close(F.exp_map_airm(p, v), x, rtol=1e-12)
    # ‖V‖ in the metric at P: ‖P^{-1/2} V P^{-1/2}‖_F = d(P, X).
    w, u = torch.linalg.eigh(p)
    s = (u * w.rsqrt().unsqueeze(-2)) @ u.mT
    assert_close(torch.linalg.matrix_norm(s @ v @ s), F.airm_distance(p, x), rtol=1e-12)
    # At the identity both are the matrix logarithm and exponential.
    eye = torch.eye(4, dtype=torch.float64)
    assert_close(F.log_map_airm(eye, x), F.logeig(x), rtol=1e-13)
    assert_close(F.exp_map_airm(eye, F.logeig(x)), x, rtol=1e-13)
    # The geodesic: exp_P(t log_P(X)).
    assert_close(F.exp_map_airm(p, 0.3 * v), F.airm_geodesic(p, x, 0.3), rtol=1e-12)


# -- means -------------------------------------------------------------------------------


def test_means_of_commuting_matrices_are_geometric_means():
    x = torch.stack([_diag(1.0, 8.0, 2.0), _diag(4.0, 2.0, 2.0), _diag(2.0, 0.5, 2.0)])
    expected = _diag(2.0, 2.0, 2.0)
    assert_close(F.log_euclidean_mean(x), expected, rtol=1e-14)
    assert_close(F.karcher_mean(x), expected, rtol=1e-13)
    weights = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    assert_close(F.karcher_mean(x, weights=weights), _diag(2.0, 4.0, 2.0), rtol=1e-13)
    assert_close(F.log_euclidean_mean(x, weights=weights), _diag(2.0, 4.0, 2.0), rtol=1e-14)


def test_karcher_mean_of_two_matrices_is_the_geometric_mean():
    a, b = _spd((), 4, seed=20), _spd((), 4, seed=21)
    mean = F.karcher_mean(torch.stack([a, b]), num_steps=20)
    assert_close(mean, F.airm_geodesic(a, b, 0.5), rtol=1e-11)


def test_karcher_mean_is_a_stationary_point_and_congruence_equivariant():
    x = _spd((12,), 5, seed=22, ridge=0.2)
    mean = F.karcher_mean(x)
    # The Riemannian gradient of Σ d²(G, X_i) vanishes: Σ log(G^{-1/2} X_i G^{-1/2}) = 0.
    w, u = torch.linalg.eigh(mean)
    s = (u * w.rsqrt().unsqueeze(-2)) @ u.mT
    residual = F.logeig(s @ x @ s).sum(0)
    assert residual.abs().max() < 1e-10
    m = _invertible(5, seed=23)
    assert_close(F.karcher_mean(m @ x @ m.T), m @ mean @ m.T, rtol=1e-9)
    # The log-Euclidean mean is close but not equal for non-commuting matrices.
    assert not torch.allclose(F.log_euclidean_mean(x), mean, rtol=1e-6)


def test_karcher_mean_along_another_dimension_and_from_an_init():
    x = _spd((3, 6), 3, seed=24)
    per_row = F.karcher_mean(x, dim=1, num_steps=30)
    assert per_row.shape == (3, 3, 3)
    for i in range(3):
        assert_close(per_row[i], F.karcher_mean(x[i], num_steps=30), rtol=1e-12)
    assert_close(F.karcher_mean(x, dim=-1, num_steps=30), per_row, rtol=0)
    start = F.log_euclidean_mean(x[0])
    assert_close(F.karcher_mean(x[0], init=start, num_steps=30), per_row[0], rtol=1e-12)
    assert_close(F.karcher_mean(x[0], num_steps=0), x[0].mean(0), rtol=1e-15)


def test_karcher_mean_gradient_matches_central_differences():
    x = _spd((4,), 3, seed=25)
    g = _spd((), 3, seed=26)
    x1 = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((F.karcher_mean(x1, num_steps=3) * g).sum(), x1)
    direction = _spd((4,), 3, seed=27) - _spd((4,), 3, seed=28)
    h = 1e-6

    def value(y):
        return (F.karcher_mean(y, num_steps=3) * g).sum()

    difference = (value(x + h * direction) - value(x - h * direction)) / (2 * h)
    assert_close((grad * direction).sum(), difference, rtol=1e-7)


def test_karcher_mean_equals_pyriemann():
    pyriemann_mean = pytest.importorskip("pyriemann.utils.mean")
    x = _spd((10,), 4, seed=29)
    expected = pyriemann_mean.mean_riemann(x.numpy(), tol=1e-14, maxiter=200)
    assert_close(F.karcher_mean(x, num_steps=20), torch.as_tensor(expected), rtol=1e-10)
    expected = pyriemann_mean.mean_logeuclid(x.numpy())
    assert_close(F.log_euclidean_mean(x), torch.as_tensor(expected), rtol=1e-12)


def test_distances_equal_pyriemann():
    distance = pytest.importorskip("pyriemann.utils.distance")
    a, b = _spd((), 5, seed=30), _spd((), 5, seed=31)
    expected = distance.distance_riemann(a.numpy(), b.numpy())
    assert_close(F.airm_distance(a, b), _scalar(expected), rtol=1e-12)
    expected = distance.distance_logeuclid(a.numpy(), b.numpy())
    assert_close(F.log_euclidean_distance(a, b), _scalar(expected), rtol=1e-12)


# -- precision, checks and errors --------------------------------------------------------


def test_float32_half_precision_and_autocast():
    a, b = _spd((3,), 4, seed=32), _spd((3,), 4, seed=33)
    expected = F.airm_distance(a, b)
    assert_close(F.airm_distance(a.float(), b.float()), expected, rtol=1e-5)
    half = F.airm_distance(a.to(torch.bfloat16), b.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.karcher_mean(a.float()).dtype == torch.float32


def test_bad_input_raises_with_the_argument_named():
    a = _spd((2,), 3, seed=34)
    bad = a.clone()
    bad[0] = _diag(1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="b must be symmetric positive definite"):
        F.airm_distance(a, bad)
    with pytest.raises(ValueError, match="x must be symmetric positive definite"):
        F.karcher_mean(bad)
    nan = a.clone()
    nan[1, 0, 0] = math.nan
    with pytest.raises(ValueError, match="a must contain only finite values"):
        F.log_euclidean_distance(nan, a)
    with pytest.raises(ValueError, match="tangent must contain only finite values"):
        F.exp_map_airm(a, nan)
    # A symmetric, non-SPD tangent vector is fine.
    assert torch.isfinite(F.exp_map_airm(a, bad)).all()
    with pytest.raises(ValueError, match="no matrices to average"):
        F.karcher_mean(torch.zeros(0, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim must index a batch dimension"):
        F.log_euclidean_mean(a, dim=1)
    with pytest.raises(TypeError, match="dim must be an integer"):
        F.karcher_mean(a, dim=0.0)
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        F.karcher_mean(a, weights=torch.ones(3))
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        F.karcher_mean(a, num_steps=-1)
    with pytest.raises(ValueError, match=r"init must have shape \(3, 3\)"):
        F.karcher_mean(a, init=a)
    with pytest.raises(ValueError, match="t must be finite"):
        F.airm_geodesic(a, a, math.inf)
    with pytest.raises(TypeError, match="t must be a real number or a tensor"):
        F.log_euclidean_geodesic(a, a, "0.5")
    with pytest.raises(ValueError, match="square in its last two dimensions"):
        F.airm_distance(torch.zeros(2, 3), torch.zeros(2, 3))


def test_empty_batches_give_empty_results():
    empty = torch.zeros(0, 3, 3, dtype=torch.float64)
    assert F.airm_distance(empty, empty).shape == (0,)
    assert F.log_euclidean_distance(empty, empty).shape == (0,)
    assert F.airm_geodesic(empty, empty, 0.5).shape == (0, 3, 3)
    assert F.log_map_airm(empty, empty).shape == (0, 3, 3)
    # A mean over an empty dimension is undefined (see the errors test); over a
    # non-empty one of an empty batch it is empty.
    assert F.karcher_mean(torch.zeros(2, 0, 3, 3, dtype=torch.float64)).shape == (0, 3, 3)
