"""ZCAWhitening and PCADenoising against the paper's layers written literally, and as modules."""

from __future__ import annotations

import collections
import doctest
import importlib
import inspect
import io
import subprocess
import sys
import textwrap

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
        8, num_groups=2, min_eigenvalue=threshold, momentum=1.0, dtype=torch.float64
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
        layer = svdpi.torch.PCADenoising(
            8, n_components=3, momentum=1.0, num_groups=2, dtype=torch.float64
        )
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
        svdpi.torch.ZCAWhitening(8, num_groups=2, max_energy=0.99, energy_rule="inclusive")
    )
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(8))
    assert torch.equal(layer.bias, torch.zeros(8))
    text = repr(layer)
    assert text.startswith(
        "ZCAWhitening(8, eps=0.0001, momentum=0.1, affine=True, track_running_stats=True, "
        "num_groups=2, method='pi'"
    )
    assert "max_energy=0.99, energy_rule='inclusive'" in text
    assert "n_components=5" in repr(svdpi.torch.PCADenoising(10, n_components=5))


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
    projector = svdpi.torch._whitening._projector_map("pi", 7, 2)
    layer._spectral(corr_t, projector).backward(torch.from_numpy(grad))
    w, v = svdpi.eig(xp.asarray(corr + layer.eps * np.eye(4), dtype=xp.float64))
    expected = svdpi.pca_projector_vjp(w, v, xp.asarray(grad), n_components=2, num_iters=7)
    assert_close(corr_t.grad, expected, rtol=1e-8)


# -- the BatchNorm-shaped API -----------------------------------------------------------

LAYER_CLASSES = {
    "zca": (svdpi.torch.ZCAWhitening, {}),
    "pca": (svdpi.torch.PCADenoising, {"n_components": 2}),
    "sync-zca": (svdpi.torch.SyncZCAWhitening, {}),
    "sync-pca": (svdpi.torch.SyncPCADenoising, {"n_components": 2}),
}


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_batchnorm_shaped_signature(kind):
    cls, required = LAYER_CLASSES[kind]
    parameters = inspect.signature(cls).parameters
    positional = [p.name for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    batchnorm = list(inspect.signature(torch.nn.BatchNorm2d).parameters)[:5]
    assert (
        positional
        == batchnorm
        == [
            "num_features",
            "eps",
            "momentum",
            "affine",
            "track_running_stats",
        ]
    )
    keyword_only = {p.name for p in parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert {"num_groups", "method", "num_iters", "check_finite", "device", "dtype"} <= keyword_only
    # BatchNorm's positional order works as it does there.
    layer = cls(8, 1e-3, 0.2, False, False, num_groups=2, **required)
    assert (layer.eps, layer.momentum, layer.affine, layer.track_running_stats) == (
        1e-3,
        0.2,
        False,
        False,
    )
    assert layer.weight is None
    assert layer.running_mean is None
    with pytest.raises(TypeError):
        cls(8, 1e-3, 0.2, True, True, 2, **required)  # num_groups is keyword-only
    # 0.1's positional num_groups (n_components) would now be eps: refused.
    meant = "n_components" if required else "num_groups"
    with pytest.raises(TypeError, match=f"{meant}=4"):
        cls(8, 4, **required)
    assert cls(8, 1.0, **required).eps == 1.0  # a float eps >= 1 is taken at its word


def test_pca_n_components_is_required():
    # 0.1's default (16) made PCADenoising(8) fail; there is no default that
    # suits every group size, so it is required and named.
    with pytest.raises(TypeError, match="n_components"):
        svdpi.torch.PCADenoising(8)
    with pytest.raises(TypeError, match="n_components"):
        svdpi.torch.SyncPCADenoising(8)
    for c in (1, 8, 64):
        layer = svdpi.torch.PCADenoising(c, n_components=1)
        assert layer(torch.randn(4, c, 3)).shape == (4, c, 3)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_loads_a_checkpoint_in_the_0_1_format(kind):
    # A state dict as svdpi 0.1 wrote it: the same keys, module version 1 in
    # the metadata (0.1 set no _version), here without num_batches_tracked
    # (as a hand-converted checkpoint may be), which loads as 0 like BatchNorm.
    cls, required = LAYER_CLASSES[kind]
    source = cls(8, num_groups=2, dtype=torch.float64, **required)
    source(_input((20, 8)))
    state = source.state_dict()
    saved = collections.OrderedDict((k, v.clone()) for k, v in state.items())
    saved._metadata = {"": {"version": 1}}
    del saved["num_batches_tracked"]
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert loaded._metadata[""]["version"] == 1
    target = cls(8, num_groups=2, dtype=torch.float64, **required)
    assert target._version == 2
    target.load_state_dict(loaded)
    for name, value in target.state_dict().items():
        expected = torch.tensor(0) if name == "num_batches_tracked" else state[name]
        assert torch.equal(value, expected), name
    # The current format round-trips, and its version is recorded.
    assert source.state_dict()._metadata[""]["version"] == 2
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.num_batches_tracked, source.num_batches_tracked)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_check_finite_off_reads_nothing_on_the_host(kind, monkeypatch):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, check_finite=False, **required)
    x = torch.randn(6, 8, 3)
    reference = cls(8, num_groups=2, **required)(x)

    def no_host_read(*args, **kwargs):
        raise AssertionError("the layer read the covariance on the host")

    monkeypatch.setattr(torch, "isfinite", no_host_read)
    assert_close(layer(x), reference, rtol=1e-6)
    # Non-finite input with the check off: never a finite-looking answer; on
    # the CPU LAPACK may also refuse it (a GPU returns NaN).
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    try:
        y = layer(bad)
    except torch.linalg.LinAlgError:
        return
    assert not bool(torch.isnan(y).logical_not().all())
    monkeypatch.undo()
    with pytest.raises(ValueError, match="NaN or infinite"):
        cls(8, num_groups=2, **required)(bad)


# -- edge cases, against BatchNorm ------------------------------------------------------


@pytest.mark.parametrize("kind", LAYER_CLASSES)
@pytest.mark.parametrize("shape", [(0, 8, 4, 4), (3, 8, 0, 2), (0, 8)])
def test_empty_batch_like_batchnorm(kind, shape):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, **required)
    batchnorm = torch.nn.BatchNorm2d(8) if len(shape) == 4 else torch.nn.BatchNorm1d(8)
    buffers = {k: v.clone() for k, v in layer.named_buffers()}
    for module in (layer, batchnorm):
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        y.sum().backward()
        assert y.shape == shape
        assert x.grad.shape == shape
        assert torch.equal(module.weight.grad, torch.zeros(8))
        assert torch.equal(module.bias.grad, torch.zeros(8))
        assert int(module.num_batches_tracked) == 1
    for name, value in layer.named_buffers():
        if name != "num_batches_tracked":
            assert torch.equal(value, buffers[name]), name  # untouched, as BatchNorm's
    layer.eval()
    batchnorm.eval()
    assert layer(torch.randn(shape)).shape == batchnorm(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_one_value_per_channel_raises_like_batchnorm(kind):
    # The Sync layers without a process group are the plain layers: same error.
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, **required)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(8)(torch.randn(1, 8))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 8))
    assert torch.equal(layer.running_mean, torch.zeros(8))
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("kind", LAYER_CLASSES)
@pytest.mark.parametrize("training", [True, False])
def test_channels_last_keeps_its_memory_format(kind, training):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, dtype=torch.float64, **required).train(training)
    x = _input((4, 8, 3, 5))
    for memory_format, dims in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        xm = (x if dims == 4 else x[..., None].expand(4, 8, 3, 5, 2).contiguous()).contiguous(
            memory_format=memory_format
        )
        y = layer(xm)
        assert y.is_contiguous(memory_format=memory_format)
        batchnorm = torch.nn.BatchNorm2d(8) if dims == 4 else torch.nn.BatchNorm3d(8)
        assert batchnorm.double()(xm).is_contiguous(memory_format=memory_format)
        assert_close(y, layer(xm.contiguous()), rtol=1e-12)
        assert layer(xm.contiguous()).is_contiguous()


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_meta_device_and_deferred_initialisation(kind):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, device="meta", **required)
    x = torch.empty(4, 8, 3, 3, device="meta")
    for training in (True, False):
        y = layer.train(training)(x)
        assert y.device.type == "meta"
        assert y.shape == x.shape
    # Deferred initialisation: materialise, then reset, as for BatchNorm.
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    fresh = cls(8, num_groups=2, **required)
    for (name, value), expected in zip(
        layer.state_dict().items(), fresh.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), name
    x = torch.randn(4, 8, 3, 3)
    assert torch.equal(layer.train()(x), fresh(x))


# -- method="exact" (the core's Daleckii–Krein VJPs) -------------------------------------


def test_zca_exact_gradient_is_the_cores_and_basis_independent():
    # A repeated eigenvalue: the exact gradient is finite and does not depend
    # on the basis the eigensolver picks inside the repeated eigenspace.
    rng = np.random.default_rng(5)
    cov = spd_with_spectrum(np.array([2.0, 1.0, 1.0, 0.5]), rng, batch=(2,))
    grad = rng.standard_normal(cov.shape)
    layer = svdpi.torch.ZCAWhitening(4, method="exact", dtype=torch.float64)
    cov_t = torch.from_numpy(cov).requires_grad_(True)
    whitening, _ = layer._matrix(cov_t)
    whitening.backward(torch.from_numpy(grad))
    w, v = svdpi.eig(cov + layer.eps * np.eye(4))
    expected = svdpi.zca_whitening_matrix_vjp(w, v, grad, method="exact")
    assert np.isfinite(cov_t.grad.numpy()).all()
    assert_close(cov_t.grad, expected, rtol=1e-10)
    # Rotate the basis of the repeated pair: the same gradient.
    c, s = np.cos(0.7), np.sin(0.7)
    rotated = v.copy()
    rotated[..., 1:3] = v[..., 1:3] @ np.array([[c, -s], [s, c]])
    again = svdpi.zca_whitening_matrix_vjp(w, rotated, grad, method="exact")
    assert_close(cov_t.grad, again, rtol=1e-10)


def test_pca_exact_gradient_is_the_cores():
    # Repeated eigenvalues on each side of the cut (2 of 4 kept), a gap at it.
    rng = np.random.default_rng(6)
    corr = spd_with_spectrum(np.array([3.0, 3.0, 1.0, 1.0]), rng, batch=(2,))
    grad = rng.standard_normal(corr.shape)
    layer = svdpi.torch.PCADenoising(4, n_components=2, method="exact", dtype=torch.float64)
    corr_t = torch.from_numpy(corr).requires_grad_(True)
    projector = svdpi.torch._whitening._projector_map("exact", layer.num_iters, 2)
    layer._spectral(corr_t, projector).backward(torch.from_numpy(grad))
    w, v = svdpi.eig(corr + layer.eps * np.eye(4))
    expected = svdpi.pca_projector_vjp(w, v, grad, n_components=2, method="exact")
    assert np.isfinite(corr_t.grad.numpy()).all()
    assert_close(corr_t.grad, expected, rtol=1e-10)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_exact_method_trains(kind):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, method="exact", dtype=torch.float64, **required)
    x = _input((6, 8, 3)).requires_grad_(True)
    layer(x).square().sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    assert "method='exact'" in repr(layer)


@pytest.mark.slow
def test_layers_compile_with_fullgraph_in_a_fresh_process():
    # Training step (forward + backward through the spectral Function) of
    # both layers, compiled without a graph break, in a fresh interpreter.
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch, svdpi.torch
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3),
            svdpi.torch.ZCAWhitening(8, num_groups=2),
            svdpi.torch.PCADenoising(8, n_components=2, num_groups=2, method="exact"),
        )
        x = torch.randn(4, 3, 8, 8)
        compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
        compiled(x).square().sum().backward()
        grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        net(x).square().sum().backward()
        for g, p in zip(grads, net.parameters()):
            assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-5), (g, p.grad)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("method", ["pi", "exact"])
def test_whitening_map_forward_mode_is_the_transpose_of_its_vjp(method):
    rng = np.random.default_rng(8)
    cov = torch.from_numpy(spd_with_spectrum(np.array([3.0, 1.0, 1.0, 0.5]), rng, batch=(2,)))
    tangent = torch.from_numpy(rng.standard_normal(cov.shape))
    cotangent = torch.from_numpy(rng.standard_normal(cov.shape))
    layer = svdpi.torch.ZCAWhitening(4, method=method, min_eigenvalue=0.6, dtype=torch.float64)
    _, forward = torch.func.jvp(lambda c: layer._matrix(c)[0], (cov,), (tangent,))
    _, pullback = torch.func.vjp(lambda c: layer._matrix(c)[0], cov)
    (backward,) = pullback(cotangent)
    # <vjp(Ḡ), T> = <Ḡ, jvp(T)>, and jvp is the core's matrix_power_jvp.
    assert_close((backward * tangent).sum(), (cotangent * forward).sum(), rtol=1e-10)
    w, v = (t.numpy() for t in svdpi.eig(cov + layer.eps * torch.eye(4, dtype=cov.dtype)))
    mask = svdpi.truncation_mask(w, min_eigenvalue=0.6)
    expected = svdpi.matrix_power_jvp(w, v, -0.5, tangent.numpy(), mask=mask, method=method)
    assert_close(forward, expected, rtol=1e-10)


# -- constructor options: a clear error naming the option --------------------------------

NAN, INF = float("nan"), float("inf")
# (option, bad value, error type): strings, bools for numbers, numbers for bools,
# tensors, NaN and infinities, values out of range.
BAD_OPTIONS = [
    ("eps", "1e-4", TypeError),
    ("eps", True, TypeError),
    ("eps", None, TypeError),
    ("eps", 1e-4j, TypeError),
    ("eps", torch.tensor(1e-4), TypeError),
    ("eps", NAN, ValueError),
    ("eps", INF, ValueError),
    ("eps", -1e-4, ValueError),
    ("momentum", "a", TypeError),
    ("momentum", True, TypeError),
    ("momentum", torch.tensor(0.1), TypeError),
    ("momentum", NAN, ValueError),
    ("momentum", INF, ValueError),
    ("momentum", -0.1, ValueError),
    ("momentum", 2, ValueError),
    ("affine", "yes", TypeError),
    ("affine", 1, TypeError),
    ("affine", 0.5, TypeError),
    ("affine", None, TypeError),
    ("affine", NAN, TypeError),
    ("track_running_stats", 0, TypeError),
    ("track_running_stats", "False", TypeError),
    ("check_finite", 2, TypeError),
    ("check_finite", None, TypeError),
    ("num_groups", 2.0, TypeError),
    ("num_groups", True, TypeError),
    ("num_groups", 0, ValueError),
    ("num_groups", 3, ValueError),  # does not divide 8
    ("method", None, ValueError),
    ("num_iters", 1.5, TypeError),
    ("num_iters", 0, ValueError),
    ("momentum", 10**400, ValueError),  # beyond the float range: a raw OverflowError in 0.2
]
ZCA_ONLY_BAD_OPTIONS = [
    ("min_eigenvalue", 10**400, ValueError),
    ("min_eigenvalue", -(10**400), ValueError),
    ("min_eigenvalue", "1e-3", TypeError),
    ("min_eigenvalue", True, TypeError),
    ("min_eigenvalue", NAN, ValueError),
    ("min_eigenvalue", INF, ValueError),
    ("min_eigenvalue", -INF, ValueError),
    ("max_energy", "0.5", TypeError),
    ("max_energy", True, TypeError),
    ("max_energy", NAN, ValueError),
    ("max_energy", INF, ValueError),
    ("max_energy", 0.0, ValueError),
    ("max_energy", 1.5, ValueError),
    ("energy_rule", None, ValueError),
]


@pytest.mark.parametrize(
    ("kind", "option", "value", "error"),
    [
        (kind, *case)
        for kind in LAYER_CLASSES
        for case in BAD_OPTIONS + (ZCA_ONLY_BAD_OPTIONS if "zca" in kind else [])
    ],
    ids=repr,
)
def test_bad_options_raise_naming_the_option(kind, option, value, error):
    cls, required = LAYER_CLASSES[kind]
    with pytest.raises(error, match=option):
        cls(8, **required, **{option: value})


@pytest.mark.parametrize("kind", ["zca", "sync-zca"])
def test_truncation_options_are_one_checked_value(kind):
    layer = LAYER_CLASSES[kind][0](8, min_eigenvalue=1e-3, max_energy=0.9)
    assert layer.truncation == svdpi.Truncation(1e-3, 0.9, "preceding")
    # Assignments are checked as the constructor checks them, and reach the mask.
    with pytest.raises(ValueError, match="max_energy"):
        layer.max_energy = 1.5
    with pytest.raises(ValueError, match="energy_rule"):
        layer.energy_rule = "paper"
    layer.energy_rule = "inclusive"
    layer.min_eigenvalue = None
    assert layer.truncation == svdpi.Truncation(None, 0.9, "inclusive")
    assert "energy_rule='inclusive'" in repr(layer)


@pytest.mark.parametrize("kind", ["pca", "sync-pca"])
@pytest.mark.parametrize(
    ("value", "error"),
    [("2", TypeError), (2.0, TypeError), (True, TypeError), (NAN, TypeError), (0, ValueError)],
)
def test_bad_n_components_raises_naming_it(kind, value, error):
    with pytest.raises(error, match="n_components"):
        LAYER_CLASSES[kind][0](8, n_components=value)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_good_options_of_every_numeric_kind_are_accepted(kind):
    cls, required = LAYER_CLASSES[kind]
    extra = {"min_eigenvalue": np.float32(1e-3), "max_energy": 1} if "zca" in kind else {}
    layer = cls(
        8,
        np.float64(1e-3),  # NumPy scalars are numbers
        1,  # an integer momentum in [0, 1]
        np.bool_(True),
        False,
        num_groups=np.int64(2),
        check_finite=np.bool_(False),
        **required,
        **extra,
    )
    assert (layer.eps, layer.momentum, layer.affine, layer.track_running_stats) == (
        pytest.approx(1e-3),
        1.0,
        True,
        False,
    )
    assert type(layer.eps) is float
    assert type(layer.affine) is bool
    assert layer.check_finite is False
    assert cls(8, momentum=None, eps=0, **required).momentum is None
    if extra:
        assert layer.max_energy == 1.0
        assert layer.min_eigenvalue == pytest.approx(1e-3)
    assert layer(torch.randn(6, 8)).shape == (6, 8)


# -- a non-finite batch covariance: the error says what happened --------------------------


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_overflowing_covariance_of_a_finite_input_is_named(kind):
    # 1e20 is a finite float32; its square (1e40) is not. 0.2 blamed the input.
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, **required)
    x = torch.randn(6, 8, 3)
    x[2, 5, 1] = 1e20
    with pytest.raises(ValueError, match="input is finite") as info:
        layer(x)
    message = str(info.value)
    assert "overflowed float32" in message
    assert "float64" in message  # what to do
    assert "1e+20" in message  # the largest magnitude
    assert cls.__name__ in message
    assert int(layer.num_batches_tracked) == 0  # nothing was recorded
    # In float64 the same batch is whitened.
    assert torch.isfinite(layer(x.double())).all()


@pytest.mark.parametrize("kind", LAYER_CLASSES)
@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_input_is_still_named_as_such(kind, bad):
    cls, required = LAYER_CLASSES[kind]
    x = torch.randn(6, 8, 3)
    x[1, 0, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite") as info:
        cls(8, num_groups=2, **required)(x)
    assert "is not finite" in str(info.value)
    assert "overflow" not in str(info.value)


def test_pca_with_eps_zero_names_a_constant_channel():
    x = _input((16, 8, 3))
    x[:, 5] = 2.0  # zero variance: standardising divides 0 by 0
    layer = svdpi.torch.PCADenoising(8, eps=0.0, n_components=2, num_groups=2)
    with pytest.raises(ValueError, match=r"channel\(s\) \[5\] have zero variance.*eps > 0"):
        layer(x.float())
    assert torch.isfinite(svdpi.torch.PCADenoising(8, n_components=2)(x.float())).all()


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_one_finiteness_check_per_training_step(kind, monkeypatch):
    # Naming the cause reads more only when the check fails: a finite step
    # reads one flag on the host, as in 0.2.
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, **required)
    calls = []
    isfinite = torch.isfinite

    def counting(t):
        calls.append(tuple(t.shape))
        return isfinite(t)

    monkeypatch.setattr(torch, "isfinite", counting)
    layer(torch.randn(6, 8, 3)).sum().backward()
    assert calls == [(2, 4, 4)]
