"""The forward pass of the SVD: an exact reduced SVD, singular values descending.

Also the argument checks and small complex-aware helpers the SVD modules
share, and the optional deterministic phase convention (``canonical=True``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace

from ._complex import canonical_columns, is_complex, real_dtype
from ._eig import all_finite
from ._typing import Array, Namespace

#: The dtypes the SVD functions accept.
SVD_DTYPES = "float32, float64, complex64 or complex128"


class SVDResult(NamedTuple):
    """A reduced singular value decomposition ``a = U diag(S) Vh``, like ``xp.linalg.svd``'s.

    Attributes
    ----------
    U : array, shape (..., m, k)
        Left singular vectors (columns), ``k = min(m, n)``.
    S : array, shape (..., k)
        Singular values, real, sorted in descending order.
    Vh : array, shape (..., k, n)
        Right singular vectors (rows), conjugate-transposed.
    """

    U: Array
    S: Array
    Vh: Array


def check_svd_dtype(x: Array, name: str, xp: Namespace) -> None:
    """Require a float32, float64, complex64 or complex128 array; name the argument otherwise."""
    dtype = x.dtype
    if dtype in (xp.float32, xp.float64, xp.complex64, xp.complex128):
        return
    if xp.isdtype(dtype, ("real floating", "complex floating")):
        raise TypeError(
            f"{name} has dtype {dtype}; half precision is not supported, upcast to "
            "float32 (or float64) first, e.g. a.astype(float32) / a.float()"
        )
    raise TypeError(f"{name} must have a floating dtype ({SVD_DTYPES}), got {dtype}")


def check_matrix(x: Array, name: str) -> tuple[int, int]:
    """Require shape (..., m, n); return (m, n). ``m = 0`` or ``n = 0`` is allowed."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"{name} must have shape (..., m, n), got {len(shape)}-d shape {shape}")
    return shape[-2], shape[-1]


def check_factors(u: Array, s: Array, vh: Array, xp: Namespace) -> tuple[int, int, int]:
    """Check a ``(U, S, Vh)`` triple as :func:`svd` returns it; return ``(m, n, k)``."""
    check_svd_dtype(u, "u", xp)
    check_svd_dtype(vh, "vh", xp)
    if u.dtype != vh.dtype:
        raise TypeError(f"u ({u.dtype}) and vh ({vh.dtype}) must have the same dtype")
    expected = real_dtype(u.dtype, xp)
    if s.dtype != expected:
        raise TypeError(f"s must have the real dtype {expected} of u and vh, got {s.dtype}")
    m, k = check_matrix(u, "u")
    k_vh, n = check_matrix(vh, "vh")
    batch = tuple(u.shape[:-2])
    if k != min(m, n) or k_vh != k or tuple(vh.shape[:-2]) != batch:
        raise ValueError(
            "u and vh must be the factors of a reduced SVD, shapes (..., m, k) and "
            f"(..., k, n) with k = min(m, n); got {tuple(u.shape)} and {tuple(vh.shape)}"
        )
    if tuple(s.shape) != (*batch, k):
        raise ValueError(f"s must have shape {(*batch, k)}, got {tuple(s.shape)}")
    return m, n, k


def check_cotangent(x: Array | None, name: str, shape: tuple[int, ...], dtype) -> None:
    """Require a (co)tangent of exactly ``shape`` and ``dtype`` (``None`` passes)."""
    if x is None:
        return
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array or None, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {x.dtype}")


def canonicalize(u: Array, vh: Array, xp: Namespace) -> tuple[Array, Array]:
    """``(U D, Dᴴ Vh)`` with ``D`` diagonal, unit modulus, making each ``U[i*, j]`` real > 0.

    ``i*`` is the first entry of largest magnitude in column ``j`` of ``U``.
    ``U diag(S) Vh`` is unchanged (``D`` commutes with ``diag(S)``).
    """
    if u.shape[-1] == 0 or u.shape[-2] == 0:
        return u, vh
    u, phase = canonical_columns(u, xp)
    conjugate = xp.conj(phase) if is_complex(u, xp) else phase
    return u, vh * conjugate[..., :, None]


def svd(
    a: Array,
    /,
    *,
    canonical: bool = False,
    check_finite: bool = True,
    xp: Namespace | None = None,
) -> SVDResult:
    """Reduced singular value decomposition of real or complex matrices, largest first.

    The forward pass of svdpi's SVD: exact (the library's own LAPACK /
    cuSOLVER SVD, ``xp.linalg.svd``); differentiate it with :func:`svd_vjp`
    and :func:`svd_jvp`, or with :func:`svdpi.torch.svd` / :func:`svdpi.jax.svd`.

    Parameters
    ----------
    a : array, shape (..., m, n)
        Real or complex matrices (float32, float64, complex64 or
        complex128) of any array API library.
        ``m`` and ``n`` may differ either way; ``m = 0``, ``n = 0`` and
        empty batches give empty factors, as ``xp.linalg.svd`` does.
    canonical : bool, default False
        Fix the arbitrary sign (real) or phase (complex) of each singular
        pair: the first entry of largest magnitude of each left singular
        vector is made real and positive, and the right one is multiplied by
        the same factor. The result then depends only on ``a`` (see Notes).
    check_finite : bool, default True
        Raise ``ValueError`` if ``a`` has NaN or infinite entries (one host
        read: a GPU synchronisation). Lazy arrays (JAX, Dask) are not read:
        NaN propagates, as through ``xp.linalg.svd``.
    xp : array namespace, optional
        The namespace of ``a``; inferred when omitted.

    Returns
    -------
    SVDResult
        ``(U, S, Vh)`` with ``U`` (..., m, k), ``S`` (..., k) real and
        descending, ``Vh`` (..., k, n), ``k = min(m, n)``; ``a = U diag(S) Vh``.

    Notes
    -----
    Each singular pair ``(u_j, v_j)`` is determined only up to a common
    factor ``e^{iφ}`` (a sign for real input), and inside a repeated
    singular value only up to a unitary change of basis. ``canonical=True``
    removes the first freedom: the result is reproducible from run to run
    and across devices as long as the largest entry of each ``u_j`` is
    larger than the others by more than round-off and the singular values
    are distinct; a basis inside a repeated singular value stays the
    solver's choice. :func:`svd_vjp` and :func:`svd_jvp` take the same
    ``canonical`` flag and then differentiate the canonical factors.

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    >>> u, s, vh = svdpi.svd(a, canonical=True)
    >>> s
    array([3., 2.])
    >>> u
    array([[1., 0.],
           [0., 1.],
           [0., 0.]])
    >>> np.allclose((u * s) @ vh, a)
    True
    """
    if xp is None:
        xp = array_namespace(a)
    check_svd_dtype(a, "a", xp)
    check_matrix(a, "a")
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    if check_finite and not all_finite(a, xp):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    if canonical and math.prod(a.shape) > 0:
        u, vh = canonicalize(u, vh, xp)
    return SVDResult(u, s, vh)
