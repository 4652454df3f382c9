"""The forward pass: an exact symmetric eigendecomposition, largest eigenvalue first."""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace, is_lazy_array

from ._complex import adjoint, canonical_columns, is_complex
from ._dispatch import DECLINED, call_native
from ._typing import Array, Namespace
from ._validation import check_floating, check_square


class EigResult(NamedTuple):
    """Eigenpairs of a batch of symmetric or Hermitian matrices, like the array API's ``eigh``.

    Attributes
    ----------
    eigenvalues : array, shape (..., n)
        Real, sorted in descending order.
    eigenvectors : array, shape (..., n, n)
        Orthonormal (unitary for complex input); column ``j`` belongs to
        ``eigenvalues[..., j]``.
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

    A complex ``a`` is checked as its real and imaginary parts (``|a|`` could
    overflow for finite entries near the dtype's maximum), so a native step
    only ever sees real arrays. PyTorch's ``meta`` tensors have no values:
    the answer is True, as for lazy arrays.
    """
    if math.prod(a.shape) == 0:
        return True
    if getattr(getattr(a, "device", None), "type", None) == "meta":
        return True
    if is_complex(a, xp):
        return all_finite(xp.real(a), xp) and all_finite(xp.imag(a), xp)
    # The native providers (PyTorch, CuPy) know their own arrays, which are eager.
    answer = call_native(xp, "all_finite", a)
    if answer is not DECLINED:
        return answer
    if is_lazy_array(a):
        return True
    return bool(xp.max(xp.abs(a)) < math.inf)


def eig(
    a: Array,
    /,
    *,
    canonical: bool = False,
    check_finite: bool = True,
    xp: Namespace | None = None,
) -> EigResult:
    """Eigendecomposition of symmetric or Hermitian matrices, largest eigenvalue first.

    The forward pass of SVD-PI (Wang et al., 2019): the eigenpairs are exact
    (a LAPACK/cuSOLVER symmetric eigensolver); differentiate them with
    :func:`eig_vjp` / :func:`eig_jvp`, or with :func:`svdpi.torch.eig` in PyTorch.

    Parameters
    ----------
    a : array, shape (..., n, n)
        Real symmetric (float32, float64) or complex Hermitian (complex64,
        complex128) matrices, positive semi-definite for the paper's
        gradient, any array API library (NumPy, CuPy, PyTorch, ...). Only
        the Hermitian part ``(a + aᴴ) / 2`` (``(a + aᵀ) / 2`` for real
        input) is used, so a slightly asymmetric input (round-off in
        ``X Xᴴ``) is well defined and every backend reads the same entries.
        ``n = 0`` and empty batches give empty results, as ``xp.linalg.eigh`` does.
    canonical : bool, default False
        Fix the arbitrary sign (real input) or phase (complex input) of each
        eigenvector: the first entry of largest magnitude of each column is
        made real and positive. The eigenvectors then depend only on ``a``
        where its eigenvalues are distinct (see Notes); pass the same flag
        to :func:`eig_vjp` / :func:`eig_jvp` to differentiate them.
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
        ``xp.linalg.eigh``), arrays of ``a``'s namespace and device. The
        eigenvalues are real (float32 or float64; for complex input, of the
        same precision), the eigenvectors have ``a``'s dtype.

    Notes
    -----
    For a positive semi-definite matrix the SVD and the eigendecomposition
    coincide; the paper computes the SVD, svdpi calls the (faster) symmetric
    eigensolver. If ``a`` is not positive semi-definite, its eigenvalues are
    still returned exactly, negative ones included; power iteration is not
    defined for them, and the gradients treat every eigenvalue below
    ``n · eps · max|λ|`` as that floor (see :func:`eig_vjp`).

    Each eigenvector is determined only up to a sign (real input) or a
    phase ``e^{iφ}`` (complex input), and inside a repeated eigenvalue only
    up to a rotation of the eigenspace; which one the solver returns varies
    between libraries, devices and versions. ``canonical=True`` removes the
    first freedom: with distinct eigenvalues, and the largest entry of each
    eigenvector larger than the others by more than round-off, the result
    is the same from run to run and across devices (to round-off). It
    costs ``O(n²)`` per matrix. A loss of complex eigenvectors that depends
    on their phase has a gradient only with ``canonical=True``.

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

    A complex Hermitian matrix: real eigenvalues, and with ``canonical=True``
    the largest entry of each eigenvector real and positive.

    >>> h = np.array([[2.0, 1 + 1j], [1 - 1j, 3.0]])
    >>> w, v = svdpi.eig(h, canonical=True)
    >>> w
    array([4., 1.])
    >>> np.round(v, 4)
    array([[ 0.4082+0.4082j,  0.8165+0.j    ],
           [ 0.8165+0.j    , -0.4082+0.4082j]])
    >>> bool(np.allclose((v * w) @ v.conj().T, h))
    True
    """
    if xp is None:
        xp = array_namespace(a)
    check_floating(a, "a", xp, allow_complex=True)
    check_square(a, "a", allow_empty=True)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    if check_finite and not all_finite(a, xp):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )
    # The eigenvalues of -a, ascending, are those of a, descending, with the same
    # eigenvectors: no flip afterwards (a copy, or in NumPy a negative-stride view
    # that torch.from_numpy and many C extensions reject). -(a + aᴴ)/2 is formed
    # as (a − aᴴ)/2 − a: a + aᴴ overflows for entries above half the dtype's
    # maximum, which eigh handles, while a − aᴴ is 0 for a Hermitian input,
    # whose -a then comes out exactly (subnormal entries too, which halving
    # each term would round). On the diagonal of a complex input the imaginary
    # parts cancel exactly: (a_ii − conj(a_ii))/2 − a_ii = −Re a_ii.
    negated = (a - adjoint(a, xp)) * 0.5 - a
    # NumPy: numpy.linalg.eigh (LAPACK syevd over the batch in one C loop).
    # scipy.linalg.eigh(driver="evd") was measured no faster on single matrices
    # up to n = 1024 (0.9-1.0x; benchmarks/bench_eig.py), so it is not used.
    # Native solvers are registered for real symmetric input; a complex
    # Hermitian one goes to the library's own eigh.
    pairs = DECLINED if is_complex(a, xp) else call_native(xp, "eigh", negated)
    negated_eigenvalues, eigenvectors = xp.linalg.eigh(negated) if pairs is DECLINED else pairs
    eigenvalues = -negated_eigenvalues
    if canonical and math.prod(a.shape) > 0:
        eigenvectors, _ = canonical_columns(eigenvectors, xp)
    return EigResult(eigenvalues, eigenvectors)
