"""The paper's grouped ZCA whitening as a pure JAX function, and its evaluation counterpart."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    check_integer,
    check_method,
    check_num_iters,
    check_truncation,
)

from ._matrix_functions import _matrix_function, _Spec


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
    eps = float(eps)
    if not 0.0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    check_truncation(max_energy, energy_rule)
    method = check_method(method, MATRIX_FUNCTION_METHODS)
    num_iters = check_num_iters(num_iters)
    compute = _compute_dtype(x)
    samples = x.astype(compute).reshape(positions, num_groups, group_size)
    mean = jnp.mean(samples, axis=0)
    centred = samples - mean
    cov = jnp.einsum("mgi,mgj->gij", centred, centred) / positions
    cov = cov + eps * jnp.eye(group_size, dtype=compute)
    truncation = None
    if min_eigenvalue is not None or max_energy is not None:
        truncation = (min_eigenvalue, max_energy, energy_rule)
    spec = _Spec("power", -0.5, method, num_iters, truncation=truncation)
    # One eigendecomposition: the truncation mask is chosen inside, from its eigenvalues.
    whitening = _matrix_function(cov, None, spec)
    y = jnp.einsum("gij,mgj->mgi", whitening, centred).reshape(x.shape).astype(x.dtype)
    stats = WhiteningStats(
        jax.lax.stop_gradient(mean.reshape(-1)), jax.lax.stop_gradient(whitening)
    )
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
    mean, whitening = stats
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


def _compute_dtype(x: Any) -> Any:
    # Statistics and eig in float32 for half-precision input (float64 stays float64).
    return jnp.float64 if x.dtype == jnp.float64 else jnp.float32
