"""A whitening layer's statistics: grouped mean, centred data and covariance, and their VJP."""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

from array_api_compat import array_namespace

from ._typing import Array, Namespace
from ._validation import check_companion, check_floating, check_integer


class GroupedMoments(NamedTuple):
    """What :func:`grouped_covariance` returns.

    Attributes
    ----------
    mean : array, shape (..., num_groups, d)
        The mean of each channel over the sample axes (the leading axes are
        the batch axes of ``x``, in their order).
    centred : array, shape of ``x``
        ``x`` minus its mean, in ``x``'s layout.
    covariance : array, shape (..., num_groups, d, d)
        ``X̃ X̃ᵀ / M`` for each group: the biased covariance of its ``d``
        channels over the ``M`` samples.
    count : int
        ``M``, the number of samples (the product of the sample axes' sizes).
    """

    mean: Array
    centred: Array
    covariance: Array
    count: int


class _Layout(NamedTuple):
    """How ``x`` maps to the canonical ``(*batch, G, d, M)`` layout and back."""

    permutation: tuple[int, ...]
    inverse: tuple[int, ...]
    permuted_shape: tuple[int, ...]  # (*batch, C, *samples)
    batch: tuple[int, ...]
    groups: int
    group_size: int
    count: int


def _layout(shape, num_groups, channel_axis, sample_axes) -> _Layout:
    ndim = len(shape)
    try:
        channel = operator.index(channel_axis)
    except TypeError:
        raise TypeError(f"channel_axis must be an integer, got {channel_axis!r}") from None
    if not -ndim <= channel < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for {ndim}-d x")
    channel %= ndim
    if sample_axes is None:
        samples = tuple(axis for axis in range(ndim) if axis != channel)
    else:
        if isinstance(sample_axes, int):
            sample_axes = (sample_axes,)
        samples = []
        for axis in sample_axes:
            try:
                axis = operator.index(axis)
            except TypeError:
                raise TypeError(f"sample_axes must be integers, got {sample_axes!r}") from None
            if not -ndim <= axis < ndim:
                raise ValueError(f"sample axis {axis} is out of range for {ndim}-d x")
            samples.append(axis % ndim)
        samples = tuple(samples)
        if len(set(samples)) != len(samples):
            raise ValueError(f"sample_axes must be distinct, got {sample_axes!r}")
        if channel in samples:
            raise ValueError(f"the channel axis {channel} cannot also be a sample axis")
    if not samples:
        raise ValueError("grouped_covariance needs at least one sample axis")
    channels = shape[channel]
    groups = check_integer(num_groups, "num_groups", minimum=1)
    if channels % groups:
        raise ValueError(
            f"the number of channels ({channels}) must be divisible by num_groups ({groups})"
        )
    batch_axes = tuple(a for a in range(ndim) if a != channel and a not in samples)
    permutation = (*batch_axes, channel, *samples)
    inverse = tuple(permutation.index(a) for a in range(ndim))
    batch = tuple(shape[a] for a in batch_axes)
    # A list, not a generator: dynamo cannot trace math.prod of a generator
    # (a graph break in torch.compile(fullgraph=True) of covariance pooling).
    count = math.prod([shape[a] for a in samples])
    permuted = tuple(shape[a] for a in permutation)
    return _Layout(permutation, inverse, permuted, batch, groups, channels // groups, count)


def _canonical(x: Array, layout: _Layout, xp: Namespace) -> Array:
    x = xp.permute_dims(x, layout.permutation)
    return xp.reshape(x, (*layout.batch, layout.groups, layout.group_size, layout.count))


def _restore(x: Array, layout: _Layout, xp: Namespace) -> Array:
    x = xp.reshape(x, layout.permuted_shape)
    return xp.permute_dims(x, layout.inverse)


def grouped_covariance(
    x: Array,
    /,
    *,
    num_groups: int = 1,
    channel_axis: int = 1,
    sample_axes: int | tuple[int, ...] | None = None,
    xp: Namespace | None = None,
) -> GroupedMoments:
    """Mean, centred data and covariance of groups of channels: a whitening layer's statistics.

    The channels (axis ``channel_axis``, ``C`` of them) are split into
    ``num_groups`` consecutive groups of ``d = C / num_groups``; the entries
    along the ``sample_axes`` are the ``M`` observations; every other axis
    is a batch axis, with statistics of its own.

    Parameters
    ----------
    x : array
        Activations, float32 or float64, of any array API library.
    num_groups : int, default 1
        Groups of channels, each with its own covariance; must divide ``C``.
    channel_axis : int, default 1
        The channel axis: 1 for PyTorch's ``(N, C, H, W)``, -1 for
        channels-last layouts (Flax, ``svdpi.jax``).
    sample_axes : int or tuple of int, optional
        The axes of the observations. Default: every axis but the channel
        axis (a layer's batch statistics); ``(2, 3)`` for per-sample
        statistics of ``(N, C, H, W)`` (covariance pooling).
    xp : array namespace, optional
        Inferred from ``x`` when omitted.

    Returns
    -------
    GroupedMoments
        ``(mean, centred, covariance, count)``; ``mean`` of shape
        ``(..., num_groups, d)``, ``covariance`` of shape
        ``(..., num_groups, d, d)``, the leading axes being ``x``'s batch
        axes (those neither channel nor sample axes), in their order.

    Notes
    -----
    The covariance is computed from the centred data, so a large mean costs
    no precision: ``Σ = X̃ X̃ᵀ / M`` with ``X̃ = X − μ``, divided by ``M``
    (the biased estimate, as BatchNorm's). The adapters' layers may compute
    the same statistics with fused kernels of their own; this function is
    their reference. Its derivative is :func:`grouped_covariance_vjp`.

    Examples
    --------
    Two groups of two channels, over the batch and spatial axes:

    >>> import numpy as np
    >>> import svdpi.adapter as core
    >>> x = np.random.default_rng(0).standard_normal((8, 4, 3, 3))
    >>> moments = core.grouped_covariance(x, num_groups=2)
    >>> moments.covariance.shape, moments.count
    ((2, 2, 2), 72)
    >>> group = x[:, 2:].transpose(1, 0, 2, 3).reshape(2, -1)  # channels 2 and 3
    >>> bool(np.allclose(moments.covariance[1], np.cov(group, bias=True)))
    True
    """
    if xp is None:
        xp = array_namespace(x)
    check_floating(x, "x", xp)
    layout = _layout(tuple(x.shape), num_groups, channel_axis, sample_axes)
    if layout.count == 0:
        raise ValueError(
            f"grouped_covariance needs at least one sample, got x of shape {tuple(x.shape)}"
        )
    canonical = _canonical(x, layout, xp)
    mean = xp.mean(canonical, axis=-1)
    centred = canonical - mean[..., None]
    covariance = (centred @ xp.matrix_transpose(centred)) / layout.count
    return GroupedMoments(mean, _restore(centred, layout, xp), covariance, layout.count)


def grouped_covariance_vjp(
    centred: Array,
    grad_mean: Array | None,
    grad_centred: Array | None,
    grad_covariance: Array | None,
    /,
    *,
    num_groups: int = 1,
    channel_axis: int = 1,
    sample_axes: int | tuple[int, ...] | None = None,
    xp: Namespace | None = None,
) -> Array:
    """Gradient with respect to ``x`` of a loss of :func:`grouped_covariance` (VJP).

    Parameters
    ----------
    centred : array
        The centred data :func:`grouped_covariance` returned (``x``'s layout).
    grad_mean : array, shape (..., num_groups, d), or None
        Cotangent of the mean; ``None`` means zero.
    grad_centred : array, shape of ``x``, or None
        Cotangent of the centred data; ``None`` means zero.
    grad_covariance : array, shape (..., num_groups, d, d), or None
        Cotangent of the covariance (only its symmetric part matters);
        ``None`` means zero.
    num_groups, channel_axis, sample_axes : optional
        As given to :func:`grouped_covariance`.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape of ``x``
        ``ḡ_x = ḡ_x̃ − mean(ḡ_x̃) + ḡ_μ / M + S X̃`` per group, with
        ``S = (ḡ_Σ + ḡ_Σᵀ) / M``.

    Notes
    -----
    The centring's own derivative enters only through ``ḡ_x̃``: the
    covariance does not depend on the mean, since ``Σ X̃ = 0`` over the
    samples.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi.adapter as core
    >>> x = np.random.default_rng(1).standard_normal((16, 3))
    >>> m = core.grouped_covariance(x, channel_axis=-1)
    >>> g = core.grouped_covariance_vjp(m.centred, None, None, np.eye(3)[None], channel_axis=-1)
    >>> bool(np.allclose(g, 2 * m.centred / 16))  # d trace(Σ) / dx = 2 x̃ / M
    True
    """
    if xp is None:
        arrays = [a for a in (centred, grad_mean, grad_centred, grad_covariance) if a is not None]
        xp = array_namespace(*arrays)
    check_floating(centred, "centred", xp)
    layout = _layout(tuple(centred.shape), num_groups, channel_axis, sample_axes)
    stats = (*layout.batch, layout.groups, layout.group_size)
    expected = {
        "grad_mean": stats,
        "grad_centred": tuple(centred.shape),
        "grad_covariance": (*stats, layout.group_size),
    }
    given = {
        "grad_mean": grad_mean,
        "grad_centred": grad_centred,
        "grad_covariance": grad_covariance,
    }
    for name, value in given.items():
        if value is None:
            continue
        check_companion(value, name, centred, "centred")
        check_floating(value, name, xp)
        if tuple(value.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(value.shape)}")
        if value.dtype != centred.dtype:
            raise TypeError(f"{name} must have dtype {centred.dtype}, got {value.dtype}")
    if layout.count == 0:
        return xp.zeros_like(centred)
    x = _canonical(centred, layout, xp)
    grad = xp.zeros_like(x)
    if grad_centred is not None:
        g = _canonical(grad_centred, layout, xp)
        grad = g - xp.mean(g, axis=-1, keepdims=True)
    if grad_mean is not None:
        grad = grad + grad_mean[..., None] / layout.count
    if grad_covariance is not None:
        symmetric = (grad_covariance + xp.matrix_transpose(grad_covariance)) / layout.count
        grad = grad + symmetric @ x
    return _restore(grad, layout, xp)
