"""CuPy adapter: svdpi's functions on CuPy arrays.

CuPy has no autograd: run :func:`eig` forward, keep its result, and call the
VJP functions by hand. Requires CuPy (``pip install svdpi[cupy]``).
"""

try:
    import cupy  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the machine
    raise ImportError(
        "svdpi.cupy needs CuPy, which is not installed: pip install 'svdpi[cupy]' "
        "(or the cupy-cudaXXx wheel matching your CUDA)"
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

__all__ = [
    "EigResult",
    "eig",
    "eig_jvp",
    "eig_vjp",
    "pca_projector",
    "pca_projector_vjp",
    "truncation_mask",
    "zca_whitening_matrix",
    "zca_whitening_matrix_vjp",
]
