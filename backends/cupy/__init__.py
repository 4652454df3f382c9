"""CuPy adapter: svdpi's functions on CuPy arrays, with GPU fast paths.

CuPy has no autograd: run :func:`eig` forward, keep its result, and call the
VJP functions (:func:`eig_vjp`, :func:`zca_whitening_matrix_vjp`, ...) by
hand. The functions here are the core's own: :func:`svdpi.eig_vjp` and the
others already accept CuPy arrays (CuPy arrays out, same device and dtype)
and route them, through :mod:`svdpi._dispatch`, to this package's fast
paths:

* the coefficient matrix of the SVD-PI gradient and its product with
  ``Vᵀ ḡV`` in one fused elementwise CUDA kernel (:func:`coefficient_matrix`
  exposes ``A`` itself);
* the symmetric eigensolver picked per shape by :func:`choose_eigh_solver`
  (batched Jacobi for many small matrices, divide and conquer for large ones);
* no host synchronisation in any VJP or JVP.

Requires CuPy (``pip install 'svdpi[cupy]'``).
"""

try:
    import cupy  # noqa: F401
except ImportError as error:
    raise ImportError(
        "svdpi.cupy needs CuPy, which is not installed (or failed to import: "
        f"{error}). Install the wheel matching your CUDA, e.g. "
        "pip install 'svdpi[cupy]' or pip install cupy-cuda12x. "
        "The core, svdpi.eig / svdpi.eig_vjp, works without it on NumPy and PyTorch arrays."
    ) from error

from svdpi import (
    EigResult,
    eig,
    eig_jvp,
    eig_vjp,
    pca_projector,
    pca_projector_vjp,
    truncation_mask,
    zca_whitening_matrix,
    zca_whitening_matrix_vjp,
)
from svdpi.adapter import register as _register

from . import _native
from ._native import coefficient_matrix, solve_eigh
from ._solver_policy import (
    SOLVERS,
    SYEVD_LOOP_MAX_BATCH,
    SYEVJ_BATCHED_MAX_N,
    choose_eigh_solver,
)

# The core's fast paths for CuPy arrays (see svdpi._dispatch). svdpi's
# "svdpi.native" entry point "cupy" names this package, so the core imports it
# (and this runs) when CuPy arrays first reach svdpi.
_register("cupy", eigh=_native.eigh, coefficient_product=_native.coefficient_product)

__all__ = [
    "SOLVERS",
    "SYEVD_LOOP_MAX_BATCH",
    "SYEVJ_BATCHED_MAX_N",
    "EigResult",
    "choose_eigh_solver",
    "coefficient_matrix",
    "eig",
    "eig_jvp",
    "eig_vjp",
    "pca_projector",
    "pca_projector_vjp",
    "solve_eigh",
    "truncation_mask",
    "zca_whitening_matrix",
    "zca_whitening_matrix_vjp",
]
