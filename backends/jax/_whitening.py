"""The paper's grouped ZCA whitening as a pure JAX function, and its evaluation counterpart."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    Truncation,
    check_integer,
    check_method,
    check_num_iters,
    check_real,
    grouped_covariance,
)
from svdpi.functions import Power

from ._spectral import Spec, eigenpairs_and_mask, value

_WHITENING = Power(-0.5)


class WhiteningStats(NamedTuple):
    """Batch statistics of :func:`zca_whitening`, to keep running averages of.

    Attributes
    ----------
    mean : jax.Array, shape (C,)
        Per-channel mean of the batch.
    whitening : jax.Array, shape (num_groups, d, d)
        The whitening matrix ``W`` of each group (``d = C / num_groups``).
    """

    mean: Any
    whitening: Any


def zca_whitening(
    x: Any,
    *,
    num_groups: int = 1,
    eps: float = 1e-4,
    method: str = "pi",
    num_iters: int = 19,
    min_eigenvalue: float | None = None,
    max_energy: float | None = None,
    energy_rule: str = "preceding",
) -> tuple[Any, WhiteningStats]:
    r"""One grouped ZCA-whitening step on a batch, with the SVD-PI gradient (functional).

    The training-mode computation of :class:`svdpi.torch.ZCAWhitening`,
    channels last as in Flax: per group of ``d = C / num_groups`` channels
    the batch is centred, its covariance ``Σ = x̃ᵀ x̃ / M + eps·I`` over the
    ``M`` positions of the leading axes is eigendecomposed, and the output is
    ``W x̃`` with ``W = V diag(λ^{-1/2}) Vᵀ`` (:func:`zca_whitening_matrix`).
    All groups share one batched eigendecomposition. Pure, so it composes
    with ``jax.jit``, ``jax.grad`` and ``jax.vmap``, and fits a Flax or
    Equinox model: keep running
    averages of the returned statistics (no gradient flows into them) and
    apply them with :func:`whiten` in evaluation.

    Parameters
    ----------
    x : jax.Array, shape (..., C)
        Activations, channels last, at least two samples (``M > 1``).
    num_groups : int, default 1
        Groups whitened independently; must divide ``C``.
    eps : float, default 1e-4
        Added to the covariance's diagonal.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        Derivative of ``W``, see :func:`svdpi.zca_whitening_matrix_vjp`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.
    min_eigenvalue, max_energy, energy_rule : optional
        Truncation, as in :func:`svdpi.truncation_mask` (``λ`` includes ``eps``);
        default: keep every eigenpair. No gradient flows through the choice.

    Returns
    -------
    y : jax.Array, shape of ``x``
        Whitened activations (each group has identity covariance up to ``eps``).
    stats : WhiteningStats
        ``(mean, whitening)`` of this batch, with gradients stopped.

    Notes
    -----
    Float16 and bfloat16 inputs are whitened in float32 and returned in
    their own dtype, as in the PyTorch layer. NaN in ``x`` propagates to
    ``y`` (there is no host-side check under ``jit``).

    Each group is whitened in units of a power of two ``2^e`` near its
    largest ``|x|``: the covariance of ``x / 2^e`` plus ``eps / 4^e``, whose
    whitening matrix applied to ``x̃ / 2^e`` is ``y`` exactly (dividing by a
    power of two is exact). The result is that of the plain formula, and it
    stays finite where the plain covariance would overflow or underflow
    (float32 activations of ``1e20`` or ``1e-25``); ``min_eigenvalue`` and
    the statistics are on the true scale. The statistics are the core's
    :func:`svdpi.adapter.grouped_covariance`, differentiated by JAX.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> x = jax.random.normal(jax.random.key(0), (256, 4)) @ jnp.diag(jnp.array([1.0, 2, 3, 4]))
    >>> y, stats = jax.jit(svdpi.jax.zca_whitening)(x)
    >>> bool(jnp.allclose(y.T @ y / 256, jnp.eye(4), atol=1e-2))
    True
    >>> stats.whitening.shape
    (1, 4, 4)
    >>> bool(jnp.allclose(svdpi.jax.whiten(x, stats), y, atol=1e-5))
    True
    """
    x = jnp.asarray(x)
    num_groups, group_size = _check_groups(x, num_groups)
    positions = math.prod(x.shape[:-1])
    if positions < 2:
        raise ValueError(
            f"x must hold more than one sample per channel, got shape {tuple(x.shape)}"
        )
    eps = check_real(eps, "eps", minimum=0.0)
    truncation = Truncation(min_eigenvalue, max_energy, energy_rule)
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    num_iters = check_num_iters(num_iters)
    compute = _compute_dtype(x)
    samples = x.astype(compute)
    # Each group is whitened in units of a power of two 2^e near its largest
    # |x| (see _exponents): the whitened output is the same, bit for bit
    # where nothing over- or underflows, and no statistic overflows where x
    # is finite (a float32 activation of 1e20 squares to inf).
    exponent = _exponents(samples, (positions, num_groups, group_size), eps)
    # The core's grouped statistics (channels last; every other axis a sample
    # axis), differentiated by JAX itself: its operations are JAX's, so
    # forward mode, second derivatives and vmap come with them (the core's
    # grouped_covariance_vjp, equal to it, is the reference of the tests).
    moments = grouped_covariance(
        _in_units(samples, jnp.repeat(exponent, group_size)),
        num_groups=num_groups,
        channel_axis=-1,
        xp=jnp,
    )
    # eps / 4^e from eps's own mantissa and exponent: eps need not be a float32 itself.
    eps_mantissa, eps_exponent = math.frexp(eps)
    eps_in_units = jnp.ldexp(
        jnp.full(num_groups, eps_mantissa, dtype=compute), eps_exponent - 2 * exponent
    )
    cov = moments.covariance + eps_in_units[:, None, None] * jnp.eye(group_size, dtype=compute)
    spec = Spec(_WHITENING, method, num_iters, "svdpi.jax.zca_whitening")
    # One eigendecomposition; the truncation mask is chosen from its eigenvalues.
    eigenvalues, eigenvectors, _ = eigenpairs_and_mask(cov, None, spec)
    mask = _truncation_mask(truncation, eigenvalues, exponent)
    whitening = value(cov, eigenvalues, eigenvectors, mask, spec)  # in units: W·2^e
    grouped = moments.centred.reshape(*x.shape[:-1], num_groups, group_size)
    # W x̃ = (W·2^e)(x̃ / 2^e): the units cancel.
    y = jnp.einsum("gij,...gj->...gi", whitening, grouped).reshape(x.shape).astype(x.dtype)
    # The statistics on the true scale (ldexp: inf only where the true value overflows).
    mean = jnp.ldexp(jax.lax.stop_gradient(moments.mean), exponent[:, None])
    whitening = jnp.ldexp(jax.lax.stop_gradient(whitening), -exponent[:, None, None])
    stats = WhiteningStats(mean.reshape(-1), whitening)
    return y, stats


def whiten(x: Any, stats: WhiteningStats) -> Any:
    """Apply given statistics (e.g. running averages) to ``x``: ``W (x − mean)`` per group.

    The evaluation-mode counterpart of :func:`zca_whitening`.

    Parameters
    ----------
    x : jax.Array, shape (..., C)
        Activations, channels last.
    stats : WhiteningStats
        ``mean`` of shape ``(C,)`` and ``whitening`` of shape ``(num_groups, d, d)``.

    Returns
    -------
    jax.Array, shape of ``x``
        ``W (x − mean)`` for each group of channels.

    Examples
    --------
    Running averages of the statistics of training batches, as a BatchNorm
    layer keeps them, applied in evaluation:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> running = svdpi.jax.WhiteningStats(jnp.zeros(4), jnp.eye(2)[None].repeat(2, 0))
    >>> for seed in range(3):
    ...     batch = jax.random.normal(jax.random.key(seed), (128, 4))
    ...     _, stats = svdpi.jax.zca_whitening(batch, num_groups=2)
    ...     running = jax.tree.map(lambda old, new: 0.9 * old + 0.1 * new, running, stats)
    >>> svdpi.jax.whiten(jnp.ones((5, 4)), running).shape
    (5, 4)
    """
    x = jnp.asarray(x)
    mean, whitening = _check_stats(stats)
    if whitening.ndim != 3 or whitening.shape[-1] != whitening.shape[-2]:
        raise ValueError(
            f"stats.whitening must have shape (num_groups, d, d), got {whitening.shape}"
        )
    num_groups, group_size = _check_groups(x, whitening.shape[0])
    if whitening.shape[-1] != group_size:
        raise ValueError(
            f"stats.whitening has groups of {whitening.shape[-1]} channels, x has "
            f"{x.shape[-1]} channels in {num_groups} groups"
        )
    if tuple(mean.shape) != (x.shape[-1],):
        raise ValueError(f"stats.mean must have shape ({x.shape[-1]},), got {mean.shape}")
    compute = _compute_dtype(x)
    samples = x.astype(compute).reshape(-1, num_groups, group_size)
    centred = samples - mean.astype(compute).reshape(num_groups, group_size)
    y = jnp.einsum("gij,mgj->mgi", whitening.astype(compute), centred)
    return y.reshape(x.shape).astype(x.dtype)


def _check_stats(stats: Any) -> tuple[Any, Any]:
    """``(mean, whitening)`` as floating JAX arrays, or an error that names ``stats``."""
    try:
        mean, whitening = stats
    except (TypeError, ValueError):
        raise TypeError(
            "stats must be a WhiteningStats (mean, whitening), as zca_whitening returns, "
            f"got {type(stats).__name__}"
        ) from None
    arrays = []
    for name, array in (("mean", mean), ("whitening", whitening)):
        if not hasattr(array, "dtype") or not jnp.issubdtype(array.dtype, jnp.floating):
            raise TypeError(
                f"stats.{name} must be a floating array, got "
                f"{getattr(array, 'dtype', type(array).__name__)}"
            )
        arrays.append(jnp.asarray(array))
    return arrays[0], arrays[1]


def _check_groups(x: Any, num_groups: Any) -> tuple[int, int]:
    if x.ndim < 2:
        raise ValueError(
            f"x must have shape (..., C) with at least 2 dimensions, got shape {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    num_groups = check_integer(num_groups, "num_groups", minimum=1)
    channels = x.shape[-1]
    if channels % num_groups:
        raise ValueError(
            f"the number of channels ({channels}) must be divisible by num_groups ({num_groups})"
        )
    return num_groups, channels // num_groups


def _exponents(samples: Any, groups: tuple[int, int, int], eps: float) -> Any:
    """Per group, the exponent ``e`` of the power of two its data is divided by.

    ``e`` is that of the group's largest ``|x|`` (``frexp``: ``|x| / 2^e <
    1``), so that its covariance in units is at most 1; but at least
    ``log2(eps) / 2``, so that ``eps / 4^e`` stays at most 1 (for data far
    below ``√eps``, ``eps`` dominates the covariance, as it does unscaled).
    No gradient flows through the choice: dividing by a constant power of
    two is exact.
    """
    magnitude = jnp.abs(jax.lax.stop_gradient(samples)).reshape(groups)  # (M, G, d)
    peak = jnp.max(magnitude, axis=(0, 2), initial=0.0)  # initial: groups of 0 channels
    _, exponent = jnp.frexp(peak)  # 0 for 0, inf and NaN: no scaling
    if eps > 0:
        exponent = jnp.maximum(exponent, math.ceil(math.log2(eps) / 2))
    return exponent


def _in_units(x: Any, exponent: Any) -> Any:
    """``x / 2^exponent`` (per channel, the last axis), differentiable and exact.

    A product with two constant powers of two, each a normal number
    (``2^±128``, the range of float32's exponents, is not one).
    """
    half = exponent // 2
    one = jnp.ones(exponent.shape, dtype=x.dtype)
    return x * jnp.ldexp(one, -half) * jnp.ldexp(one, half - exponent)


def _truncation_mask(truncation: Truncation, eigenvalues: Any, exponent: Any) -> Any:
    """The truncation's mask for eigenvalues ``λ / 4^e`` of the groups in units (or None)."""
    if not truncation.truncates:
        return None
    # The energy rule compares ratios, which the units do not change.
    mask = Truncation(None, truncation.max_energy, truncation.energy_rule).mask(
        eigenvalues, xp=jnp
    )
    if truncation.min_eigenvalue is not None:
        # λ > min_eigenvalue on the true scale (ldexp: inf where λ overflows it).
        true_scale = jnp.ldexp(eigenvalues, 2 * exponent[:, None])
        mask = mask & (true_scale > truncation.min_eigenvalue)
    return mask


def _compute_dtype(x: Any) -> Any:
    # Statistics and eig in float32 for half-precision input (float64 stays float64).
    return jnp.float64 if x.dtype == jnp.float64 else jnp.float32
