"""PyTorch adapter: autograd for svdpi's eigendecomposition, and the paper's layers.

``svdpi.torch.eig`` returns exact eigenpairs whose backward pass is the
power-iteration gradient computed by the framework-agnostic core.
:class:`ZCAWhitening` and :class:`PCADenoising` are the whitening layers of
the paper, drop-in replacements for a BatchNorm layer;
:class:`SyncZCAWhitening` / :class:`SyncPCADenoising` (or
:func:`convert_sync_whitening`) compute their statistics over all processes
of a distributed job.
"""

# The core looks its torch fast paths up in sys.modules (importing them on
# first use); an import while torch.compile traces is a hard graph break, so
# a fresh process compiling eig's backward failed with fullgraph=True.
from . import _native  # noqa: F401
from ._eig import eig
from ._matrix_functions import inv_sqrtm, logm, matrix_power, sqrtm
from ._pooling import CovariancePooling
from ._sync import SyncPCADenoising, SyncZCAWhitening, convert_sync_whitening
from ._whitening import PCADenoising, ZCAWhitening

__all__ = [
    "CovariancePooling",
    "PCADenoising",
    "SyncPCADenoising",
    "SyncZCAWhitening",
    "ZCAWhitening",
    "convert_sync_whitening",
    "eig",
    "inv_sqrtm",
    "logm",
    "matrix_power",
    "sqrtm",
]
