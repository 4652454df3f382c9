"""The whitening layers' fused statistics are the core's grouped covariance.

``svdpi.torch._kernels.GroupMoments`` (white-box: the layers' fast path) is
the torch-specific implementation of :func:`svdpi.adapter.grouped_covariance`
and its VJP: measured 3 to 4.4 times faster forward + backward than autograd
through the core's generic code at layer shapes (see the kernel's
docstring). These tests hold it to the core's formula: the forward, the
backward against :func:`svdpi.adapter.grouped_covariance_vjp`, and forward
mode against ``torch.func.jvp`` through the core's operations, float64.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import array_api_compat.torch as xp_torch  # noqa: E402

import svdpi.torch  # noqa: E402 (registers the adapter)
from svdpi.adapter import grouped_covariance, grouped_covariance_vjp  # noqa: E402
from svdpi.torch import _kernels  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

SHAPES = [(6, 8, 5, 2), (3, 4, 1, 1), (5, 6, 7, 3)]  # (N, C, L, groups)


def _input(n, c, length, seed, offset=0.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, length, generator=generator, dtype=torch.float64)
    return x * torch.linspace(0.5, 3.0, c, dtype=torch.float64)[:, None] + offset


def _fused(x, groups):
    n, c, length = x.shape
    centred, mean, cov, count = _kernels.GroupMoments.apply(
        x.reshape(n, groups, c // groups, length), None
    )
    return centred.reshape(x.shape), mean, cov, count


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_is_the_cores_grouped_covariance(shape, offset):
    n, c, length, groups = shape
    x = _input(n, c, length, 0, offset)
    centred, mean, cov, count = _fused(x, groups)
    core = grouped_covariance(x, num_groups=groups, xp=xp_torch)
    assert float(count) == core.count
    torch.testing.assert_close(mean, core.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(centred, core.centred, rtol=1e-12, atol=1e-12 * (1 + offset))
    torch.testing.assert_close(cov, core.covariance, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("parts", ["all", "covariance", "centred", "mean"])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_is_the_cores_grouped_covariance_vjp(shape, parts):
    n, c, length, groups = shape
    x = _input(n, c, length, 1).requires_grad_(True)
    generator = torch.Generator().manual_seed(2)
    d = c // groups
    grads = {
        "centred": torch.randn(x.shape, generator=generator, dtype=x.dtype),
        "mean": torch.randn(groups, d, generator=generator, dtype=x.dtype),
        "covariance": torch.randn(groups, d, d, generator=generator, dtype=x.dtype),
    }
    used = grads if parts == "all" else {parts: grads[parts]}
    centred, mean, cov, _ = _fused(x, groups)
    outputs = {"centred": centred, "mean": mean, "covariance": cov}
    # Clones: the kernel's backward accumulates into the incoming gradient of
    # x̃ in place (in a layer it is GroupAffine's fresh output, used nowhere else).
    (got,) = torch.autograd.grad(
        [outputs[k] for k in used], x, [used[k].clone() for k in used], allow_unused=True
    )
    core = grouped_covariance(x.detach(), num_groups=groups, xp=xp_torch)
    expected = grouped_covariance_vjp(
        core.centred,
        used.get("mean"),
        used.get("centred"),
        used.get("covariance"),
        num_groups=groups,
        xp=xp_torch,
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_mode_is_the_derivative_of_the_cores_formula(shape):
    n, c, length, groups = shape
    x = _input(n, c, length, 3)
    tangent = _input(n, c, length, 4)

    def fused(t):
        centred, mean, cov, _ = _fused(t, groups)
        return centred, mean, cov

    def core(t):
        moments = grouped_covariance(t, num_groups=groups, xp=xp_torch)
        return moments.centred, moments.mean, moments.covariance

    _, got = torch.func.jvp(fused, (x,), (tangent,))
    _, expected = torch.func.jvp(core, (x,), (tangent,))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_covariance_pooling_uses_the_cores_covariance():
    x = _input(4, 6, 9, 5).reshape(4, 6, 3, 3)
    pool = svdpi.torch.CovariancePooling(eps=0.25)
    core = grouped_covariance(x, sample_axes=(2, 3), xp=xp_torch).covariance[:, 0]
    expected = core + 0.25 * torch.eye(6, dtype=x.dtype)
    assert torch.equal(pool.covariance(x), expected)
