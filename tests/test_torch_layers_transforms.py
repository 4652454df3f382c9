"""The whitening layers under torch.func (vmap, jvp, grad) and forward-mode AD, as BatchNorm.

Oracles, in float64: autograd (forward and reverse mode) through the same
maths written with plain torch operations and ``torch.linalg.eigh`` on
separated spectra, central finite differences, and a Python loop over the
members of an ensemble or the examples of a batch.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.func import functional_call, grad, jvp, stack_module_state, vjp, vmap  # noqa: E402

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402
from svdpi.torch import _kernels  # noqa: E402

from ._helpers import assert_close, spd_with_spectrum  # noqa: E402

# torch.func's forward mode imports a module that uses torch.jit.script on first use.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

F64 = torch.float64

LAYER_CLASSES = {
    "zca": (svdpi.torch.ZCAWhitening, {}),
    "pca": (svdpi.torch.PCADenoising, {"n_components": 2}),
    "sync-zca": (svdpi.torch.SyncZCAWhitening, {}),
    "sync-pca": (svdpi.torch.SyncPCADenoising, {"n_components": 2}),
}


def _input(shape, seed=0, dtype=F64):
    generator = torch.Generator().manual_seed(seed)
    c = shape[1]
    mixing = torch.randn(c, c, generator=generator, dtype=dtype)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    return torch.einsum("dc,nc...->nd...", mixing, x) + 3.0


def _layer(kind, seed=0, **options):
    cls, required = LAYER_CLASSES[kind]
    layer = cls(8, num_groups=2, dtype=F64, **required, **options)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if layer.affine:
            layer.weight.copy_(torch.rand(8, generator=generator, dtype=F64) + 0.5)
            layer.bias.copy_(torch.randn(8, generator=generator, dtype=F64))
    return layer


def _central_difference(f, x, direction, h=1e-6):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


# -- the kernels: forward mode and vmap against plain torch operations -------------------


def _plain_moments(x):
    mean = x.mean(dim=(0, 3))
    centred = x - mean[:, :, None]
    m = x.shape[0] * x.shape[3]
    return centred, mean, torch.einsum("ngil,ngjl->gij", centred, centred) / m


def _plain_affine(x, matrix, bias):
    return torch.matmul(matrix, x) + bias[:, :, None]


def test_group_moments_forward_mode_is_that_of_plain_operations():
    x = _input((5, 2, 3, 4)).contiguous()
    tangent = torch.randn_like(x)
    _, got = jvp(lambda t: _kernels.GroupMoments.apply(t, None)[:3], (x,), (tangent,))
    _, expected = jvp(_plain_moments, (x,), (tangent,))
    for name, a, b in zip(("centred", "mean", "cov"), got, expected, strict=True):
        assert_close(a, b, rtol=1e-12, err_msg=name)
    # and the covariance's tangent against central differences
    fd = _central_difference(lambda t: _plain_moments(t)[2], x, tangent)
    assert_close(got[2], fd, rtol=1e-7)


def test_group_affine_forward_mode_is_that_of_plain_operations():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 3, 4, generator=generator, dtype=F64)
    matrix = torch.randn(2, 3, 3, generator=generator, dtype=F64)
    bias = torch.randn(2, 3, generator=generator, dtype=F64)
    primals = (x, matrix, bias)
    tangents = tuple(torch.randn_like(p) for p in primals)
    _, got = jvp(_kernels.GroupAffine.apply, primals, tangents)
    _, expected = jvp(_plain_affine, primals, tangents)
    assert_close(got, expected, rtol=1e-13)
    # One input with a tangent at a time (the others' are None inside jvp).
    for k in range(3):

        def only_k(t, k=k):
            args = list(primals)
            args[k] = t
            return _kernels.GroupAffine.apply(*args)

        def plain_k(t, k=k):
            args = list(primals)
            args[k] = t
            return _plain_affine(*args)

        _, got = jvp(only_k, (primals[k],), (tangents[k],))
        _, expected = jvp(plain_k, (primals[k],), (tangents[k],))
        assert_close(got, expected, rtol=1e-13, err_msg=str(k))


@pytest.mark.parametrize("batched", ["all", "first"])
def test_kernels_under_vmap_are_the_loop_forward_and_backward(batched):
    # vmap over the kernels' inputs, with a cotangent that is batched or not
    # (the backward must not write a batched value into an unbatched tensor).
    generator = torch.Generator().manual_seed(2)
    xs = torch.randn(3, 5, 2, 3, 4, generator=generator, dtype=F64)
    grads = torch.randn(3, 5, 2, 3, 4, generator=generator, dtype=F64)
    grad_in_dim = 0 if batched == "all" else None
    grad_arg = grads if batched == "all" else grads[0]

    def step(x, g):
        def f(t):
            centred, _, cov, _ = _kernels.GroupMoments.apply(t, None)
            return _kernels.GroupAffine.apply(centred, cov, cov.diagonal(dim1=-2, dim2=-1))

        out, pullback = vjp(f, x)
        return out, pullback(g)[0]

    out, grad_x = vmap(step, in_dims=(0, grad_in_dim))(xs, grad_arg)
    for k in range(3):

        def plain(t):
            centred, _, cov = _plain_moments(t)
            return _plain_affine(centred, cov, cov.diagonal(dim1=-2, dim2=-1))

        x = xs[k].clone().requires_grad_(True)
        expected = plain(x)
        g = grads[k] if batched == "all" else grads[0]
        (expected_grad,) = torch.autograd.grad(expected, x, g)
        assert_close(out[k], expected, rtol=1e-12)
        assert_close(grad_x[k], expected_grad, rtol=1e-11)


# -- the PCA projector map: forward mode ---------------------------------------------------


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic", "exact"])
def test_projector_map_forward_mode_is_the_transpose_of_its_vjp(method):
    rng = np.random.default_rng(9)
    corr = torch.from_numpy(spd_with_spectrum(np.array([3.0, 1.0, 1.0, 0.5]), rng, batch=(2,)))
    tangent = torch.from_numpy(rng.standard_normal(corr.shape))
    cotangent = torch.from_numpy(rng.standard_normal(corr.shape))
    layer = svdpi.torch.PCADenoising(4, n_components=1, method=method, dtype=F64)
    projector = svdpi.torch._whitening._projector_map(method, layer.num_iters, 1)

    def f(c):
        return layer._spectral(c, projector)

    _, forward = jvp(f, (corr,), (tangent,))
    _, pullback = vjp(f, corr)
    (backward,) = pullback(cotangent)
    assert_close((backward * tangent).sum(), (cotangent * forward).sum(), rtol=1e-10)
    assert_close(forward, forward.mT, rtol=1e-12)


@pytest.mark.parametrize("method", ["analytic", "exact"])
def test_projector_map_forward_mode_is_the_derivative(method):
    # A gap at the cut (2 of 4 kept) and separated eigenvalues: the derivative
    # of the projector exists; eigh's forward-mode AD computes it.
    rng = np.random.default_rng(10)
    corr = torch.from_numpy(spd_with_spectrum(np.array([3.0, 2.0, 1.0, 0.5]), rng, batch=(2,)))
    tangent = torch.from_numpy(rng.standard_normal(corr.shape))
    projector = svdpi.torch._whitening._projector_map(method, 19, 2)

    def plain(c):
        _, v = torch.linalg.eigh((c + c.mT) / 2)
        top = v[..., 2:]
        return top @ top.mT

    layer = svdpi.torch.PCADenoising(4, n_components=2, eps=0.0, dtype=F64)
    _, got = jvp(lambda c: layer._spectral(c, projector), (corr,), (tangent,))
    _, expected = jvp(plain, (corr,), (tangent,))
    assert_close(got, expected, rtol=1e-10)
    assert_close(got, _central_difference(plain, corr, tangent), rtol=1e-7)


# -- the layers under forward mode ---------------------------------------------------------


def _plain_layer(layer, x):
    """The layer's training forward written with plain torch operations and eigh."""
    n = x.shape[0]
    g, d = layer.num_groups, layer.group_size
    xg = x.reshape(n, g, d, -1)
    centred, _, cov = _plain_moments(xg)
    eye = torch.eye(d, dtype=x.dtype)
    if isinstance(layer, svdpi.torch.ZCAWhitening):
        w, v = torch.linalg.eigh(cov + layer.eps * eye)
        matrix = (v * w.rsqrt()[:, None, :]) @ v.mT
    else:
        inv_std = torch.rsqrt(torch.diagonal(cov, dim1=-2, dim2=-1) + layer.eps)
        corr = cov * inv_std[:, :, None] * inv_std[:, None, :]
        _, v = torch.linalg.eigh(corr + layer.eps * eye)
        top = v[..., d - layer.n_components :]
        matrix = (top @ top.mT) * inv_std[:, None, :]
    y = torch.matmul(matrix, centred)
    y = y * layer.weight.reshape(g, d, 1) + layer.bias.reshape(g, d, 1)
    return y.reshape(x.shape)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_training_forward_mode_is_the_derivative(kind):
    # method="exact": the derivative of the whitening matrix (or projector),
    # so the layer's forward mode must be that of the plain operations.
    layer = _layer(kind, method="exact", track_running_stats=False)
    x = _input((12, 8, 3))
    tangent = torch.randn_like(x)
    y, got = jvp(layer, (x,), (tangent,))
    expected_y, expected = jvp(lambda t: _plain_layer(layer, t), (x,), (tangent,))
    assert_close(y, expected_y, rtol=1e-10)
    assert_close(got, expected, rtol=1e-8)
    assert_close(got, _central_difference(layer, x, tangent), rtol=1e-6)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_training_forward_mode_is_the_transpose_of_backward(kind, method):
    # The power-iteration gradient is not a derivative: forward mode is its
    # transpose, <jvp(t), g> = <t, backward(g)>, for the input and the weights.
    layer = _layer(kind, method=method, num_iters=7, track_running_stats=False)
    params = dict(layer.named_parameters())
    x = _input((12, 8, 3))
    tangents = (torch.randn_like(x), {k: torch.randn_like(p) for k, p in params.items()})
    cotangent = torch.randn_like(x)

    def f(t, p):
        return functional_call(layer, p, (t,))

    _, forward = jvp(f, (x, params), tangents)
    _, pullback = vjp(f, x, params)
    back_x, back_p = pullback(cotangent)
    lhs = (cotangent * forward).sum()
    rhs = (back_x * tangents[0]).sum() + sum((back_p[k] * tangents[1][k]).sum() for k in params)
    assert_close(lhs, rhs, rtol=1e-10)


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_eval_forward_mode_is_the_derivative(kind):
    layer = _layer(kind)
    layer(_input((12, 8, 3), seed=3))  # running statistics that are not the identity
    layer.eval()
    x = _input((5, 8, 3, 2))
    tangent = torch.randn_like(x)
    y, got = jvp(layer, (x,), (tangent,))
    assert_close(y, layer(x), rtol=1e-13)
    # The evaluation map is affine in x: its derivative is the map without the shift.
    assert_close(got, layer(x + tangent) - layer(x), rtol=1e-9)
    # and through the parameters, against central differences
    params = dict(layer.named_parameters())
    directions = {k: torch.randn_like(p) for k, p in params.items()}
    _, got = jvp(lambda p: functional_call(layer, p, (x,)), (params,), (directions,))

    def along(h):
        return functional_call(layer, {k: params[k] + h * directions[k] for k in params}, (x,))

    assert_close(got, (along(1e-6) - along(-1e-6)) / 2e-6, rtol=1e-7)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_forward_ad_in_training_updates_the_running_statistics_without_tangents(kind):
    # torch.autograd.forward_ad (eager forward mode) in training mode with
    # running statistics, as BatchNorm: the tangent is that of the batch
    # statistics' map, the buffers get the primal statistics only.
    import torch.autograd.forward_ad as fwad

    layer = _layer(kind, method="exact", momentum=0.5)
    reference = _layer(kind, method="exact", momentum=0.5)
    x = _input((12, 8, 3))
    tangent = torch.randn_like(x)
    with fwad.dual_level():
        out = fwad.unpack_dual(layer(fwad.make_dual(x, tangent)))
        for name, buffer in layer.named_buffers():
            assert fwad.unpack_dual(buffer).tangent is None, name
    y = reference(x)
    assert_close(out.primal, y, rtol=1e-13)
    without_stats = _layer(kind, method="exact", track_running_stats=False)
    _, expected = jvp(without_stats, (x,), (tangent,))
    assert_close(out.tangent, expected, rtol=1e-12)
    for (name, value), expected in zip(layer.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(value, expected), name


@pytest.mark.parametrize("kind", LAYER_CLASSES)
def test_transforms_with_unbatched_running_statistics_raise_like_batchnorm(kind):
    # vmap over the input, or jvp of the module itself, in training with running
    # statistics that the transform cannot update: nn.BatchNorm2d raises too.
    layer = _layer(kind)
    x = _input((2, 6, 8, 3), dtype=torch.float32).double()
    with pytest.raises(RuntimeError, match="running_mean or running_var"):
        vmap(torch.nn.BatchNorm2d(8).double())(x[..., None])
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match="running statistics cannot be updated in place"):
        vmap(layer)(x)
    with pytest.raises(RuntimeError, match="running statistics cannot be updated in place"):
        jvp(layer, (x[0],), (x[0],))
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
    # What the message proposes works: eval mode, or no running statistics.
    assert vmap(layer.eval())(x).shape == x.shape
    free = _layer(kind, track_running_stats=False)
    out = vmap(free)(x)
    for k in range(2):
        assert_close(out[k], free(x[k]), rtol=1e-12)


# -- ensembles: vmap over stacked parameters and buffers ------------------------------------


def _members(kind, momentum):
    members = []
    for seed in range(3):
        member = _layer(kind, seed=seed, momentum=momentum)
        member(_input((10, 8, 3), seed=10 + seed))  # different running statistics
        members.append(member)
    return members


@pytest.mark.parametrize("kind", LAYER_CLASSES)
@pytest.mark.parametrize(("training", "momentum"), [(False, 0.1), (True, 0.1), (True, None)])
def test_ensemble_under_vmap_is_the_loop_over_members(kind, training, momentum):
    # torch.func.stack_module_state + functional_call + vmap, as with
    # nn.BatchNorm2d (which, unlike these layers, fails with momentum=None).
    members = _members(kind, momentum)
    for member in members:
        member.train(training)
    x = _input((7, 8, 3, 2), seed=20)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def f(p, b, t):
        return functional_call(base, (p, b), (t,))

    out = vmap(f, in_dims=(0, 0, None))(params, buffers, x)
    for k, member in enumerate(members):
        assert_close(out[k], member(x), rtol=1e-11)  # updates the member's own buffers
        for name, value in member.named_buffers():
            assert_close(buffers[name][k], value, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["zca", "pca"])
@pytest.mark.parametrize("training", [False, True])
def test_ensemble_gradients_under_vmap_are_the_loop_over_members(kind, training):
    members = _members(kind, 0.1)
    for member in members:
        member.train(training)
    x = _input((7, 8, 3), seed=21)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def loss(p, b, t):
        return (functional_call(base, (p, b), (t,)) ** 3).sum()

    grads = vmap(grad(loss), in_dims=(0, 0, None))(params, buffers, x)
    for k, member in enumerate(members):
        (member(x) ** 3).sum().backward()
        for name, parameter in member.named_parameters():
            assert_close(grads[name][k], parameter.grad, rtol=1e-10, err_msg=name)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_other_paths_under_transforms(kind):
    # channels_last, empty batches and the meta device under vmap and jvp.
    layer = _layer(kind, track_running_stats=False)
    x = _input((2, 6, 8, 3, 4))
    channels_last = torch.stack([t.contiguous(memory_format=torch.channels_last) for t in x])
    out = vmap(layer)(channels_last)
    for k in range(2):
        assert_close(out[k], layer(x[k]), rtol=1e-12)
    _, tangent = jvp(layer, (channels_last[0],), (channels_last[1],))
    assert tangent.is_contiguous(memory_format=torch.channels_last)
    empty = torch.zeros(2, 0, 8, 3, dtype=F64)
    assert vmap(layer)(empty).shape == empty.shape
    assert jvp(layer, (empty[0],), (empty[0],))[1].shape == empty[0].shape
    meta = LAYER_CLASSES[kind][0](
        8, num_groups=2, device="meta", track_running_stats=False, **LAYER_CLASSES[kind][1]
    )
    x_meta = torch.empty(4, 8, 3, device="meta")
    y, tangent = jvp(meta, (x_meta,), (x_meta,))
    assert y.device.type == tangent.device.type == "meta"
    assert tangent.shape == x_meta.shape
