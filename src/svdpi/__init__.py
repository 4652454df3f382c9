"""svdpi: backpropagation-friendly eigendecomposition on any array API library.

Exact eigenpairs in the forward pass (an SVD / symmetric eigensolver), and
the gradient of power iteration with deflation in the backward pass (Wang,
Dang, Hu, Fua & Salzmann, "Backpropagation-Friendly Eigendecomposition",
NeurIPS 2019), computed in closed form. The core is written once against the
Python array API standard; :mod:`svdpi.torch` adds autograd and layers, and
:mod:`svdpi.cupy` GPU fast paths. Every function of a symmetric matrix is a
:func:`spectral_map` of a ``svdpi.functions.SpectralFunction``, with the
exact (Daleckii–Krein) derivative, the paper's, and second derivatives.
"""

from . import functions
from ._eig import EigResult, eig
from ._gradient import eig_jvp, eig_vjp
from ._matrix_functions import (
    matrix_log,
    matrix_log_jvp,
    matrix_log_vjp,
    matrix_power,
    matrix_power_jvp,
    matrix_power_vjp,
)
from ._spectral_maps import spectral_map, spectral_map_hvp, spectral_map_jvp, spectral_map_vjp
from ._svd import SVDResult, svd
from ._svd_gradient import svd_jvp, svd_vjp
from ._svd_maps import (
    polar,
    polar_jvp,
    polar_vjp,
    singular_value_map,
    singular_value_map_jvp,
    singular_value_map_vjp,
)
from ._truncation import Truncation
from ._whitening import (
    pca_projector,
    pca_projector_vjp,
    truncation_mask,
    zca_whitening_matrix,
    zca_whitening_matrix_vjp,
)

__version__ = "0.3.0"

__all__ = [
    "EigResult",
    "SVDResult",
    "Truncation",
    "eig",
    "eig_jvp",
    "eig_vjp",
    "functions",
    "matrix_log",
    "matrix_log_jvp",
    "matrix_log_vjp",
    "matrix_power",
    "matrix_power_jvp",
    "matrix_power_vjp",
    "pca_projector",
    "pca_projector_vjp",
    "polar",
    "polar_jvp",
    "polar_vjp",
    "singular_value_map",
    "singular_value_map_jvp",
    "singular_value_map_vjp",
    "spectral_map",
    "spectral_map_hvp",
    "spectral_map_jvp",
    "spectral_map_vjp",
    "svd",
    "svd_jvp",
    "svd_vjp",
    "truncation_mask",
    "zca_whitening_matrix",
    "zca_whitening_matrix_vjp",
]
