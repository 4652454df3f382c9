"""Matrix powers and the logarithm: :func:`svdpi.spectral_map` of ``Power(p)`` and ``Log()``.

Thin wrappers kept for their names and documentation; the forward and every
derivative are those of :mod:`svdpi._spectral_maps`.
"""

from __future__ import annotations

from typing import Any

from ._spectral_maps import derivative, forward
from ._validation import check_exponent
from .functions import Log, Power

_LOG = Log()


def matrix_power(
    eigenvalues: Any, eigenvectors: Any, p: float, /, *, mask: Any = None, xp: Any = None
) -> Any:
    """Matrix power ``A^p = V diag(λ^p) Vᴴ`` of a symmetric or Hermitian PSD matrix.

    ``spectral_map(eigenvalues, eigenvectors, Power(p))``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of ``A`` (a batch of them), as returned by :func:`eig`.
    p : float
        Any finite real exponent (a Python or NumPy scalar): ``0.5`` is the
        matrix square root, ``-0.5`` the ZCA whitening matrix
        (:func:`zca_whitening_matrix`), ``-1`` the inverse.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use (e.g. from :func:`truncation_mask`); the others are
        left out of the sum. All are used when omitted.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``Σ_j mask_j · max(λ_j, c)^p · v_j v_jᴴ`` (symmetric, or Hermitian).

    Notes
    -----
    The eigenvalue clamp ``c`` (see :func:`spectral_map`):

    * ``p < 0``: eigenvalues below the floor ``max(n · eps · max|λ|,
      smallest normal)`` (zero, negative or lost to round-off) are raised
      to it, as :func:`zca_whitening_matrix` does, so a singular ``A`` gives
      a large but finite result where ``floor^p`` is representable. The
      floor is scale-free for every spectrum of normal numbers.
    * ``p >= 0``: negative eigenvalues (round-off of a PSD matrix) are
      clamped to zero, so ``A^p`` is real and ``0^p = 0`` for ``p > 0``
      (``A^0`` is the identity on the kept eigenpairs). For an indefinite
      ``A`` this is the power of its PSD part, also for integer ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> root = svdpi.matrix_power(*svdpi.eig(a), 0.5)
    >>> bool(np.allclose(root @ root, a))
    True
    >>> inverse = svdpi.matrix_power(*svdpi.eig(a), -1)
    >>> bool(np.allclose(inverse @ a, np.eye(2)))
    True
    """
    return forward(eigenvalues, eigenvectors, Power(check_exponent(p)), mask, xp)


def matrix_power_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    p: float,
    grad: Any,
    /,
    *,
    mask: Any = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to ``A`` of a loss of :func:`matrix_power` (vector-Jacobian product).

    ``spectral_map_vjp(eigenvalues, eigenvectors, Power(p), grad, ...)``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    p : float
        The exponent the forward used.
    grad : array, shape (..., n, n), or None
        Cotangent of ``A^p``; ``None`` means zero.
    mask : array of bool, shape (..., n), optional
        The mask the forward used.
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        ``"exact"``: the Daleckii–Krein derivative of the function as
        computed, basis-independent and finite at repeated eigenvalues (the
        default since svdpi 0.3). ``"pi"``, ``"taylor"``, ``"analytic"``: the
        chain rule through the eigenvalues and eigenvectors, with the
        eigenvector gradient of :func:`eig_vjp` (the paper's route; it
        depends on the basis chosen inside a repeated eigenspace, except for
        ``"analytic"``, which is infinite there). See :func:`spectral_map_vjp`.
    num_iters : int, default 19
        See :func:`eig_vjp`; ignored by ``"analytic"`` and ``"exact"``.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian, for complex input) gradient with respect to ``A``.

    Notes
    -----
    ``"exact"`` returns ``V (G ∘ Vᵀ sym(Ḡ) V) Vᵀ`` with
    ``G_ij = (φ_i − φ_j) / (λ_i − λ_j)`` and ``G_ii = φ'(λ_i)`` for
    ``φ_j = mask_j · max(λ_j, c)^p``: the derivative of exactly what the
    forward computes, with the mask held constant. Between a kept and a
    dropped eigenpair ``G_ij`` is ``φ_kept / (λ_i − λ_j)``, finite for any
    two distinct eigenvalues and NaN where the mask cuts through a repeated
    eigenvalue (no derivative). For ``0 < p < 1`` the derivative of ``λ^p``
    is unbounded near ``λ = 0`` (infinite at an eigenvalue exactly 0): add
    ``eps · I`` to ``A`` as the whitening layers do. The ``"pi"`` gradient is
    not the derivative of ``A^p``: for ``p = -1/2`` it was 85 % away from it
    at a relative eigenvalue gap of 1e-4 (issue 15), which is why the
    default changed to ``"exact"`` in svdpi 0.3.

    Examples
    --------
    At a repeated eigenvalue the exact gradient is finite and does not depend
    on the eigenbasis the solver returned:

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([2.0, 1.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> c, s = np.cos(0.3), np.sin(0.3)
    >>> v_rotated = v @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    >>> g = np.ones((3, 3))
    >>> exact = svdpi.matrix_power_vjp(w, v, -0.5, g)
    >>> rotated = svdpi.matrix_power_vjp(w, v_rotated, -0.5, g)
    >>> bool(np.allclose(exact, rotated, rtol=0, atol=1e-14))
    True
    >>> pi = svdpi.matrix_power_vjp(w, v, -0.5, g, method="pi")
    >>> pi_rotated = svdpi.matrix_power_vjp(w, v_rotated, -0.5, g, method="pi")
    >>> bool(np.allclose(pi, pi_rotated))
    False
    """
    fn = Power(check_exponent(p))
    return derivative(
        eigenvalues, eigenvectors, fn, grad, "grad", mask, method, num_iters, True, xp
    )


def matrix_power_jvp(
    eigenvalues: Any,
    eigenvectors: Any,
    p: float,
    tangent_a: Any,
    /,
    *,
    mask: Any = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Forward-mode derivative of :func:`matrix_power` (Jacobian-vector product).

    The exact transpose of :func:`matrix_power_vjp` with the same ``method``
    and ``num_iters``: ``<matrix_power_vjp(Ḡ), T> == <Ḡ, matrix_power_jvp(T)>``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    p : float
        The exponent the forward used.
    tangent_a : array, shape (..., n, n), or None
        Perturbation of ``A``; only its symmetric (Hermitian) part matters. ``None``
        means zero.
    mask, method, num_iters : optional
        See :func:`matrix_power_vjp` (``method="exact"`` by default).
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The perturbation of ``A^p`` (symmetric).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w, v = svdpi.eig(np.diag([4.0, 1.0]))
    >>> svdpi.matrix_power_jvp(w, v, 0.5, np.eye(2))  # d√λ = dλ / (2√λ)
    array([[0.25, 0.  ],
           [0.  , 0.5 ]])
    """
    fn = Power(check_exponent(p))
    return derivative(
        eigenvalues, eigenvectors, fn, tangent_a, "tangent_a", mask, method, num_iters, False, xp
    )


def matrix_log(eigenvalues: Any, eigenvectors: Any, /, *, mask: Any = None, xp: Any = None) -> Any:
    """Matrix logarithm ``log A = V diag(log λ) Vᴴ`` of a symmetric or Hermitian PD matrix.

    ``spectral_map(eigenvalues, eigenvectors, Log())``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        Eigenpairs of ``A`` (a batch of them), as returned by :func:`eig`.
    mask : array of bool, shape (..., n), optional
        Eigenpairs to use; the others are left out of the sum.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        ``Σ_j mask_j · log(max(λ_j, floor)) · v_j v_jᴴ`` (symmetric, or Hermitian).

    Notes
    -----
    Eigenvalues below the floor ``max(n · eps · max|λ|, smallest normal)``
    are raised to it, as in :func:`matrix_power` with ``p < 0``: a singular
    ``A`` gives large negative but finite entries. Add ``eps · I`` for a
    meaningful log-Euclidean metric.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> log_a = svdpi.matrix_log(*svdpi.eig(a))
    >>> bool(np.allclose(svdpi.matrix_power(*svdpi.eig(log_a), 1.0), log_a))
    True
    >>> np.round(np.linalg.eigvalsh(log_a), 6)  # log 1, log 3
    array([0.      , 1.098612])
    """
    return forward(eigenvalues, eigenvectors, _LOG, mask, xp)


def matrix_log_vjp(
    eigenvalues: Any,
    eigenvectors: Any,
    grad: Any,
    /,
    *,
    mask: Any = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Gradient with respect to ``A`` of a loss of :func:`matrix_log` (vector-Jacobian product).

    ``spectral_map_vjp(eigenvalues, eigenvectors, Log(), grad, ...)``.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    grad : array, shape (..., n, n), or None
        Cotangent of ``log A``; ``None`` means zero.
    mask, method, num_iters : optional
        As in :func:`matrix_power_vjp` (``method="exact"`` by default); with
        ``"exact"`` the divided differences are those of
        ``log(max(λ, floor))``, ``(log λ_i − log λ_j) / (λ_i − λ_j)``, formed
        without cancellation.
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        Symmetric (Hermitian, for complex input) gradient with respect to ``A``.

    Examples
    --------
    ``d trace(log A) = trace(A^{-1} dA)``, whatever the spectrum:

    >>> import numpy as np
    >>> import svdpi
    >>> a = np.diag([3.0, 1.0, 1.0])
    >>> w, v = svdpi.eig(a)
    >>> g = svdpi.matrix_log_vjp(w, v, np.eye(3))
    >>> bool(np.allclose(g, np.linalg.inv(a)))
    True
    """
    return derivative(
        eigenvalues, eigenvectors, _LOG, grad, "grad", mask, method, num_iters, True, xp
    )


def matrix_log_jvp(
    eigenvalues: Any,
    eigenvectors: Any,
    tangent_a: Any,
    /,
    *,
    mask: Any = None,
    method: str = "exact",
    num_iters: int = 19,
    xp: Any = None,
) -> Any:
    """Forward-mode derivative of :func:`matrix_log`, the transpose of :func:`matrix_log_vjp`.

    Parameters
    ----------
    eigenvalues, eigenvectors : array
        The eigenpairs the forward used.
    tangent_a : array, shape (..., n, n), or None
        Perturbation of ``A``; only its symmetric (Hermitian) part matters. ``None``
        means zero.
    mask, method, num_iters : optional
        See :func:`matrix_log_vjp` (``method="exact"`` by default).
    xp : array namespace, optional
        Inferred from the arrays when omitted.

    Returns
    -------
    array, shape (..., n, n)
        The perturbation of ``log A`` (symmetric).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> w, v = svdpi.eig(np.diag([np.e, 1.0]))
    >>> t = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> dlog = svdpi.matrix_log_jvp(w, v, t)  # (log e − log 1) / (e − 1)
    >>> bool(np.isclose(dlog[0, 1], 1 / (np.e - 1)))
    True
    """
    return derivative(
        eigenvalues, eigenvectors, _LOG, tangent_a, "tangent_a", mask, method, num_iters, False, xp
    )
