"""svdpi.torch.spd.SPDBatchNorm: Riemannian batch normalisation, train/eval as BatchNorm.

Oracles: the Karcher mean (its stationarity, closed forms for commuting
matrices), the geodesic running mean written out with eigh, central
differences, and nn.BatchNorm1d's behaviour for the conventions.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from svdpi.torch import spd  # noqa: E402
from svdpi.torch.spd import functional as F  # noqa: E402

from ._helpers import assert_close  # noqa: E402


def _spd(batch, n, seed=0, ridge=1e-1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 2 * n, generator=generator, dtype=torch.float64)
    return x @ x.mT / (2 * n) + ridge * torch.eye(n, dtype=torch.float64)


def _power(x, p):
    w, v = torch.linalg.eigh(x)
    return (v * (w**p).unsqueeze(-2)) @ v.mT


def _eye(n):
    return torch.eye(n, dtype=torch.float64)


def test_training_output_has_the_identity_as_its_karcher_mean():
    layer = spd.SPDBatchNorm(4, karcher_steps=30, dtype=torch.float64)
    x = _spd((16,), 4, seed=1)
    y = layer(x)
    assert y.shape == x.shape
    assert torch.equal(y, y.mT)
    assert_close(F.karcher_mean(y, num_steps=30), _eye(4), rtol=0, atol=1e-12)
    # It is the congruence by G^{-1/2}, G the batch mean.
    g = F.karcher_mean(x, num_steps=30)
    s = _power(g, -0.5)
    assert_close(y, s @ x @ s, rtol=1e-11)


def test_one_karcher_step_from_the_arithmetic_mean():
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)  # karcher_steps=1, Brooks et al.
    x = _spd((8,), 3, seed=2)
    mean = x.mean(0)
    r, s = _power(mean, 0.5), _power(mean, -0.5)
    w, v = torch.linalg.eigh(s @ x @ s)
    step = ((v * torch.log(w).unsqueeze(-2)) @ v.mT).mean(0)
    w, v = torch.linalg.eigh(step)
    g = r @ ((v * torch.exp(w)) @ v.T) @ r
    t = _power(g, -0.5)
    assert_close(layer(x), t @ x @ t, rtol=1e-12)
    assert_close(layer.running_mean, _geodesic(_eye(3), g, 0.1), rtol=1e-12)


def _geodesic(a, b, t):
    r, s = _power(a, 0.5), _power(a, -0.5)
    return r @ _power(s @ b @ s, t) @ r


def test_running_mean_follows_the_geodesic_and_eval_uses_it():
    layer = spd.SPDBatchNorm(3, momentum=0.3, karcher_steps=20, dtype=torch.float64)
    running = _eye(3)
    for seed in range(3):
        x = _spd((10,), 3, seed=10 + seed, ridge=0.5)
        layer(x)
        running = _geodesic(running, F.karcher_mean(x, num_steps=20), 0.3)
        assert_close(layer.running_mean, running, rtol=1e-11)
    assert layer.num_batches_tracked.item() == 3
    layer.eval()
    x = _spd((5,), 3, seed=20)
    s = _power(running, -0.5)
    assert_close(layer(x), s @ x @ s, rtol=1e-11)
    assert layer.num_batches_tracked.item() == 3  # eval does not count


def test_momentum_none_is_a_cumulative_geodesic_average():
    layer = spd.SPDBatchNorm(2, momentum=None, karcher_steps=20, dtype=torch.float64)
    means = []
    for seed in range(3):
        x = _spd((6,), 2, seed=30 + seed)
        layer(x)
        means.append(F.karcher_mean(x, num_steps=20))
    # Steps 1, 1/2, 1/3: the first batch's mean, then the running geodesic average.
    expected = _geodesic(_geodesic(means[0], means[1], 1 / 2), means[2], 1 / 3)
    assert_close(layer.running_mean, expected, rtol=1e-11)


def test_bias_moves_the_mean_to_b():
    layer = spd.SPDBatchNorm(3, karcher_steps=30, dtype=torch.float64)
    b = _spd((), 3, seed=40)
    with torch.no_grad():
        layer.log_bias.copy_(F.logeig(b))
    y = layer(_spd((12,), 3, seed=41))
    assert_close(F.karcher_mean(y, num_steps=30), b, rtol=1e-11)


def test_gradients_match_central_differences():
    layer = spd.SPDBatchNorm(3, karcher_steps=2, dtype=torch.float64)
    with torch.no_grad():
        layer.log_bias.copy_(0.3 * F.logeig(_spd((), 3, seed=50)))
    x = _spd((5,), 3, seed=51)
    g = torch.randn(5, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(52))
    layer.track_running_stats = False  # the same function at every call

    def value(xx):
        return (layer(xx) * g).sum()

    x1 = x.clone().requires_grad_()
    loss = value(x1)
    grad_x, grad_bias = torch.autograd.grad(loss, [x1, layer.log_bias])
    h = 1e-6
    direction = _spd((5,), 3, seed=53) - _spd((5,), 3, seed=54)
    difference = (value(x + h * direction) - value(x - h * direction)) / (2 * h)
    assert_close((grad_x * direction).sum(), difference, rtol=1e-7)
    d_bias = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(55))
    with torch.no_grad():
        layer.log_bias.add_(h * d_bias)
        plus = value(x)
        layer.log_bias.sub_(2 * h * d_bias)
        minus = value(x)
        layer.log_bias.add_(h * d_bias)
    assert_close((grad_bias * d_bias).sum(), (plus - minus) / (2 * h), rtol=1e-7)


def test_gradients_at_a_batch_of_equal_matrices_are_finite():
    # Every matrix equal: G^{-1/2} X G^{-1/2} = I, all eigenvalues tied in logm.
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)
    x = _spd((), 3, seed=56).expand(4, 3, 3).clone().requires_grad_()
    y = layer(x)
    assert_close(y, _eye(3).expand(4, 3, 3), rtol=0, atol=1e-13)
    g = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(59))
    (y * g).sum().backward()
    assert torch.isfinite(x.grad).all()
    # The map is smooth there (functions of matrices are, at ties too): central
    # differences along a direction that leaves the batch unequal.
    base = x.detach()
    direction = _spd((4,), 3, seed=57) - _spd((4,), 3, seed=58)
    h = 1e-6
    layer.track_running_stats = False
    plus = (layer(base + h * direction) * g).sum()
    minus = (layer(base - h * direction) * g).sum()
    assert_close((x.grad * direction).sum(), (plus - minus) / (2 * h), rtol=1e-7)


def test_channels_are_normalised_separately():
    layer = spd.SPDBatchNorm(3, channels=2, karcher_steps=20, dtype=torch.float64)
    assert layer.running_mean.shape == (2, 3, 3)
    assert layer.log_bias.shape == (2, 3, 3)
    x = _spd((8, 2), 3, seed=60)
    y = layer(x)
    for c in range(2):
        single = spd.SPDBatchNorm(3, karcher_steps=20, dtype=torch.float64)
        assert_close(y[:, c], single(x[:, c]), rtol=1e-12)
        assert_close(layer.running_mean[c], single.running_mean, rtol=1e-12)


def test_track_running_stats_false_uses_the_batch_in_eval():
    layer = spd.SPDBatchNorm(3, track_running_stats=False, dtype=torch.float64)
    assert layer.running_mean is None
    assert layer.num_batches_tracked is None
    x = _spd((6,), 3, seed=61)
    train = layer(x)
    layer.eval()
    assert_close(layer(x), train, rtol=0)


def test_affine_false_and_state_dict():
    layer = spd.SPDBatchNorm(3, affine=False, dtype=torch.float64)
    assert layer.log_bias is None
    assert list(layer.state_dict()) == ["running_mean", "num_batches_tracked"]
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)
    assert list(layer.state_dict()) == ["log_bias", "running_mean", "num_batches_tracked"]
    layer(_spd((4,), 3, seed=62))
    other = spd.SPDBatchNorm(3, dtype=torch.float64)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.running_mean, layer.running_mean)
    assert other.num_batches_tracked.item() == 1
    state = layer.state_dict()
    del state["num_batches_tracked"]  # as BatchNorm: loads with 0
    other.load_state_dict(state)
    assert other.num_batches_tracked.item() == 0


def test_reset_running_stats_and_parameters():
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)
    with torch.no_grad():
        layer.log_bias.fill_(0.1)
    layer(_spd((4,), 3, seed=63))
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, _eye(3))
    assert layer.num_batches_tracked.item() == 0
    assert layer.log_bias.abs().max() > 0
    layer.reset_parameters()
    assert torch.equal(layer.log_bias, torch.zeros(3, 3, dtype=torch.float64))


def test_batchnorm_conventions_for_tiny_and_empty_batches():
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected more than 1 matrix per batch when training"):
        layer(_spd((1,), 3))
    empty = torch.zeros(0, 3, 3, dtype=torch.float64, requires_grad=True)
    out = layer(empty)
    assert out.shape == (0, 3, 3)
    out.sum().backward()
    assert layer.num_batches_tracked.item() == 1  # counted, as nn.BatchNorm1d counts it
    assert torch.equal(layer.log_bias.grad, torch.zeros(3, 3, dtype=torch.float64))
    reference = nn.BatchNorm1d(3)
    reference(torch.zeros(0, 3))
    assert reference.num_batches_tracked.item() == 1
    layer.eval()
    assert layer(_spd((1,), 3)).shape == (1, 3, 3)  # one matrix is fine in eval


def test_autocast_half_precision_and_meta():
    layer = spd.SPDBatchNorm(3)
    x = _spd((6,), 3, seed=64).float()
    expected = spd.SPDBatchNorm(3)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32
    assert_close(y, expected, rtol=0)
    assert spd.SPDBatchNorm(3)(x.to(torch.bfloat16)).dtype == torch.bfloat16
    meta = spd.SPDBatchNorm(3, device="meta")
    assert meta.running_mean.device.type == "meta"
    out = meta(torch.empty(5, 3, 3, device="meta"))
    assert out.shape == (5, 3, 3)
    assert out.device.type == "meta"


def test_repr_and_bad_options():
    layer = spd.SPDBatchNorm(4, channels=2)
    assert repr(layer) == (
        "SPDBatchNorm(4, momentum=0.1, affine=True, track_running_stats=True, channels=2, "
        "karcher_steps=1, method='exact', check_finite=True, check_spd=True)"
    )
    for kwargs, error, message in [
        ({"momentum": 1.5}, ValueError, "momentum must be a finite number >= 0 and <= 1"),
        ({"momentum": math.nan}, ValueError, "momentum must be a finite number"),
        ({"affine": 1}, TypeError, "affine must be True or False"),
        ({"karcher_steps": -1}, ValueError, "karcher_steps must be >= 0"),
        ({"channels": 0}, ValueError, "channels must be >= 1"),
        ({"method": "svd"}, ValueError, "method must be one of"),
        ({"check_spd": None}, TypeError, "check_spd must be True or False"),
    ]:
        with pytest.raises(error, match=message):
            spd.SPDBatchNorm(4, **kwargs)
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        spd.SPDBatchNorm(0)


def test_bad_input():
    layer = spd.SPDBatchNorm(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 3\)"):
        layer(_spd((2, 2), 3))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        layer(_spd((4,), 4))
    x = _spd((4,), 3)
    x[1] = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"SPDBatchNorm input must be symmetric positive"):
        layer(x)
    x[1, 0, 0] = math.inf
    with pytest.raises(ValueError, match="must contain only finite values"):
        layer(x)
    assert layer.num_batches_tracked.item() == 0  # nothing was updated


def test_functional_call_and_vmap_over_an_ensemble():
    layers = [spd.SPDBatchNorm(3, dtype=torch.float64) for _ in range(2)]
    params, buffers = torch.func.stack_module_state(layers)
    x = _spd((2, 6), 3, seed=70)

    def run(p, b, xx):
        return torch.func.functional_call(layers[0], (p, b), (xx,))

    y = torch.func.vmap(run)(params, buffers, x)
    for i in range(2):
        assert_close(y[i], spd.SPDBatchNorm(3, dtype=torch.float64)(x[i]), rtol=1e-12)
