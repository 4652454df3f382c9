"""ZCAWhitening and PCADenoising against the paper's layers written literally, and as modules."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402

from ._helpers import assert_close, spd_with_spectrum  # noqa: E402
from .paper_layers import paper_pca, paper_zca  # noqa: E402

SHAPES = [(40, 8), (12, 8, 5), (6, 8, 3, 4), (3, 8, 2, 3, 4)]


def _input(shape, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    c = shape[1]
    # Correlated channels with a mean far from zero (centring must be exact).
    mixing = torch.randn(c, c, generator=generator, dtype=dtype)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    x = torch.einsum("dc,nc...->nd...", mixing, x)
    return x + 5.0 * torch.randn(
        (1, c) + (1,) * (len(shape) - 2), generator=generator, dtype=dtype
    )


def _randomise_affine(layer):
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    return layer


def _gradients(fn, x, weight, bias, grad_out):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    grads = torch.autograd.grad(y, (x, weight, bias), grad_out)
    return y.detach(), grads


def _group_covariances(y, num_groups):
    n, c = y.shape[:2]
    channels = y.reshape(n, c, -1).transpose(0, 1).reshape(num_groups, c // num_groups, -1)
    centred = channels - channels.mean(dim=-1, keepdim=True)
    return centred @ centred.mT / centred.shape[-1]


# -- against the paper's layer --------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("num_groups", [1, 2, 8])
def test_zca_matches_the_papers_layer(shape, num_groups):
    layer = _randomise_affine(
        svdpi.torch.ZCAWhitening(8, num_groups=num_groups, dtype=torch.float64)
    )
    x = _input(shape, seed=num_groups)
    grad_out = torch.randn(shape, dtype=torch.float64)
    y, grads = _gradients(layer, x, layer.weight, layer.bias, grad_out)
    y_ref, grads_ref = _gradients(
        lambda t: paper_zca(t, num_groups, layer.eps, layer.weight, layer.bias)[0],
        x,
        layer.weight,
        layer.bias,
        grad_out,
    )
    assert_close(y, y_ref, rtol=1e-8)
    for name, g, g_ref in zip(("input", "weight", "bias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, rtol=1e-8, err_msg=name)
    # The running statistics are the paper's batch statistics after one step (momentum 0.1).
    _, mean_ref, whitening_ref = paper_zca(x, num_groups, layer.eps)
    assert_close(layer.running_mean, 0.1 * mean_ref, rtol=1e-10)
    eye = torch.eye(8 // num_groups, dtype=torch.float64)
    assert_close(layer.running_whitening, 0.9 * eye + 0.1 * whitening_ref, rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize(("num_groups", "n_components"), [(1, 3), (2, 2), (2, 4)])
def test_pca_matches_the_papers_layer(shape, num_groups, n_components):
    layer = _randomise_affine(
        svdpi.torch.PCADenoising(
            8, n_components=n_components, num_groups=num_groups, dtype=torch.float64
        )
    )
    x = _input(shape, seed=3)
    grad_out = torch.randn(shape, dtype=torch.float64)
    y, grads = _gradients(layer, x, layer.weight, layer.bias, grad_out)
    y_ref, grads_ref = _gradients(
        lambda t: paper_pca(t, num_groups, n_components, layer.eps, layer.weight, layer.bias),
        x,
        layer.weight,
        layer.bias,
        grad_out,
    )
    assert_close(y, y_ref, rtol=1e-8)
    for name, g, g_ref in zip(("input", "weight", "bias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, rtol=1e-8, err_msg=name)


# -- what the output is ---------------------------------------------------------------


@pytest.mark.parametrize("num_groups", [1, 4])
def test_zca_output_is_white_per_group(num_groups):
    layer = svdpi.torch.ZCAWhitening(8, num_groups=num_groups, eps=1e-12, dtype=torch.float64)
    y = layer(_input((64, 8, 3, 3)))
    cov = _group_covariances(y, num_groups)
    assert_close(cov, torch.eye(8 // num_groups, dtype=torch.float64).expand_as(cov), atol=1e-8)
    # ZCA (not PCA) whitening: W is symmetric positive definite.
    w = layer.running_whitening
    assert_close(w, w.mT, atol=1e-12)


def test_pca_output_has_the_requested_rank():
    layer = svdpi.torch.PCADenoising(8, n_components=3, num_groups=2, dtype=torch.float64)
    y = layer(_input((64, 8, 3)))
    ranks = torch.linalg.matrix_rank(_group_covariances(y, 2), hermitian=True)
    assert ranks.tolist() == [3, 3]


def test_truncation_rules():
    x = _input((50, 8, 4))
    # Default: every eigenpair kept, the output is white.
    full = svdpi.torch.ZCAWhitening(8, num_groups=2, eps=1e-10, dtype=torch.float64)(x)
    # The paper's code's rule ("inclusive") always drops the last eigenpair of each group.
    paper = svdpi.torch.ZCAWhitening(
        8,
        num_groups=2,
        eps=1e-10,
        max_energy=1 - 1e-10,
        energy_rule="inclusive",
        dtype=torch.float64,
    )(x)
    for y, rank in ((full, 4), (paper, 3)):
        ranks = torch.linalg.matrix_rank(_group_covariances(y, 2), hermitian=True, rtol=1e-6)
        assert ranks.tolist() == [rank, rank]
    # min_eigenvalue: the same matrix as the core's truncation_mask + zca_whitening_matrix.
    cov = _group_covariances(x, 2) + 1e-4 * torch.eye(4, dtype=torch.float64)
    w, v = svdpi.eig(cov.numpy())
    threshold = float(w[:, 1].min())  # keeps one or two eigenpairs per group
    layer = svdpi.torch.ZCAWhitening(
        8, 2, min_eigenvalue=threshold, momentum=1.0, dtype=torch.float64
    )
    layer(x)
    mask = svdpi.truncation_mask(w, min_eigenvalue=threshold)
    assert not mask.all()
    expected = svdpi.zca_whitening_matrix(w, v, mask=mask)
    assert_close(layer.running_whitening, torch.from_numpy(expected), rtol=1e-10)


def test_equal_eigenvalues_give_finite_gradients():
    # Two identical channels and a constant one: the covariance has the
    # repeated eigenvalue eps; the classical gradient would be infinite.
    x = _input((30, 4, 5))
    x = torch.cat([x[:, :2], x[:, 1:2], torch.ones_like(x[:, :1])], dim=1).requires_grad_(True)
    layer = svdpi.torch.ZCAWhitening(4, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    assert bool(torch.isfinite(layer.weight.grad).all())


# -- module behaviour -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_eval_with_momentum_one_reproduces_training(shape, kind):
    if kind == "zca":
        layer = svdpi.torch.ZCAWhitening(8, num_groups=2, momentum=1.0, dtype=torch.float64)
    else:
        layer = svdpi.torch.PCADenoising(8, 3, momentum=1.0, num_groups=2, dtype=torch.float64)
    _randomise_affine(layer)
    x = _input(shape)
    y_train = layer(x)
    layer.eval()
    assert_close(layer(x), y_train, rtol=1e-9)
    assert int(layer.num_batches_tracked) == 1


def test_running_statistics_like_batchnorm():
    layer = svdpi.torch.ZCAWhitening(8, num_groups=2, momentum=None, dtype=torch.float64)
    x1, x2 = _input((20, 8, 3), seed=1), _input((20, 8, 3), seed=2)
    layer(x1)
    layer(x2)
    # momentum=None: cumulative average of the batch statistics.
    _, m1, w1 = paper_zca(x1, 2, layer.eps)
    _, m2, w2 = paper_zca(x2, 2, layer.eps)
    assert_close(layer.running_mean, (m1 + m2) / 2, rtol=1e-10)
    assert_close(layer.running_whitening, (w1 + w2) / 2, rtol=1e-10)
    # Evaluation reads the running statistics and updates nothing.
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(x1)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
    layer.reset_running_stats()
    assert not layer.running_mean.any()
    assert torch.equal(layer.running_whitening, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    assert int(layer.num_batches_tracked) == 0


def test_without_running_stats_eval_uses_the_batch():
    layer = svdpi.torch.ZCAWhitening(8, track_running_stats=False, affine=False)
    assert layer.running_mean is None
    assert layer.running_whitening is None
    assert layer.weight is None
    x = _input((30, 8), dtype=torch.float32)
    y_train = layer(x)
    layer.eval()
    assert torch.equal(layer(x), y_train)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_state_dict_round_trip(kind):
    def make():
        if kind == "zca":
            return svdpi.torch.ZCAWhitening(8, num_groups=4, momentum=0.5)
        return svdpi.torch.PCADenoising(8, n_components=2, num_groups=2, momentum=0.5)

    layer = _randomise_affine(make())
    x = _input((16, 8, 3, 3), dtype=torch.float32)
    layer(x)
    layer(2 * x)
    copy = make()
    copy.load_state_dict(layer.state_dict())
    layer.eval()
    copy.eval()
    assert torch.equal(copy(x), layer(x))
    names = set(layer.state_dict())
    assert {"weight", "bias", "running_mean", "num_batches_tracked"} <= names


def test_reset_parameters_and_repr():
    layer = _randomise_affine(
        svdpi.torch.ZCAWhitening(8, 2, max_energy=0.99, energy_rule="inclusive")
    )
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(8))
    assert torch.equal(layer.bias, torch.zeros(8))
    text = repr(layer)
    assert text.startswith("ZCAWhitening(8, num_groups=2, eps=0.0001, momentum=0.1")
    assert "energy_rule='inclusive'" in text
    assert "n_components=5" in repr(svdpi.torch.PCADenoising(10, 5))


def test_dtypes_and_autocast():
    x = _input((16, 8, 3, 3), dtype=torch.float32)
    layer = svdpi.torch.ZCAWhitening(8, num_groups=2)
    assert layer(x).dtype == torch.float32
    assert svdpi.torch.ZCAWhitening(8, dtype=torch.float64)(x.double()).dtype == torch.float64
    # bfloat16 in, bfloat16 out; statistics and eig in float32.
    xb = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(xb)
    assert y.dtype == torch.bfloat16
    expected = svdpi.torch.ZCAWhitening(8, num_groups=2)(xb.detach().float())
    assert_close(y.float(), expected, rtol=1e-2)
    y.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(xb.grad.float()).all())
    # float32 in under autocast: float32 out (as BatchNorm).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.float32


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # deprecations inside torch's inductor
def test_compiled_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        svdpi.torch.ZCAWhitening(8, num_groups=2),
        torch.nn.ReLU(),
        svdpi.torch.PCADenoising(8, n_components=4),
    )
    x = torch.randn(4, 3, 6, 6)
    compiled = torch.compile(net, backend="aot_eager")
    y = compiled(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    y_eager = net(x)
    y_eager.square().sum().backward()
    assert_close(y, y_eager, rtol=1e-5)
    for g, p in zip(grads, net.parameters(), strict=True):
        assert_close(g, p.grad, rtol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="divisible by num_groups"):
        svdpi.torch.ZCAWhitening(10, num_groups=4)
    with pytest.raises(ValueError, match="n_components"):
        svdpi.torch.PCADenoising(8, n_components=5, num_groups=2)
    with pytest.raises(ValueError, match="momentum"):
        svdpi.torch.ZCAWhitening(8, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        svdpi.torch.ZCAWhitening(8, eps=-1.0)
    with pytest.raises(ValueError, match="energy_rule"):
        svdpi.torch.ZCAWhitening(8, energy_rule="paper")
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.ZCAWhitening(8, method="svd")
    with pytest.raises(TypeError, match="num_groups"):
        svdpi.torch.ZCAWhitening(8, num_groups=2.0)
    layer = svdpi.torch.ZCAWhitening(8, num_groups=2)
    with pytest.raises(ValueError, match="expected input with 8 channels"):
        layer(torch.randn(4, 6, 3))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        layer(torch.randn(8))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 8))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(4, 8, dtype=torch.int64))
    bad = torch.randn(4, 8, 3)
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(bad)
    layer.eval()
    assert layer(torch.randn(1, 8)).shape == (1, 8)  # one sample is fine in evaluation


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_docstring_examples():
    # pytest's --doctest-modules cannot import backends/torch by path (it would
    # shadow PyTorch), so the examples run here through the installed package.
    for name in ("svdpi.torch", "svdpi.torch._eig", "svdpi.torch._whitening", "svdpi.torch._sync"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
    assert svdpi.torch.__all__ == sorted(svdpi.torch.__all__)


def test_memory_formats_and_functional_grad():
    layer = svdpi.torch.ZCAWhitening(8, num_groups=2, dtype=torch.float64)
    x = _input((6, 8, 3, 4))
    y = layer(x)
    # A channels_last (or any strided) input gives the same result.
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert_close(layer(channels_last), y, rtol=1e-13)
    assert_close(layer(x.transpose(2, 3).contiguous().transpose(2, 3)), y, rtol=1e-13)
    # torch.func.grad through the layer's autograd Functions equals backward
    # (the running statistics, updated in place, are passed in as with BatchNorm).
    params = dict(layer.named_parameters())

    def loss(t, buffers):
        out = torch.func.functional_call(layer, (params, buffers), (t,))
        return (out**3).sum()

    grad = torch.func.grad(loss)(x, {k: v.clone() for k, v in layer.named_buffers()})
    x_ = x.clone().requires_grad_(True)
    (layer(x_) ** 3).sum().backward()
    assert_close(grad, x_.grad, rtol=1e-12)


# -- one gradient formula: the layers' map differentiated by the core's VJPs -----------


@pytest.mark.parametrize(
    ("spectrum", "eps"),
    [((4.0, 2.0, 1.0, 0.5), 1e-4), ((2.0, 1.0, 0.5, 0.0), 0.0)],
    ids=["regular", "floor-active"],
)
@pytest.mark.parametrize("truncate", [False, True])
def test_whitening_map_gradient_is_the_cores_vjp(xp, spectrum, eps, truncate):
    # The covariance -> whitening matrix map of the layer, differentiated by
    # torch, against zca_whitening_matrix_vjp computed in each namespace. With
    # a zero eigenvalue and eps = 0 the core's eigenvalue floor is active: the
    # VJP treats the floor as a constant, and so must the layer (autograd
    # through the forward would also differentiate the floor's max|λ|).
    rng = np.random.default_rng(3)
    cov = spd_with_spectrum(np.array(spectrum), rng, batch=(2,))
    grad = rng.standard_normal(cov.shape)
    options = {"min_eigenvalue": 0.6} if truncate else {}
    layer = svdpi.torch.ZCAWhitening(4, eps=eps, dtype=torch.float64, **options)
    cov_t = torch.from_numpy(cov).requires_grad_(True)
    whitening, _ = layer._matrix(cov_t)
    whitening.backward(torch.from_numpy(grad))
    a = xp.asarray(cov + eps * np.eye(4), dtype=xp.float64)
    w, v = svdpi.eig(a)
    mask = svdpi.truncation_mask(w, **options) if truncate else None
    expected = svdpi.zca_whitening_matrix_vjp(w, v, xp.asarray(grad), mask=mask)
    assert_close(whitening, svdpi.zca_whitening_matrix(w, v, mask=mask), rtol=1e-10)
    assert_close(cov_t.grad, expected, rtol=1e-8)


def test_projector_map_gradient_is_the_cores_vjp(xp):
    rng = np.random.default_rng(4)
    corr = spd_with_spectrum(np.array([3.0, 1.5, 1.0, 0.25]), rng, batch=(3,))
    grad = rng.standard_normal(corr.shape)
    layer = svdpi.torch.PCADenoising(4, n_components=2, num_iters=7, dtype=torch.float64)
    corr_t = torch.from_numpy(corr).requires_grad_(True)
    projector = svdpi.torch._whitening._Projector("pi", 7, 2)
    layer._spectral(corr_t, projector).backward(torch.from_numpy(grad))
    w, v = svdpi.eig(xp.asarray(corr + layer.eps * np.eye(4), dtype=xp.float64))
    expected = svdpi.pca_projector_vjp(w, v, xp.asarray(grad), n_components=2, num_iters=7)
    assert_close(corr_t.grad, expected, rtol=1e-8)
