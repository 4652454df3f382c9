"""JAX derivatives for the SVD: ``jax.custom_jvp`` rules around the core's JVPs.

:func:`svd` differentiates the factors with :func:`svdpi.svd_jvp`;
:func:`polar`, :func:`low_rank` and :func:`singular_value_map` are functions
of the singular values with the core's exact (Daleckii–Krein) derivative.
Reverse mode is JAX's transposition of these linear rules.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import array_api_compat.numpy as xp_numpy

import jax
import jax.numpy as jnp
import svdpi
from svdpi.adapter import (
    apply_singular_value_kernels as apply_kernels,
)
from svdpi.adapter import (
    canonicalize,
    check_integer,
    check_num_iters,
    check_svd_dtype,
    check_svd_method,
)
from svdpi.adapter import (
    check_singular_value_function as check_function,
)
from svdpi.adapter import (
    check_svd_matrix as check_matrix,
)
from svdpi.adapter import (
    polar_kernels as _polar_kernels,
)
from svdpi.adapter import (
    singular_value_kernels as _kernels,
)
from svdpi.adapter import (
    svd_jvp_checked as jvp,
)
from svdpi.functions import Power, SpectralFunction

from ._eig import first_order_only

_HINT = " svdpi's SVD derivatives are first order only."


def _svd_forward(a, canonical):
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    if canonical and a.size > 0:
        u, vh = canonicalize(u, vh, jnp)
    return u, s, vh


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _svd(a, method, num_iters, canonical):
    return _svd_forward(a, canonical)


@_svd.defjvp
def _svd_jvp_rule(method, num_iters, canonical, primals, tangents):
    (a,), (tangent_a,) = primals, tangents
    u, s, vh = _svd_forward(a, canonical)
    # The factors are constants of the linear tangent map; a second
    # derivative would differentiate them through this guard, and raise.
    guard = first_order_only("svdpi.jax.svd", method, _HINT)
    tangent = jvp(
        guard(u),
        guard(s),
        guard(vh),
        tangent_a,
        method=method,
        num_iters=num_iters,
        canonical=canonical,
        xp=jnp,
    )
    return (u, s, vh), tangent


def _check(a: Any) -> Any:
    a = jnp.asarray(a)
    check_svd_dtype(a, "a", jnp)
    check_matrix(a, "a")
    return a


def svd(
    a: Any, *, method: str = "pi", num_iters: int = 19, canonical: bool = False
) -> svdpi.SVDResult:
    """Differentiable reduced SVD of real or complex matrices, singular values descending.

    The forward values are those of ``jax.numpy.linalg.svd(a, full_matrices=False)``;
    the derivative is the core's :func:`svdpi.svd_jvp` with the given
    ``method`` (a ``jax.custom_jvp``), by default finite for repeated and
    zero singular values, where ``jnp.linalg.svd``'s is NaN. Reverse mode
    (``jax.grad``, ``vjp``, ``jacrev``) is JAX's transposition of it, which
    equals :func:`svdpi.svd_vjp`.

    Parameters
    ----------
    a : array_like, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128 (64-bit types need
        ``jax_enable_x64``); ``m`` and ``n`` may differ either way.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Derivative rule, see :func:`svdpi.svd_vjp`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    canonical : bool, default False
        Make the first largest-magnitude entry of each left singular vector
        real and positive (see :func:`svdpi.svd`), and differentiate those factors.

    Returns
    -------
    svdpi.SVDResult
        ``(U, S, Vh)`` as ``jax.Array``, ``S`` real and descending.

    Raises
    ------
    NotImplementedError
        When a second derivative is taken (all methods are first order).

    Notes
    -----
    Works under ``jax.jit``, ``vmap``, ``grad``, ``jvp``, ``jacfwd`` and
    ``jacrev``; the options are static. NaN input is not checked (as in
    ``jnp.linalg.svd``, it propagates).

    Complex input: values cannot be read under ``jax.jit``, so a loss that
    depends on the singular vectors' arbitrary phase is not detected (unlike
    :func:`svdpi.torch.svd`): its gradient is that of svdpi's choice of
    phase derivative (``u_j`` and ``v_j`` turn by opposite phases, see
    :func:`svdpi.svd_jvp`). Use ``canonical=True`` for losses of the phase.
    JAX's gradients of real functions of complex arrays are the conjugates
    of PyTorch's, as for every JAX function.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.eye(3, 2)  # σ = (1, 1): jnp.linalg.svd's gradient is NaN here
    >>> g = jax.grad(lambda m: svdpi.jax.svd(m).U[:, 0].sum())(a)
    >>> bool(jnp.isfinite(g).all())
    True
    >>> jax.jit(jax.vmap(lambda m: svdpi.jax.svd(m).S))(jnp.stack([a, 2 * a]))
    Array([[1., 1.],
           [2., 2.]], dtype=float32)
    """
    method = check_svd_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    a = _check(a)
    return svdpi.SVDResult(*_svd(a, method, num_iters, canonical))


@dataclasses.dataclass(frozen=True)
class _Map:
    """The polar factor (``fn is None``), ``U f(Σ) Vh``, or the best rank-``rank`` one."""

    fn: SpectralFunction | None = None
    rank: int | None = None

    def value(self, u, s, vh):
        if self.fn is None:
            return u @ vh
        if self.rank is not None:
            k = self.rank
            return (u[..., :k] * s[..., None, :k].astype(u.dtype)) @ vh[..., :k, :]
        return (u * self.fn.value(s, xp=jnp)[..., None, :].astype(u.dtype)) @ vh

    def derivative(self, u, s, vh, x):
        if s.shape[-1] == 0:
            return jnp.zeros_like(x)
        shape = (u.shape[-2], vh.shape[-1])
        if self.fn is None:
            kernels = _polar_kernels(s, shape, jnp)
        else:
            mask = None
            if self.rank is not None:
                mask = jnp.broadcast_to(jnp.arange(s.shape[-1]) < self.rank, s.shape)
            kernels = _kernels(s, shape, self.fn, mask, jnp)
        return apply_kernels(u, vh, x, *kernels, jnp)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _map(a, spec, name):
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    return spec.value(u, s, vh)


@_map.defjvp
def _map_jvp_rule(spec, name, primals, tangents):
    (a,), (tangent_a,) = primals, tangents
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    guard = first_order_only(name, "exact", _HINT)
    tangent = spec.derivative(guard(u), guard(s), guard(vh), tangent_a)
    return spec.value(u, s, vh), tangent


def polar(a: Any) -> Any:
    """The orthogonal (unitary) polar factor ``U Vh`` of ``a``, with its exact derivative.

    Parameters
    ----------
    a : array_like, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.

    Returns
    -------
    jax.Array, shape (..., m, n)
        ``U Vh``: orthonormal columns (``m >= n``) or rows (``m <= n``).

    Notes
    -----
    The derivative is :func:`svdpi.polar_jvp`'s: exact, finite and
    independent of the singular vectors at repeated singular values. A
    numerically rank-deficient matrix (smallest singular value below
    ``max(m, n) · eps · σ_max``) has no unique polar factor: its derivative
    is NaN. First order only.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = 2.0 * jnp.eye(2)  # σ = (2, 2)
    >>> jax.grad(lambda m: svdpi.jax.polar(m)[0, 1])(a)
    Array([[ 0.  ,  0.25],
           [-0.25,  0.  ]], dtype=float32)
    """
    return _map(_check(a), _Map(), "svdpi.jax.polar")


def low_rank(a: Any, rank: int) -> Any:
    """The best rank-``rank`` approximation of ``a``, with its exact derivative.

    Parameters
    ----------
    a : array_like, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.
    rank : int
        Leading singular triples kept (``>= 0``; more than ``min(m, n)`` keeps all).

    Returns
    -------
    jax.Array, shape (..., m, n)
        ``U_k diag(σ_k) Vh_k``, ``k = rank``.

    Notes
    -----
    As :func:`svdpi.torch.low_rank`: exact where ``σ_rank > σ_rank+1`` by
    more than ``max(m, n) · eps · σ_max``, and NaN where there is no such
    gap (the best approximation is not unique there). First order only.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> svdpi.jax.low_rank(jnp.diag(jnp.array([3.0, 2.0, 1.0])), 2).diagonal()
    Array([3., 2., 0.], dtype=float32)
    """
    a = _check(a)
    rank = min(check_integer(rank, "rank", minimum=0), min(a.shape[-2], a.shape[-1]))
    return _map(a, _Map(Power(1.0), rank), "svdpi.jax.low_rank")


def singular_value_map(a: Any, fn: SpectralFunction) -> Any:
    """``U diag(f(σ)) Vh`` for a function ``f`` with ``f(0) = 0``, with its exact derivative.

    Parameters
    ----------
    a : array_like, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.
    fn : svdpi.functions.SpectralFunction
        ``f`` with ``f(0) = 0`` (checked once per function, on a NumPy
        zero, when traced).

    Returns
    -------
    jax.Array, shape (..., m, n)
        ``U diag(f(σ)) Vh``, the same for every choice of singular vectors.

    Notes
    -----
    The derivative is :func:`svdpi.singular_value_map_jvp`'s (rectangular
    Daleckii–Krein): exact and independent of the singular vectors at
    repeated singular values. First order only.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> from svdpi.functions import Power
    >>> svdpi.jax.singular_value_map(jnp.array([[3.0, 0.0], [0.0, 4.0]]), Power(2.0))
    Array([[ 9.,  0.],
           [ 0., 16.]], dtype=float32)
    """
    a = _check(a)
    # On NumPy (which JAX depends on): JAX arrays are never read on the host, and a
    # SpectralFunction works on any array API library's arrays.
    check_function(fn, xp_numpy, xp_numpy.float64)
    return _map(a, _Map(fn), "svdpi.jax.singular_value_map")
