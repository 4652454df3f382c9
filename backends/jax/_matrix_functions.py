"""Functions of a symmetric matrix for JAX: :func:`spectral_map` and its named cases.

Each public function here is ``F(a) = V diag(f(λ)) Vᵀ`` for the eigenpairs of
``a`` and a ``svdpi.functions.SpectralFunction`` ``f``, through one
``jax.custom_jvp`` (:mod:`svdpi.jax._spectral`) whose rule is the core's
:func:`svdpi.spectral_map_jvp` for the chosen ``method``. The functions take
the matrix, not its eigenpairs, because ``method="exact"`` (Daleckii–Krein)
is a derivative of ``F`` itself rather than a chain rule through ``eig``;
the eigendecomposition runs once per call.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    check_exponent,
    check_floating,
    check_function,
    check_integer,
    check_mask,
    check_method,
    check_num_iters,
    check_square,
)
from svdpi.functions import Exp, Log, Power

from ._spectral import Spec, apply

_LOG = Log()
_EXP = Exp()


def check_hashable(fn: Any) -> None:
    """A spectral function is a static argument of JAX's tracing: it must be hashable."""
    try:
        hash(fn)
    except TypeError:
        raise TypeError(
            f"fn must be hashable, got an unhashable {type(fn).__name__}: svdpi.jax passes it "
            "to JAX as a static argument (jit keys and custom_jvp rules compare it by hash). "
            "Make a SpectralFunction subclass a frozen dataclass "
            "(@dataclasses.dataclass(frozen=True)), or leave __eq__ and __hash__ to object"
        ) from None


def call(a: Any, mask: Any, spec: Spec) -> Any:
    """Check the arguments of a public function and apply ``spec``'s map to ``a``."""
    check_method(spec.method, MATRIX_FUNCTION_METHODS)
    check_num_iters(spec.num_iters)
    a = jnp.asarray(a)
    check_floating(a, "a", jnp, allow_complex=True)
    n = check_square(a, "a", allow_empty=True)  # n = 0: empty results, as svdpi.jax.eig
    if mask is not None:
        mask = jnp.asarray(mask)
        check_mask(mask, tuple(a.shape[:-1]), jnp)
    if spec.n_components is not None and not 1 <= spec.n_components <= n:
        raise ValueError(f"n_components must be in [1, {n}], got {spec.n_components}")
    return apply(a, mask, spec)


def spectral_map(
    a: Any, fn: Any, *, mask: Any = None, method: str = "exact", num_iters: int = 19
) -> Any:
    """A spectral function ``F(a) = V diag(f(λ)) Vᵀ`` of symmetric matrices, differentiable by JAX.

    The values of :func:`svdpi.spectral_map` on the eigenpairs of ``a``;
    the derivative is :func:`svdpi.spectral_map_jvp` (forward mode) and its
    transposition by JAX, equal to :func:`svdpi.spectral_map_vjp` (reverse
    mode); with ``method="exact"`` the second derivative is
    :func:`svdpi.spectral_map_hvp`. Every other function of this module is a
    call of this one.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric matrices, float32 or float64, or complex Hermitian ones,
        complex64 or complex128 (float64 and complex128 need
        ``jax_enable_x64``); only ``(a + aᴴ) / 2`` is used.
    fn : svdpi.functions.SpectralFunction
        The function of the eigenvalues: a built-in (``Power(0.5)``,
        ``Log()``, ``Exp()``, ``Clamp(1e-4)``, ``Softplus()``, ``Abs()``) or
        a user's (``Custom(f, df, d2f)``, or a hashable subclass). A static
        argument: it must be hashable, and JAX traces again for a function
        that compares unequal.
    mask : array of bool, shape (..., n), optional
        Eigenpairs (in descending order of eigenvalue) to use; the others
        are left out of the sum. No gradient flows through it.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        The derivative: ``"exact"`` is the derivative of ``F`` (finite and
        independent of the eigenbasis at repeated eigenvalues); the others
        are the chain rule through the eigenpairs with the eigenvector
        gradient of :func:`svdpi.eig_vjp` (see
        :func:`svdpi.spectral_map_vjp`).
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp` (``"pi"`` and ``"taylor"`` only).

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``F(a)``, symmetric.

    Raises
    ------
    TypeError
        If ``fn`` is not a hashable ``SpectralFunction``.
    NotImplementedError
        For a second derivative with ``method`` other than ``"exact"``, and
        for a third derivative (see the notes).

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd``, ``jax.jacrev`` and ``jax.checkpoint``; ``fn``,
    ``method`` and ``num_iters`` are static.

    Second derivatives (``method="exact"`` only): ``jax.hessian``,
    ``jax.jacfwd(jax.grad(f))``, ``jax.jvp`` of ``jax.grad``,
    ``jax.grad(jax.grad(...))`` of scalar functions, in every order of
    forward and reverse mode, are the core's second derivative: finite and
    independent of the eigenbasis at repeated eigenvalues, where
    differentiating ``jnp.linalg.eigh`` twice gives NaN. They need the
    function's ``second_divided_difference`` (every built-in; ``Custom``
    with ``d2f``). A third derivative raises ``NotImplementedError``, as
    does a second derivative of ``"pi"``, ``"taylor"`` or ``"analytic"``
    (formulas in the eigenpairs whose own derivative svdpi does not define).

    Non-finite input is not checked (it cannot be read inside ``jax.jit``):
    NaN propagates, as through ``jnp.linalg.eigh``.

    Complex Hermitian input gives ``F(a)`` of its dtype, with the same
    derivatives (second derivatives included) in JAX's gradient convention,
    the conjugate of PyTorch's: reverse mode is ``conj(vjp(conj(ḡ)))`` of
    the core's :func:`svdpi.spectral_map_vjp` (see :doc:`/theory_complex`).

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> from svdpi.functions import Clamp, Log
    >>> svdpi.jax.spectral_map(jnp.diag(jnp.array([3.0, 1.0])), Clamp(2.0))  # ReEig: max(λ, 2)
    Array([[3., 0.],
           [0., 2.]], dtype=float32)

    The Hessian of ``trace(log a)`` is finite at a repeated eigenvalue
    (``d² tr log A [T, T] = −tr(A⁻¹ T A⁻¹ T)``):

    >>> def loss(m):
    ...     return jnp.trace(svdpi.jax.spectral_map(m, Log()))
    >>> t = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    >>> _, second = jax.jvp(jax.grad(loss), (2 * jnp.eye(2),), (t,))
    >>> float(jnp.sum(second * t))  # −tr((t / 2)²) = −0.5
    -0.5

    A complex Hermitian matrix: ``d tr log H = H⁻¹``, conjugated in JAX's
    convention:

    >>> h = jnp.array([[2.0, 1 + 1j], [1 - 1j, 3.0]], dtype=jnp.complex64)
    >>> g = jax.grad(lambda m: jnp.real(jnp.trace(svdpi.jax.spectral_map(m, Log()))))(h)
    >>> bool(jnp.allclose(g, jnp.conj(jnp.linalg.inv(h)), atol=1e-6))
    True
    """
    check_function(fn)
    check_hashable(fn)
    return call(a, mask, Spec(fn, method, num_iters, "svdpi.jax.spectral_map"))


def matrix_power(
    a: Any, p: float, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19
) -> Any:
    """Matrix power ``a^p`` of symmetric PSD matrices, differentiable by JAX.

    :func:`spectral_map` with ``Power(p)``: the values of
    :func:`svdpi.matrix_power` on the eigenpairs of ``a``, the derivative of
    :func:`svdpi.matrix_power_jvp` (reverse mode equal to
    :func:`svdpi.matrix_power_vjp`).

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    p : float
        A finite real exponent (static): ``0.5`` the square root, ``-0.5``
        the whitening matrix, ``-1`` the inverse. Eigenvalues are clamped at
        0 for ``p > 0`` and raised to svdpi's floor for ``p < 0``.
    mask : array of bool, shape (..., n), optional
        Eigenpairs (in descending order of eigenvalue) to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`. **Changed in 0.3** from ``"pi"``: the
        default is now the derivative of the function called; pass
        ``method="pi"`` for 0.2's gradient.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``a^p``, symmetric.

    Notes
    -----
    Transforms and second derivatives as in :func:`spectral_map`. ``mask``
    gets no gradient.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    >>> root = svdpi.jax.matrix_power(a, 0.5)
    >>> bool(jnp.allclose(root @ root, a))
    True
    >>> g = jax.grad(lambda m: jnp.trace(svdpi.jax.matrix_power(m, 0.5)))(a)
    >>> bool(jnp.allclose(g, 0.5 * svdpi.jax.matrix_power(a, -0.5)))  # d tr √A = A^{-1/2} / 2
    True
    """
    return _power(a, check_exponent(p), mask, method, num_iters, "svdpi.jax.matrix_power")


def _power(a, p, mask, method, num_iters, name, n_components=None):
    return call(a, mask, Spec(Power(p), method, num_iters, name, n_components=n_components))


def sqrtm(a: Any, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19) -> Any:
    """Matrix square root ``a^{1/2}`` of symmetric PSD matrices, differentiable by JAX.

    ``matrix_power(a, 0.5, ...)``: the square-root normalisation of
    covariance pooling (MPN-COV, iSQRT-COV). Negative eigenvalues (round-off
    of a PSD matrix) count as 0.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`. **Changed in 0.3** from ``"pi"``.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``a^{1/2}``, symmetric.

    Notes
    -----
    Transforms and second derivatives as in :func:`spectral_map`.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> svdpi.jax.sqrtm(jnp.diag(jnp.array([4.0, 9.0])))
    Array([[2., 0.],
           [0., 3.]], dtype=float32)
    >>> jax.grad(lambda m: jnp.trace(svdpi.jax.sqrtm(m)))(jnp.eye(2) * 4.0)  # A^{-1/2} / 2
    Array([[0.25, 0.  ],
           [0.  , 0.25]], dtype=float32)
    """
    return _power(a, 0.5, mask, method, num_iters, "svdpi.jax.sqrtm")


def inv_sqrtm(a: Any, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19) -> Any:
    """Inverse matrix square root ``a^{-1/2}`` of symmetric PD matrices, differentiable by JAX.

    ``matrix_power(a, -0.5, ...)``: the whitening matrix. Eigenvalues below
    svdpi's floor ``max(n · eps · max|λ|, smallest normal)`` are raised to it.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive definite, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`. **Changed in 0.3** from ``"pi"``;
        :func:`zca_whitening_matrix`, the same map for the paper's layer,
        keeps ``"pi"``.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``a^{-1/2}``, symmetric.

    Notes
    -----
    Transforms and second derivatives as in :func:`spectral_map`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    >>> w = svdpi.jax.inv_sqrtm(cov)
    >>> bool(jnp.allclose(w @ cov @ w, jnp.eye(2), atol=1e-5))
    True
    """
    return _power(a, -0.5, mask, method, num_iters, "svdpi.jax.inv_sqrtm")


def logm(a: Any, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19) -> Any:
    """Matrix logarithm of symmetric positive definite matrices, differentiable by JAX.

    :func:`spectral_map` with ``Log()``: the values of
    :func:`svdpi.matrix_log`, the derivative of :func:`svdpi.matrix_log_jvp`
    (reverse mode equal to :func:`svdpi.matrix_log_vjp`); the log-Euclidean
    map of SPD matrices. Eigenvalues below svdpi's floor are raised to it.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive definite, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`. **Changed in 0.3** from ``"pi"``.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``log a``, symmetric.

    Notes
    -----
    Transforms and second derivatives as in :func:`spectral_map`.
    :func:`matrix_log` is the same function under its 0.2 name.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.diag(jnp.array([3.0, 1.0, 1.0]))
    >>> g = jax.grad(lambda m: jnp.trace(svdpi.jax.logm(m)))(a)
    >>> bool(jnp.allclose(g, jnp.linalg.inv(a)))  # d tr log A = A^{-1}, repeated λ or not
    True
    """
    return call(a, mask, Spec(_LOG, method, num_iters, "svdpi.jax.logm"))


def matrix_log(a: Any, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19) -> Any:
    """Matrix logarithm: :func:`logm` under its 0.2 name (kept as an alias).

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive definite, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`. **Changed in 0.3** from ``"pi"``.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``log a``, symmetric.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> svdpi.jax.matrix_log(jnp.diag(jnp.array([1.0, jnp.e])))
    Array([[0., 0.],
           [0., 1.]], dtype=float32)
    """
    return call(a, mask, Spec(_LOG, method, num_iters, "svdpi.jax.matrix_log"))


def expm(a: Any, /, *, mask: Any = None, method: str = "exact", num_iters: int = 19) -> Any:
    """Matrix exponential of symmetric matrices, differentiable by JAX.

    :func:`spectral_map` with ``Exp()``: ``V diag(e^λ) Vᵀ``, the inverse of
    :func:`logm` (SPD matrices from symmetric ones). Entries that overflow
    are ``inf``.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric, float32 or float64, or the complex
        Hermitian equivalent (complex64, complex128).
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        See :func:`spectral_map`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        ``exp a``, symmetric positive definite.

    Notes
    -----
    Transforms and second derivatives as in :func:`spectral_map`. For
    symmetric input it equals ``jax.scipy.linalg.expm`` (a Padé
    approximant), whose derivative JAX differentiates through the
    approximant; here the derivative is the exact Daleckii–Krein formula.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> s = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    >>> bool(jnp.allclose(svdpi.jax.logm(svdpi.jax.expm(s)), s, atol=1e-6))
    True
    """
    return call(a, mask, Spec(_EXP, method, num_iters, "svdpi.jax.expm"))


def zca_whitening_matrix(
    a: Any, /, *, mask: Any = None, method: str = "pi", num_iters: int = 19
) -> Any:
    """ZCA whitening matrix ``a^{-1/2}`` of covariances, with the paper's gradient by default.

    :func:`inv_sqrtm` for the paper's layers: the values of
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
        The paper's SVD-PI gradient by default (unlike :func:`inv_sqrtm`,
        whose default is ``"exact"``); see :func:`spectral_map`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        The whitening matrix ``a^{-1/2}`` on the kept eigenpairs, symmetric.

    Notes
    -----
    Transforms as in :func:`spectral_map`; second derivatives with
    ``method="exact"`` only. ``mask`` gets no gradient.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    >>> w = svdpi.jax.zca_whitening_matrix(cov)
    >>> bool(jnp.allclose(w @ cov @ w, jnp.eye(2), atol=1e-5))
    True
    """
    return _power(a, -0.5, mask, method, num_iters, "svdpi.jax.zca_whitening_matrix")


def pca_projector(
    a: Any,
    /,
    *,
    n_components: int | None = None,
    mask: Any = None,
    method: str = "pi",
    num_iters: int = 19,
) -> Any:
    """Projector on the leading eigenvectors of ``a``, with the paper's gradient by default.

    The values of :func:`svdpi.pca_projector` on the eigenvectors of ``a``
    (the spectral map of ``Power(0)``, the constant 1, on the kept
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
        The paper's gradient by default; see :func:`spectral_map`.
    num_iters : int, default 19
        See :func:`svdpi.eig_vjp`.

    Returns
    -------
    jax.Array, shape (..., n, n)
        The projector ``V_k V_kᵀ`` on the kept eigenvectors, symmetric.

    Notes
    -----
    Transforms as in :func:`spectral_map`; second derivatives with
    ``method="exact"`` only. ``mask`` gets no gradient.

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
    return _power(
        a, 0.0, mask, method, num_iters, "svdpi.jax.pca_projector", n_components=n_components
    )
