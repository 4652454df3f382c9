"""SPD-matrix networks (the SPDNet family) on svdpi's spectral functions.

Layers for symmetric positive definite (SPD) matrices, such as covariance
descriptors, EEG spatial covariances and region covariances:

* :class:`BiMap`: ``X ↦ Wᵀ X W`` with orthonormal ``W`` (dimension reduction);
* :class:`ReEig`, :class:`LogEig`, :class:`ExpEig`, :class:`PowerEig`:
  functions of the eigenvalues, each one :func:`svdpi.torch.spectral_map`
  node whose default gradient is the exact (Daleckii–Krein) derivative,
  exact also where eigenvalues are equal, as ReEig makes them;
* :class:`SPDBatchNorm`: Riemannian batch normalisation (Brooks et al., 2019);
* :class:`Vectorize` / :class:`Unvectorize`: the norm-preserving upper triangle;
* :mod:`svdpi.torch.spd.functional`: the same as functions, with distances,
  means, geodesics and the exponential and logarithm maps.

An SPDNet (Huang & Van Gool, AAAI 2017):

>>> import torch
>>> from torch import nn
>>> from svdpi.torch import spd
>>> model = nn.Sequential(
...     spd.BiMap(16, 8), spd.ReEig(1e-4), spd.LogEig(vectorize=True), nn.Linear(36, 3)
... )
>>> x = torch.randn(4, 16, 40)
>>> logits = model(x @ x.mT / 40)
>>> logits.shape
torch.Size([4, 3])
"""

from . import functional
from ._batchnorm import SPDBatchNorm
from ._bimap import BiMap
from ._layers import ExpEig, LogEig, PowerEig, ReEig, Unvectorize, Vectorize

__all__ = [
    "BiMap",
    "ExpEig",
    "LogEig",
    "PowerEig",
    "ReEig",
    "SPDBatchNorm",
    "Unvectorize",
    "Vectorize",
    "functional",
]
