"""PyTorch adapter: autograd for svdpi's eigendecomposition, matrix functions and layers.

``svdpi.torch.eig`` returns exact eigenpairs whose backward pass is the
power-iteration gradient computed by the framework-agnostic core.
:func:`spectral_map` is one autograd node for every function of a symmetric
matrix (:mod:`svdpi.functions`), with the exact derivative and second
derivatives by default; :func:`sqrtm`, :func:`inv_sqrtm`, :func:`logm`,
:func:`expm` and :func:`matrix_power` are calls of it. :func:`eig` and the
matrix functions take complex Hermitian matrices as well (complex64,
complex128), with PyTorch's gradient convention.
:class:`ZCAWhitening` and :class:`PCADenoising` are the whitening layers of
the paper, drop-in replacements for a BatchNorm layer;
:class:`SyncZCAWhitening` / :class:`SyncPCADenoising` (or
:func:`convert_sync_whitening`) compute their statistics over all processes
of a distributed job.
"""

# ruff: noqa: E402 (the version check runs before anything else is imported)
import torch as _torch

from ._requirements import check_torch_version as _check_torch_version

_check_torch_version(_torch.__version__)

from svdpi.adapter import register as _register

from . import _native
from . import spd as spd  # the SPD-matrix layers, a subpackage (not in __all__)
from ._eig import eig
from ._matrix_functions import expm, inv_sqrtm, logm, matrix_power, sqrtm
from ._pooling import CovariancePooling
from ._spectral import spectral_map
from ._svd import low_rank, polar, singular_value_map, svd
from ._sync import SyncPCADenoising, SyncZCAWhitening, convert_sync_whitening
from ._whitening import PCADenoising, ZCAWhitening

# The core's fast paths for torch tensors (see svdpi._dispatch), registered on
# import so that nothing is imported later, inside a traced call.
_register("torch", all_finite=_native.all_finite, coefficient_product=_native.coefficient_product)

__all__ = [
    "CovariancePooling",
    "PCADenoising",
    "SyncPCADenoising",
    "SyncZCAWhitening",
    "ZCAWhitening",
    "convert_sync_whitening",
    "eig",
    "expm",
    "inv_sqrtm",
    "logm",
    "low_rank",
    "matrix_power",
    "polar",
    "singular_value_map",
    "spectral_map",
    "sqrtm",
    "svd",
]
