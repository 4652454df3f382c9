"""The grouped covariance and its VJP (svdpi.adapter): every layout the adapters use."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, to_numpy

from svdpi.adapter import grouped_covariance, grouped_covariance_vjp

# (x shape, options, the layout's expected statistics shape)
LAYOUTS = {
    "layers (N, C, H, W), 2 groups": ((5, 6, 3, 2), {"num_groups": 2}, (2, 3)),
    "pooling, per sample (N, C, L)": ((4, 3, 7), {"sample_axes": 2}, (4, 1, 3)),
    "pooling, per sample (N, C, H, W)": ((2, 3, 4, 4), {"sample_axes": (2, 3)}, (2, 1, 3)),
    "jax, channels last (M, C)": ((9, 4), {"channel_axis": -1, "num_groups": 2}, (2, 2)),
    "jax, channels last (N, H, W, C)": ((3, 2, 2, 4), {"channel_axis": -1}, (1, 4)),
}


def _reference(x, num_groups=1, channel_axis=1, sample_axes=None):
    """NumPy float64: per group, the biased covariance of the channels over the samples."""
    ndim = x.ndim
    channel = channel_axis % ndim
    if sample_axes is None:
        samples = [a for a in range(ndim) if a != channel]
    else:
        samples = [a % ndim for a in np.atleast_1d(sample_axes)]
    batch = [a for a in range(ndim) if a != channel and a not in samples]
    moved = np.transpose(x, [*batch, channel, *samples])
    c = x.shape[channel]
    rows = moved.reshape(*[x.shape[a] for a in batch], num_groups, c // num_groups, -1)
    mean = rows.mean(axis=-1)
    centred = rows - mean[..., None]
    cov = centred @ np.swapaxes(centred, -1, -2) / rows.shape[-1]
    return mean, cov


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_statistics_match_numpy(xp, layout):
    shape, options, stats = LAYOUTS[layout]
    x = np.random.default_rng(0).standard_normal(shape) * 3 + 10
    got = grouped_covariance(from_numpy(xp, x), **options)
    mean, cov = _reference(x, **options)
    assert tuple(got.mean.shape) == stats
    assert tuple(got.covariance.shape) == (*stats, stats[-1])
    assert got.count == x.size // np.prod(stats)
    assert_close(got.mean, mean, rtol=1e-13)
    assert_close(got.covariance, cov, rtol=1e-12)
    # The centred data keep x's layout: x − mean, broadcast back.
    recentred = to_numpy(got.centred)
    assert recentred.shape == x.shape
    regrouped = grouped_covariance(from_numpy(xp, recentred), **options)
    assert_close(regrouped.mean, np.zeros(stats), atol=1e-12)


def _loss(x, cm, cc, ck, options):
    got = grouped_covariance(x, **options)
    return (
        np.sum(cm * to_numpy(got.mean))
        + np.sum(cc * to_numpy(got.centred))
        + np.sum(ck * to_numpy(got.covariance))
    )


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_vjp_matches_finite_differences(xp, layout):
    shape, options, stats = LAYOUTS[layout]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    cm, cc, ck = (rng.standard_normal(s) for s in (stats, shape, (*stats, stats[-1])))
    t = rng.standard_normal(shape)
    moments = grouped_covariance(from_numpy(xp, x), **options)
    grad = grouped_covariance_vjp(
        moments.centred, from_numpy(xp, cm), from_numpy(xp, cc), from_numpy(xp, ck), **options
    )
    h = 1e-6
    fd = (
        _loss(from_numpy(xp, x + h * t), cm, cc, ck, options)
        - _loss(from_numpy(xp, x - h * t), cm, cc, ck, options)
    ) / (2 * h)
    assert np.sum(to_numpy(grad) * t) == pytest.approx(fd, rel=1e-7)


@pytest.mark.parametrize("which", ["mean", "centred", "covariance"])
def test_vjp_equals_torch_autograd(which):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((4, 6, 5)), requires_grad=True)
    options = {"num_groups": 3}
    moments = grouped_covariance(x, **options)  # autograd through the core's own operations
    cotangent = torch.tensor(rng.standard_normal(tuple(getattr(moments, which).shape)))
    (expected,) = torch.autograd.grad((getattr(moments, which) * cotangent).sum(), x)
    given = dict.fromkeys(("mean", "centred", "covariance"))
    given[which] = cotangent
    got = grouped_covariance_vjp(
        moments.centred.detach(), given["mean"], given["centred"], given["covariance"], **options
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_no_cotangent_gives_zeros(xp):
    moments = grouped_covariance(from_numpy(xp, np.ones((3, 2))), channel_axis=-1)
    assert not np.any(
        to_numpy(grouped_covariance_vjp(moments.centred, None, None, None, channel_axis=-1))
    )


def test_bad_layouts_are_refused_by_name(xp):
    x = from_numpy(xp, np.ones((4, 6, 3)))
    with pytest.raises(ValueError, match=r"divisible by num_groups \(4\)"):
        grouped_covariance(x, num_groups=4)
    with pytest.raises(ValueError, match="channel_axis 3 is out of range"):
        grouped_covariance(x, channel_axis=3)
    with pytest.raises(ValueError, match="cannot also be a sample axis"):
        grouped_covariance(x, sample_axes=(1, 2))
    with pytest.raises(ValueError, match="sample_axes must be distinct"):
        grouped_covariance(x, sample_axes=(2, -1))
    with pytest.raises(ValueError, match="at least one sample"):
        grouped_covariance(from_numpy(xp, np.ones((0, 6))), channel_axis=-1)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        grouped_covariance(xp.ones((4, 6), dtype=xp.int64))
    moments = grouped_covariance(x, num_groups=2)
    with pytest.raises(ValueError, match=r"grad_covariance must have shape \(2, 3, 3\)"):
        grouped_covariance_vjp(
            moments.centred, None, None, from_numpy(xp, np.ones((3, 3))), num_groups=2
        )
