"""JAX derivatives for :func:`svdpi.eig`: a ``jax.custom_jvp`` around the core's ``eig_jvp``."""

from __future__ import annotations

import functools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import svdpi
from svdpi.adapter import check_floating, check_method, check_num_iters, check_square

_NO_SECOND_ORDER = (
    "{name} with method={method!r} is differentiable once: differentiating its "
    "derivative again (jax.hessian, jacfwd(jacrev(...)), grad(grad(...))) is not "
    "supported. The derivative rule is a formula in the eigenpairs whose own "
    "derivative svdpi does not define, and differentiating the formula would be wrong "
    "at repeated eigenvalues.{hint}"
)


@functools.cache
def first_order_only(name: str, method: str, hint: str = "") -> Any:
    """The identity, with a JVP rule that raises: marks values a derivative must not reach.

    The eigenpairs that a JVP rule passes to the core's JVP go through it.
    In a first derivative they are constants of the linear tangent map, and
    JAX never differentiates them; only a second derivative (a JVP of the
    rule itself) reaches this rule, and gets a clear error instead of the
    derivative of the formula (``hint`` ends the message). Cached: one
    function per argument tuple, not a new one (new to JAX's tracing caches)
    per call.
    """

    @jax.custom_jvp
    def identity(x):
        return x

    @identity.defjvp
    def _raise(primals, tangents):
        raise NotImplementedError(_NO_SECOND_ORDER.format(name=name, method=method, hint=hint))

    return identity


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _eig(a, method, num_iters, canonical):
    eigenvalues, eigenvectors = svdpi.eig(a, canonical=canonical, check_finite=False, xp=jnp)
    return eigenvalues, eigenvectors


@_eig.defjvp
def _eig_jvp_rule(method, num_iters, canonical, primals, tangents):
    (a,), (tangent_a,) = primals, tangents
    # Through _eig itself, so that a second derivative of "analytic" uses
    # this rule again for the eigenpairs' own derivatives.
    eigenvalues, eigenvectors = _eig(a, method, num_iters, canonical)
    w, v = eigenvalues, eigenvectors
    if method != "analytic":
        # The "analytic" coefficients 1 / (λ_i − λ_j) are differentiated
        # correctly by JAX (the exact second derivative of eigh, where it
        # exists); the series are not, so their second derivatives raise.
        guard = first_order_only(
            "svdpi.jax.eig", method, " method='analytic' has second derivatives."
        )
        w, v = guard(w), guard(v)
    tangent_w, tangent_v = svdpi.eig_jvp(
        w, v, tangent_a, method=method, num_iters=num_iters, canonical=canonical, xp=jnp
    )
    return (eigenvalues, eigenvectors), (tangent_w, tangent_v)


def eig(
    a: Any, *, method: str = "pi", num_iters: int = 19, canonical: bool = False
) -> svdpi.EigResult:
    """Differentiable eigendecomposition of symmetric PSD matrices, largest eigenvalue first.

    The forward values are those of :func:`svdpi.eig` (exact, from
    ``jax.numpy.linalg.eigh``); the derivative is the core's
    :func:`svdpi.eig_jvp` with the given ``method`` (a ``jax.custom_jvp``),
    by default the gradient of the paper's power iteration with deflation,
    finite for equal eigenvalues. Reverse mode (``jax.grad``, ``jax.vjp``,
    ``jax.jacrev``) is JAX's transposition of that linear rule, which equals
    :func:`svdpi.eig_vjp`.

    Parameters
    ----------
    a : array_like, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64, or complex
        Hermitian, complex64 or complex128 (float64 and complex128 need
        ``jax_enable_x64``). Only ``(a + aᴴ) / 2`` is used.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Derivative rule, see :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    canonical : bool, default False
        Make the first largest-magnitude entry of each eigenvector real and
        positive (see :func:`svdpi.eig`), and differentiate those
        eigenvectors (static).

    Returns
    -------
    svdpi.EigResult
        ``(eigenvalues, eigenvectors)`` as ``jax.Array``, eigenvalues descending.

    Raises
    ------
    NotImplementedError
        When a second derivative is taken with ``method="pi"`` or
        ``"taylor"`` (see the notes).

    Notes
    -----
    Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``, in float32 and (with
    ``jax_enable_x64``) float64; ``method`` and ``num_iters`` are static.

    Non-finite input is not checked (it cannot be read inside ``jax.jit``):
    like ``jax.numpy.linalg.eigh``, NaN propagates to the results and to
    the derivatives.

    Complex input: JAX's gradient convention (the conjugate of PyTorch's).
    Reverse mode transposes the forward rule, which chooses the
    eigenvectors' phase derivative ``vᴴ dv = 0``, so the cotangent is never
    seen and nothing is checked: a loss that depends on the arbitrary phase
    (``Re V``) gets the gradient of that choice, as through
    ``jax.numpy.linalg.eigh``. Use losses invariant under
    ``v_j → e^{iφ} v_j`` (``|V|``, ``V f(Λ) Vᴴ``) or ``canonical=True``.

    Second derivatives: with ``method="analytic"`` JAX differentiates the
    classical rule and gets the exact second derivative of ``eigh`` (at
    distinct eigenvalues). The ``"pi"`` and ``"taylor"`` series are
    differentiable once: a second derivative (``jax.hessian``,
    ``jacfwd(jacrev(f))``, ``grad(grad(f))``) raises ``NotImplementedError``
    rather than differentiate the formula, which would be wrong at repeated
    eigenvalues.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import svdpi.jax
    >>> a = jnp.diag(jnp.array([3.0, 1.0, 1.0]))
    >>> w, v = svdpi.jax.eig(a)
    >>> w
    Array([3., 1., 1.], dtype=float32)
    >>> g = jax.grad(lambda m: svdpi.jax.eig(m).eigenvectors[:, 1:].sum())(a)
    >>> bool(jnp.isfinite(g).all())  # eigenvectors of a repeated eigenvalue
    True

    Under ``jit`` and ``vmap``, with forward mode:

    >>> x = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    >>> jax.jit(jax.vmap(lambda m: svdpi.jax.eig(m).eigenvalues))(jnp.stack([x, 2 * x]))
    Array([[3., 1.],
           [6., 2.]], dtype=float32)
    >>> _, (dw, dv) = jax.jvp(lambda m: tuple(svdpi.jax.eig(m)), (x,), (jnp.eye(2),))
    >>> bool(jnp.allclose(dw, 1.0))  # a + t·I shifts every eigenvalue by t
    True

    A complex Hermitian matrix, with canonical eigenvectors:

    >>> h = jnp.array([[2.0, 1 + 1j], [1 - 1j, 3.0]], dtype=jnp.complex64)
    >>> w, v = svdpi.jax.eig(h, canonical=True)
    >>> w
    Array([4., 1.], dtype=float32)
    >>> g = jax.grad(lambda m: jnp.real(svdpi.jax.eig(m, canonical=True)[1]).sum())(h)
    >>> g.dtype
    dtype('complex64')
    """
    method = check_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    a = jnp.asarray(a)
    check_floating(a, "a", jnp, allow_complex=True)
    # n = 0 and empty batches give empty results, as in svdpi.eig and jnp.linalg.eigh.
    check_square(a, "a", allow_empty=True)
    eigenvalues, eigenvectors = _eig(a, method, num_iters, canonical)
    return svdpi.EigResult(eigenvalues, eigenvectors)
