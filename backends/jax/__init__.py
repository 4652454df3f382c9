"""JAX adapter: svdpi's eigendecomposition and spectral maps with JAX derivatives, and whitening.

:func:`eig` returns exact eigenpairs whose derivative is the core's
power-iteration rule (a ``jax.custom_jvp`` around :func:`svdpi.eig_jvp`;
reverse mode is JAX's transposition of it, equal to :func:`svdpi.eig_vjp`),
under ``jit``, ``vmap``, ``grad``, ``jacfwd`` and ``jacrev``.
:func:`spectral_map` applies any ``svdpi.functions.SpectralFunction`` to
the eigenvalues of a symmetric matrix, with the core's derivatives
(``method="exact"`` by default, with second derivatives: ``jax.hessian``
and every composition of ``jvp`` and ``grad``); :func:`matrix_power`,
:func:`sqrtm`, :func:`inv_sqrtm`, :func:`logm` (alias :func:`matrix_log`),
:func:`expm`, :func:`zca_whitening_matrix` and :func:`pca_projector` are
calls of it; :func:`eig` and the spectral maps take complex Hermitian
matrices as well. :func:`zca_whitening` is the paper's grouped ZCA-whitening step
as a pure function for Flax or Equinox models, and :func:`whiten` applies
running statistics in evaluation. :func:`svdpi.truncation_mask` works on JAX
arrays as it is.

Requires JAX (``pip install 'svdpi[jax]'``). Importing :mod:`svdpi` or
:mod:`svdpi.torch` never imports JAX.
"""

try:
    import jax  # noqa: F401
except ImportError as error:
    raise ImportError(
        "svdpi.jax needs JAX, which is not installed (or failed to import: "
        f"{error}). Install it with pip install 'svdpi[jax]' or pip install jax. "
        "The core, svdpi.eig / svdpi.eig_vjp, works without it on NumPy and PyTorch arrays."
    ) from error

from svdpi.adapter import register as _register

from . import _native
from ._eig import eig
from ._matrix_functions import (
    expm,
    inv_sqrtm,
    logm,
    matrix_log,
    matrix_power,
    pca_projector,
    spectral_map,
    sqrtm,
    zca_whitening_matrix,
)
from ._svd import low_rank, polar, singular_value_map, svd
from ._whitening import WhiteningStats, whiten, zca_whitening

# The core's fast path for JAX arrays (see svdpi.adapter): an eigh that
# does not overflow above half the dtype's maximum.
_register("jax", eigh=_native.eigh)

__all__ = [
    "WhiteningStats",
    "eig",
    "expm",
    "inv_sqrtm",
    "logm",
    "low_rank",
    "matrix_log",
    "matrix_power",
    "pca_projector",
    "polar",
    "singular_value_map",
    "spectral_map",
    "sqrtm",
    "svd",
    "whiten",
    "zca_whitening",
    "zca_whitening_matrix",
]
