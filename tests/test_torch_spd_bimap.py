"""svdpi.torch.spd.BiMap (Stiefel weight) and the norm-preserving vectorisation."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from svdpi.torch import spd  # noqa: E402
from svdpi.torch.spd import functional as F  # noqa: E402

from ._helpers import assert_close  # noqa: E402


def _spd(batch, n, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 2 * n, generator=generator, dtype=torch.float64)
    return (x @ x.mT / (2 * n) + 1e-2 * torch.eye(n, dtype=torch.float64)).to(dtype)


def _orthogonality_error(w):
    k = w.shape[-1]
    return (w.mT @ w - torch.eye(k, dtype=w.dtype)).abs().max().item()


# -- vectorisation ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_vectorize_keeps_the_frobenius_norm_and_inner_products(n):
    a, b = _spd((3,), n, seed=1), _spd((3,), n, seed=2)
    va, vb = F.vectorize(a), F.vectorize(b)
    assert va.shape == (3, n * (n + 1) // 2)
    assert_close(va.norm(dim=-1), torch.linalg.matrix_norm(a), rtol=1e-15)
    assert_close((va * vb).sum(-1), (a * b).sum((-2, -1)), rtol=1e-14)


def test_vectorize_order_and_exact_scaling():
    x = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    x = x + x.T
    v = F.vectorize(x)
    root2 = math.sqrt(2.0)  # in float64, not rounded through float32
    expected = [x[0, 0], root2 * x[0, 1], root2 * x[0, 2], x[1, 1], root2 * x[1, 2], x[2, 2]]
    assert v.tolist() == [float(e) for e in expected]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unvectorize_inverts_vectorize(dtype):
    x = _spd((2, 4), 5, seed=3, dtype=dtype)
    back = F.unvectorize(F.vectorize(x))
    assert back.dtype == dtype
    assert torch.equal(back, back.mT)
    assert_close(back, x, rtol=4 * torch.finfo(dtype).eps)
    v = torch.randn(7, 15, dtype=dtype)
    assert_close(F.vectorize(F.unvectorize(v)), v, rtol=4 * torch.finfo(dtype).eps)


def test_vectorize_modules_and_gradients():
    x = _spd((2,), 3, seed=4).requires_grad_()
    v = spd.Vectorize()(x)
    (g,) = torch.autograd.grad(v.sum(), x)
    # Only the upper triangle is read: ones on the diagonal, √2 above it.
    expected = torch.triu(torch.full((3, 3), math.sqrt(2.0), dtype=torch.float64), 1)
    assert_close(g, (expected + torch.eye(3, dtype=torch.float64)).expand(2, 3, 3), rtol=0)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spd.Unvectorize(), (w,))


def test_vectorize_under_vmap_and_on_meta():
    x = _spd((4,), 3, seed=5)
    assert_close(torch.func.vmap(F.vectorize)(x), F.vectorize(x), rtol=0)
    assert_close(torch.func.vmap(F.unvectorize)(F.vectorize(x)), x, rtol=1e-15)
    meta = torch.empty(2, 4, 4, device="meta")
    assert F.vectorize(meta).shape == (2, 10)
    assert F.unvectorize(torch.empty(2, 10, device="meta")).shape == (2, 4, 4)


def test_vectorize_bad_input():
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        F.vectorize([[1.0]])
    with pytest.raises(TypeError, match="real floating"):
        F.vectorize(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n, n\)"):
        F.vectorize(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"n\(n\+1\)/2"):
        F.unvectorize(torch.zeros(4))
    with pytest.raises(ValueError, match="at least one dimension"):
        F.unvectorize(torch.tensor(1.0))


# -- BiMap -----------------------------------------------------------------------------


def test_bimap_is_the_congruence_with_an_orthonormal_weight():
    torch.manual_seed(0)
    layer = spd.BiMap(6, 4, dtype=torch.float64)
    w = layer.weight
    assert w.shape == (6, 4)
    assert _orthogonality_error(w) < 1e-14
    x = _spd((3,), 6)
    y = layer(x)
    expected = w.mT @ x @ w
    assert_close(y, expected, rtol=1e-14)
    assert torch.equal(y, y.mT)
    # Orthonormal columns: the eigenvalues of WᵀXW interlace X's, so SPD stays SPD.
    assert (torch.linalg.eigvalsh(y) >= torch.linalg.eigvalsh(x)[..., :1] * (1 - 1e-12)).all()


def test_bimap_reset_parameters_draws_a_new_orthonormal_weight():
    torch.manual_seed(0)
    layer = spd.BiMap(5, 3, dtype=torch.float64)
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    after = layer.weight.detach()
    assert not torch.allclose(before, after)
    assert _orthogonality_error(after) < 1e-14


def test_bimap_square_weight_and_k_equal_n():
    layer = spd.BiMap(4, 4, dtype=torch.float64)
    w = layer.weight
    assert_close(w @ w.mT, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_weight_stays_orthonormal_through_optimiser_steps(dtype, optimiser):
    torch.manual_seed(1)
    layer = spd.BiMap(8, 3, dtype=dtype)
    x = _spd((16,), 8, seed=6, dtype=dtype)
    # Reachable: the congruence by another orthonormal frame.
    w_star = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64))[0].to(dtype)
    target = w_star.mT @ x @ w_star
    params = list(layer.parameters())
    opt = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9)
        if optimiser == "sgd"
        else torch.optim.Adam(params, lr=0.05)
    )
    losses, worst = [], 0.0
    for _ in range(100):
        loss = (layer(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        worst = max(worst, _orthogonality_error(layer.weight))
    assert worst < 20 * torch.finfo(dtype).eps
    assert losses[-1] < 0.2 * losses[0]
    # What the optimiser moved is the free parameter, no longer orthonormal.
    assert _orthogonality_error(layer.free_weight) > 1e3 * torch.finfo(dtype).eps


def test_qr_parametrization_is_continuous_and_has_w_as_fixed_point():
    torch.manual_seed(2)
    layer = spd.BiMap(5, 3, dtype=torch.float64)
    other = spd.BiMap(5, 3, dtype=torch.float64)
    w = other.weight.detach().clone()
    # Assigning an orthonormal weight stores it, and reading gives it back to round-off.
    layer.weight = w
    assert torch.equal(layer.free_weight.detach(), w)
    assert_close(layer.weight, w, rtol=0, atol=1e-15)
    # The sign fix: Q·sign(diag R) is continuous, a small step of P moves W a little
    # (without it, Householder QR may flip a column's sign).
    with torch.no_grad():
        layer.free_weight.add_(1e-7 * torch.randn_like(w))
    assert (layer.weight - w).abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \(5, 3\)"):
        layer.weight = torch.zeros(3, 5)


def test_bimap_gradient_matches_finite_differences():
    torch.manual_seed(3)
    layer = spd.BiMap(5, 3, dtype=torch.float64)
    x = _spd((2,), 5, seed=8)
    g = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    p = layer.free_weight

    def loss():
        return (layer(x) * g).sum()

    (grad,) = torch.autograd.grad(loss(), p)
    direction = torch.randn_like(p)
    h = 1e-6
    with torch.no_grad():
        p.add_(h * direction)
        plus = loss()
        p.sub_(2 * h * direction)
        minus = loss()
        p.add_(h * direction)
    assert_close((grad * direction).sum(), (plus - minus) / (2 * h), rtol=1e-7)


def test_bimap_channels_map_each_channel_with_its_own_weight():
    torch.manual_seed(4)
    layer = spd.BiMap(5, 2, channels=3, dtype=torch.float64)
    assert layer.weight.shape == (3, 5, 2)
    for c in range(3):
        assert _orthogonality_error(layer.weight[c]) < 1e-14
    x = _spd((4, 3), 5, seed=10)
    y = layer(x)
    assert y.shape == (4, 3, 2, 2)
    for c in range(3):
        w = layer.weight[c]
        assert_close(y[:, c], w.mT @ x[:, c] @ w, rtol=1e-14)


def test_bimap_any_leading_dimensions_and_empty_batch():
    layer = spd.BiMap(4, 2, dtype=torch.float64)
    assert layer(_spd((2, 3), 4)).shape == (2, 3, 2, 2)
    assert layer(_spd((), 4)).shape == (2, 2)
    empty = torch.zeros(0, 4, 4, dtype=torch.float64, requires_grad=True)
    out = layer(empty)
    assert out.shape == (0, 2, 2)
    out.sum().backward()
    assert empty.grad.shape == (0, 4, 4)


def test_bimap_autocast_and_half_input_compute_in_float32():
    layer = spd.BiMap(6, 3)
    x = _spd((2,), 6, dtype=torch.float32)
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32
    assert_close(y, expected, rtol=0)
    y16 = layer(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    assert_close(y16.float(), expected, rtol=2e-2)


def test_bimap_float64_input_with_a_float32_weight():
    layer = spd.BiMap(4, 2)
    x = _spd((2,), 4)
    y = layer(x)
    assert y.dtype == torch.float64
    w = layer.weight.double()
    assert_close(y, w.mT @ x @ w, rtol=1e-14)


def test_bimap_meta_device_and_factory_kwargs():
    layer = spd.BiMap(6, 3, device="meta")
    assert layer.free_weight.device.type == "meta"
    out = layer(torch.empty(5, 6, 6, device="meta"))
    assert out.shape == (5, 3, 3)
    assert out.device.type == "meta"
    layer = spd.BiMap(6, 3, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64


def test_bimap_state_dict_pickle_and_repr(tmp_path):
    torch.manual_seed(5)
    a = spd.BiMap(6, 3, channels=2, dtype=torch.float64)
    b = spd.BiMap(6, 3, channels=2, dtype=torch.float64)
    assert list(a.state_dict()) == ["free_weight"]
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weight, b.weight)
    torch.save(a, tmp_path / "bimap.pt")  # a plain module: pickles whole
    c = torch.load(tmp_path / "bimap.pt", weights_only=False)
    assert type(c) is spd.BiMap
    assert torch.equal(c.weight, a.weight)
    assert repr(a) == "BiMap(6, 3, channels=2)"
    assert repr(spd.BiMap(3, 2)) == "BiMap(3, 2)"


def test_bimap_bad_arguments_and_input():
    with pytest.raises(ValueError, match=r"out_features \(5\) must be at most in_features \(4\)"):
        spd.BiMap(4, 5)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        spd.BiMap(0, 0)
    with pytest.raises(TypeError, match="out_features must be an integer"):
        spd.BiMap(4, 2.0)
    with pytest.raises(TypeError, match="channels must be an integer"):
        spd.BiMap(4, 2, channels="3")
    layer = spd.BiMap(4, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 4, 4\)"):
        layer(torch.zeros(3, 5, 5))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor"):
        layer([[1.0]])
    with pytest.raises(TypeError, match="real floating"):
        layer(torch.zeros(2, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 4, 4\)"):
        spd.BiMap(4, 2, channels=3)(torch.zeros(2, 2, 4, 4))
