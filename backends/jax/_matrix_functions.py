"""Matrix functions of a symmetric matrix for JAX: one ``jax.custom_jvp`` over the core's JVPs.

Each public function here is ``F(a) = V diag(φ(λ)) Vᵀ`` for the eigenpairs of
``a``, with the derivative rule of the core's matrix-function JVP
(:func:`svdpi.matrix_power_jvp`, :func:`svdpi.matrix_log_jvp`) for the chosen
``method``; reverse mode is JAX's transposition of it, equal to the core's
VJP. The functions take the matrix, not its eigenpairs, because
``method="exact"`` (Daleckii–Krein) is a derivative of ``F`` itself rather
than a chain rule through ``eig``; the eigendecomposition runs once per call.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import svdpi
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    check_exponent,
    check_floating,
    check_integer,
    check_mask,
    check_method,
    check_num_iters,
    check_square,
)

from ._eig import first_order_only


class _Spec(NamedTuple):
    """Everything static about a call (hashable: a ``nondiff_argnums`` argument)."""

    kind: str  # "power" or "log"
    p: float
    method: str
    num_iters: int
    n_components: int | None = None
    # (min_eigenvalue, max_energy, energy_rule) for svdpi.truncation_mask, or None.
    truncation: tuple[Any, Any, str] | None = None


def _eigenpairs_and_mask(a, mask, spec):
    eigenvalues, eigenvectors = svdpi.eig(a, check_finite=False, xp=jnp)
    if spec.truncation is not None:
        min_eigenvalue, max_energy, energy_rule = spec.truncation
        keep = svdpi.truncation_mask(
            eigenvalues,
            min_eigenvalue=min_eigenvalue,
            max_energy=max_energy,
            energy_rule=energy_rule,
            xp=jnp,
        )
        mask = keep if mask is None else mask & keep
    if spec.n_components is not None:
        leading = jnp.arange(a.shape[-1]) < spec.n_components
        mask = jnp.broadcast_to(leading, eigenvalues.shape) if mask is None else mask & leading
    return eigenvalues, eigenvectors, mask


def _forward(eigenvalues, eigenvectors, mask, spec):
    if spec.kind == "log":
        return svdpi.matrix_log(eigenvalues, eigenvectors, mask=mask, xp=jnp)
    return svdpi.matrix_power(eigenvalues, eigenvectors, spec.p, mask=mask, xp=jnp)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _matrix_function(a, mask, spec):
    return _forward(*_eigenpairs_and_mask(a, mask, spec), spec)


@_matrix_function.defjvp
def _matrix_function_jvp(spec, primals, tangents):
    (a, mask), (tangent_a, _) = primals, tangents
    eigenvalues, eigenvectors, mask = _eigenpairs_and_mask(a, mask, spec)
    value = _forward(eigenvalues, eigenvectors, mask, spec)
    # Differentiable once, for every method (see first_order_only).
    guard = first_order_only(f"svdpi.jax.matrix_{spec.kind}", spec.method)
    w, v = guard(eigenvalues), guard(eigenvectors)
    options = {"mask": mask, "method": spec.method, "num_iters": spec.num_iters, "xp": jnp}
    if spec.kind == "log":
        tangent = svdpi.matrix_log_jvp(w, v, tangent_a, **options)
    else:
        tangent = svdpi.matrix_power_jvp(w, v, spec.p, tangent_a, **options)
    return value, tangent


def _call(a, mask, spec):
    check_method(spec.method, MATRIX_FUNCTION_METHODS)
    check_num_iters(spec.num_iters)
    a = jnp.asarray(a)
    check_floating(a, "a", jnp)
    n = check_square(a, "a", allow_empty=True)  # n = 0: empty results, as svdpi.jax.eig
    if mask is not None:
        mask = jnp.asarray(mask)
        check_mask(mask, tuple(a.shape[:-1]), jnp)
    if spec.n_components is not None and not 1 <= spec.n_components <= n:
        raise ValueError(f"n_components must be in [1, {n}], got {spec.n_components}")
    return _matrix_function(a, mask, spec)


def matrix_power(
    a: Any, p: float, /, *, mask: Any = None, method: str = "pi", num_iters: int = 19
) -> Any:
    """Matrix power ``a^p`` of symmetric PSD matrices, differentiable by JAX.

    The values of :func:`svdpi.matrix_power` on the eigenpairs of ``a``; the
    derivative is :func:`svdpi.matrix_power_jvp` (reverse mode: JAX's
    transposition of it, equal to :func:`svdpi.matrix_power_vjp`).

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64.
    p : float
        A finite real exponent (static): ``0.5`` the square root, ``-0.5``
        the whitening matrix, ``-1`` the inverse.
    mask : array of bool, shape (..., n), optional
        Eigenpairs (in descending order of eigenvalue) to use.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.matrix_power_vjp`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``a^p``, symmetric.

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``. Differentiable once: a second
    derivative raises ``NotImplementedError``. ``mask`` gets no gradient.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    >>> root = svdpi.jax.matrix_power(a, 0.5)
    >>> bool(jnp.allclose(root @ root, a))
    True
    >>> g = jax.grad(lambda m: jnp.trace(svdpi.jax.matrix_power(m, 0.5, method="exact")))(a)
    >>> bool(jnp.allclose(g, 0.5 * svdpi.jax.matrix_power(a, -0.5)))  # d tr √A = A^{-1/2} / 2
    True
    """
    p = check_exponent(p)
    return _call(a, mask, _Spec("power", p, method, num_iters))


def matrix_log(a: Any, /, *, mask: Any = None, method: str = "pi", num_iters: int = 19) -> Any:
    """Matrix logarithm of symmetric positive definite matrices, differentiable by JAX.

    The values of :func:`svdpi.matrix_log`; the derivative is
    :func:`svdpi.matrix_log_jvp` (reverse mode equal to :func:`svdpi.matrix_log_vjp`).

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive definite, float32 or float64.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.matrix_log_vjp`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``log a``, symmetric.

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``. Differentiable once: a second
    derivative raises ``NotImplementedError``. ``mask`` gets no gradient.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.diag(jnp.array([3.0, 1.0, 1.0]))
    >>> g = jax.grad(lambda m: jnp.trace(svdpi.jax.matrix_log(m, method="exact")))(a)
    >>> bool(jnp.allclose(g, jnp.linalg.inv(a)))  # d tr log A = A^{-1}, repeated λ or not
    True
    """
    return _call(a, mask, _Spec("log", 0.0, method, num_iters))


def zca_whitening_matrix(
    a: Any, /, *, mask: Any = None, method: str = "pi", num_iters: int = 19
) -> Any:
    """ZCA whitening matrix ``a^{-1/2}`` of covariance matrices, differentiable by JAX.

    :func:`matrix_power` with ``p = -0.5``: the values of
    :func:`svdpi.zca_whitening_matrix` on the eigenpairs of ``a``, and the
    derivative of :func:`svdpi.zca_whitening_matrix_vjp` (eigenvalues below
    the floor ``n · eps · max|λ|`` are raised to it; see there).

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Covariance matrices, float32 or float64.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.zca_whitening_matrix_vjp`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        The whitening matrix ``a^{-1/2}`` on the kept eigenpairs, symmetric.

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``. Differentiable once: a second
    derivative raises ``NotImplementedError``. ``mask`` gets no gradient.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    >>> w = svdpi.jax.zca_whitening_matrix(cov)
    >>> bool(jnp.allclose(w @ cov @ w, jnp.eye(2), atol=1e-5))
    True
    """
    return _call(a, mask, _Spec("power", -0.5, method, num_iters))


def pca_projector(
    a: Any,
    /,
    *,
    n_components: int | None = None,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
) -> Any:
    """Orthogonal projector on the leading eigenvectors of ``a``, differentiable by JAX.

    The values of :func:`svdpi.pca_projector` on the eigenvectors of ``a``
    (the matrix function with ``φ`` the 0/1 indicator of the kept
    eigenpairs); reverse mode equals :func:`svdpi.pca_projector_vjp`.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric (covariance) matrices, float32 or float64.
    n_components : int, optional
        Keep the first ``n_components`` eigenvectors (all when omitted).
    mask : array of bool, shape (..., n), optional
        Further restrict the kept eigenvectors.
    method : {"pi", "taylor", "analytic", "exact"}, default "pi"
        See :func:`svdpi.pca_projector_vjp`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        The projector ``V_k V_kᵀ`` on the kept eigenvectors, symmetric.

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``. Differentiable once: a second
    derivative raises ``NotImplementedError``. ``mask`` gets no gradient.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> svdpi.jax.pca_projector(jnp.diag(jnp.array([1.0, 3.0, 2.0])), n_components=2)
    Array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    if n_components is not None:
        n_components = check_integer(n_components, "n_components", minimum=1)
    return _call(a, mask, _Spec("power", 0.0, method, num_iters, n_components=n_components))
