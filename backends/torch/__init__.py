"""PyTorch adapter: autograd for svdpi's eigendecomposition.

``svdpi.torch.eig`` returns exact eigenpairs whose backward pass is the
power-iteration gradient computed by the framework-agnostic core.
"""

from ._eig import eig

__all__ = ["eig"]
