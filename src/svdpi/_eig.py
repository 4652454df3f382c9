"""The forward pass: an exact symmetric eigendecomposition, largest eigenvalue first."""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace, is_lazy_array

from ._dispatch import DECLINED, call_native
from ._typing import Array, Namespace
from ._validation import check_floating, check_square


class EigResult(NamedTuple):
    """Eigenpairs of a batch of symmetric matrices, like the array API's ``eigh`` result.

    Attributes
    ----------
    eigenvalues : array, shape (..., n)
        Sorted in descending order.
    eigenvectors : array, shape (..., n, n)
        Orthonormal; column ``j`` belongs to ``eigenvalues[..., j]``.
    """

    eigenvalues: Array
    eigenvectors: Array


def all_finite(a: Array, xp: Namespace) -> bool:
    """Whether every entry of ``a`` is finite, as far as it can be read on the host.

    ``max|a| < inf`` exactly when every entry is finite: NaN propagates
    through ``max`` (and compares false), and unlike a sum nothing can
    overflow. ``all(isfinite(a))``, which writes a boolean array first, was
    measured about 10x slower on a 512 x 512 float32 matrix (PyTorch, one
    CPU thread).

    A lazy array (JAX, traced under ``jax.jit`` or not, Dask, or any array
    whose values ``array_api_compat.is_lazy_array`` says cannot be read
    cheaply) is not read: the answer is True, the check is skipped, and NaN
    propagates to the results as it does through the library's own
    ``eigh``. Reading a JAX tracer would raise ``TracerBoolConversionError``.
    """
    if math.prod(a.shape) == 0:
        return True
    # The native providers (PyTorch, CuPy) know their own arrays, which are eager.
    answer = call_native(xp, "all_finite", a)
    if answer is not DECLINED:
        return answer
    if is_lazy_array(a):
        return True
    return bool(xp.max(xp.abs(a)) < math.inf)


def eig(a: Array, /, *, check_finite: bool = True, xp: Namespace | None = None) -> EigResult:
    """Eigendecomposition of symmetric positive semi-definite matrices, largest eigenvalue first.

    The forward pass of SVD-PI (Wang et al., 2019): the eigenpairs are exact
    (a LAPACK/cuSOLVER symmetric eigensolver); differentiate them with
    :func:`eig_vjp` / :func:`eig_jvp`, or with :func:`svdpi.torch.eig` in PyTorch.

    Parameters
    ----------
    a : array, shape (..., n, n)
        Symmetric positive semi-definite matrices, float32 or float64, any
        array API library (NumPy, CuPy, PyTorch, ...). Only the symmetric part
        ``(a + aᵀ) / 2`` is used, so a slightly asymmetric input (round-off in
        ``X Xᵀ``) is well defined and every backend reads the same entries.
        ``n = 0`` and empty batches give empty results, as ``xp.linalg.eigh`` does.
    check_finite : bool, default True
        Raise ``ValueError`` if ``a`` has NaN or infinite entries. This is the
        one place svdpi reads array values on the host (a GPU synchronisation);
        pass ``False`` to skip it. Lazy arrays (JAX, inside ``jax.jit`` or
        not; Dask) are never read: for them the check is skipped and NaN
        propagates to the eigenpairs, as through ``jax.numpy.linalg.eigh``.
    xp : array namespace, optional
        The namespace of ``a``; inferred when omitted.

    Returns
    -------
    EigResult
        ``(eigenvalues, eigenvectors)`` with eigenvalues in **descending**
        order (the SVD/PCA convention of the paper, the reverse of
        ``xp.linalg.eigh``), arrays of ``a``'s namespace, dtype and device.

    Notes
    -----
    For a positive semi-definite matrix the SVD and the eigendecomposition
    coincide; the paper computes the SVD, svdpi calls the (faster) symmetric
    eigensolver. If ``a`` is not positive semi-definite, its eigenvalues are
    still returned exactly, negative ones included; power iteration is not
    defined for them, and the gradients treat every eigenvalue below
    ``n · eps · max|λ|`` as that floor (see :func:`eig_vjp`).

    Examples
    --------
    >>> import numpy as np
    >>> import svdpi
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> w, v = svdpi.eig(a)
    >>> w
    array([3., 1.])
    >>> np.allclose(v @ np.diag(w) @ v.T, a)
    True
    """
    if xp is None:
        xp = array_namespace(a)
    check_floating(a, "a", xp)
    check_square(a, "a", allow_empty=True)
    if check_finite and not all_finite(a, xp):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )
    # The eigenvalues of -a, ascending, are those of a, descending, with the same
    # eigenvectors: no flip afterwards (a copy, or in NumPy a negative-stride view
    # that torch.from_numpy and many C extensions reject). -(a + aᵀ)/2 is formed
    # as (a − aᵀ)/2 − a: a + aᵀ overflows for entries above half the dtype's
    # maximum, which eigh handles, while a − aᵀ is 0 for a symmetric input,
    # whose -a then comes out exactly (subnormal entries too, which halving
    # each term would round). One elementwise pass more than 0.2.
    negated = (a - xp.matrix_transpose(a)) * 0.5 - a
    # NumPy: numpy.linalg.eigh (LAPACK syevd over the batch in one C loop).
    # scipy.linalg.eigh(driver="evd") was measured no faster on single matrices
    # up to n = 1024 (0.9-1.0x; benchmarks/bench_eig.py), so it is not used.
    pairs = call_native(xp, "eigh", negated)
    negated_eigenvalues, eigenvectors = xp.linalg.eigh(negated) if pairs is DECLINED else pairs
    eigenvalues = -negated_eigenvalues
    return EigResult(eigenvalues, eigenvectors)
