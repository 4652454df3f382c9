"""BiMap: ``X ↦ Wᵀ X W`` with ``W`` on the Stiefel manifold (orthonormal columns).

How ``W`` stays orthonormal through optimiser steps was chosen by
measurement (``python benchmarks/bench_spd.py --stiefel``): over a thousand
SGD-with-momentum and Adam steps every candidate below held
``‖WᵀW − I‖_max`` at round-off (about 1e-6 in float32, 1e-15 in float64);
they differ in cost and in what the user must do.

* **QR parametrization** (BiMap's): the layer's parameter is an
  unconstrained ``n × k`` matrix ``P`` and the weight is its orthonormal QR
  factor ``W = Q·sign(diag R)``, recomputed at every use. Any optimiser
  works, nothing needs calling after ``optimizer.step()``, and one QR of
  the small weight is the cheapest parametrization measured. The sign
  makes the map continuous and ``P = W`` a fixed point.
* PyTorch's :func:`torch.nn.utils.parametrizations.orthogonal` (Cayley,
  matrix exponential, Householder maps; spd_learn's BiMap uses Cayley):
  the same orthogonality, 1.1–2× the time of a step in the measurement, and a
  module that can be saved through ``state_dict`` only (no ``pickle``,
  ``torch.save(model)``).
* A retraction after each optimiser step (QR or polar, the original
  SPDNet's Riemannian SGD): slightly cheaper, but a call in every training
  loop, and with Adam not a Riemannian method. Not offered.

"""

from __future__ import annotations

import torch
from svdpi.adapter import check_integer
from torch import nn

from ._input import autocast_off, compute_dtype


def stiefel_qr(p: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor ``Q·sign(diag R)`` of ``P = Q R`` (reduced), batched.

    In float32 at least (QR has no half-precision kernels); differentiable.
    """
    dtype = p.dtype
    q, r = torch.linalg.qr(p.to(torch.promote_types(dtype, torch.float32)))
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1)
    # where, not sign: a zero on R's diagonal (a rank-deficient P) keeps its column.
    signs = torch.where(diagonal < 0, -1.0, 1.0).to(q.dtype)
    return (q * signs.unsqueeze(-2)).to(dtype)


def bimap(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The bilinear map ``Wᵀ X W`` of matrices, batched, symmetric to the last bit.

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric matrices (SPD in an SPD network).
    weight : torch.Tensor, shape (..., n, k)
        Broadcast against ``x``'s batch dimensions (a ``(C, n, k)`` weight
        maps ``(N, C, n, n)`` input channel by channel).

    Returns
    -------
    torch.Tensor, shape (..., k, k)
        ``(Y + Yᵀ)/2`` with ``Y = (Wᵀ X) W``; float32 for half-precision
        input and under autocast, then cast to ``x``'s dtype.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    >>> F.bimap(x, torch.eye(3, 2, dtype=torch.float64))  # the leading 2 × 2 block
    tensor([[3., 0.],
            [0., 2.]], dtype=torch.float64)
    """
    for name, value in (("x", x), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.is_complex() or not value.is_floating_point():
            raise TypeError(f"{name} must have a real floating dtype, got {value.dtype}")
        if value.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions, got {tuple(value.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must have shape (..., n, n), got shape {tuple(x.shape)}")
    if weight.shape[-2] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape (..., {x.shape[-1]}, k) for x of shape "
            f"{tuple(x.shape)}, got {tuple(weight.shape)}"
        )
    compute = compute_dtype(x)
    with autocast_off(x):
        w = weight.to(compute)
        y = w.mT @ x.to(compute) @ w
        return ((y + y.mT) * 0.5).to(x.dtype)


class BiMap(nn.Module):
    r"""Bilinear map of SPD matrices, ``X ↦ Wᵀ X W``, with orthonormal columns in ``W``.

    SPDNet's dimension-reducing layer (Huang & Van Gool, AAAI 2017): with
    ``WᵀW = I`` an SPD input gives an SPD output (its eigenvalues interlace
    the input's). ``W`` stays on the Stiefel manifold through any optimiser's
    steps: the layer's parameter is an unconstrained matrix ``P``
    (``free_weight``) and ``W`` is its orthonormal QR factor
    ``Q·sign(diag R)`` (chosen by measurement against PyTorch's orthogonal
    parametrizations and retractions, see ``benchmarks/bench_spd.py``).

    Parameters
    ----------
    in_features : int
        ``n``, the size of the input matrices ``(..., n, n)``.
    out_features : int
        ``k <= n``, the size of the output matrices. ``k > n`` raises
        ``ValueError``: ``Wᵀ X W`` would have rank at most ``n``, singular.
    channels : int, optional
        Map ``C`` channels with ``C`` weights (depthwise): input
        ``(..., C, n, n)``, weight ``(C, n, k)``. Default: one weight
        ``(n, k)`` for input ``(..., n, n)``.
    device, dtype : optional
        Of the parameter.

    Attributes
    ----------
    free_weight : torch.nn.Parameter, shape ([C,] n, k)
        ``P``, what the optimiser updates (initially orthonormal, drawn
        uniformly on the Stiefel manifold).
    weight : torch.Tensor, shape ([C,] n, k)
        The orthonormal weight ``W`` (a property, computed from ``P``);
        assigning a matrix with orthonormal columns to it stores it in ``P``.

    Notes
    -----
    The product runs in float32 for half-precision input and under
    ``torch.autocast`` (float64 stays float64; a float16 product would not
    be symmetric positive definite), and the output has the input's dtype.
    The output is symmetrised, ``(Y + Yᵀ)/2``. Works on the meta device,
    with empty batches, under ``torch.func`` and ``torch.compile``; the module
    pickles (``torch.save(model)``), unlike modules with a
    ``torch.nn.utils.parametrize`` parametrization.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import BiMap
    >>> layer = BiMap(8, 4, dtype=torch.float64)
    >>> w = layer.weight
    >>> torch.allclose(w.mT @ w, torch.eye(4, dtype=torch.float64))
    True
    >>> x = torch.randn(16, 8, 20, dtype=torch.float64)
    >>> y = layer(x @ x.mT / 20)
    >>> y.shape
    torch.Size([16, 4, 4])
    >>> bool((torch.linalg.eigvalsh(y) > 0).all())
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        channels: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features = check_integer(in_features, "in_features", minimum=1)
        self.out_features = check_integer(out_features, "out_features", minimum=1)
        if self.out_features > self.in_features:
            raise ValueError(
                f"out_features ({self.out_features}) must be at most in_features "
                f"({self.in_features}): Wᵀ X W with more columns than rows has rank at most "
                "in_features, a singular matrix; BiMap reduces dimension"
            )
        if channels is not None:
            channels = check_integer(channels, "channels", minimum=1)
        self.channels = channels
        shape = (self.in_features, self.out_features)
        if self.channels is not None:
            shape = (self.channels, *shape)
        self.free_weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        return stiefel_qr(self.free_weight)

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor) or value.shape != self.free_weight.shape:
            shape = tuple(self.free_weight.shape)
            raise ValueError(f"weight must be a tensor of shape {shape}")
        # An orthonormal W is its own QR factor (R = I): storing P = W gives W back.
        with torch.no_grad():
            self.free_weight.copy_(value)

    def reset_parameters(self) -> None:
        """Draw a new orthonormal weight, uniformly on the Stiefel manifold (per channel)."""
        if self.free_weight.device.type == "meta":
            return
        with torch.no_grad():
            # A loop over channels at construction only.
            for frame in self.free_weight.view(-1, *self.free_weight.shape[-2:]):
                nn.init.orthogonal_(frame)

    def extra_repr(self) -> str:
        text = f"{self.in_features}, {self.out_features}"
        if self.channels is not None:
            text += f", channels={self.channels}"
        return text

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        n = self.in_features
        if self.channels is None:
            expected = f"(..., {n}, {n})"
            ok = x.dim() >= 2 and tuple(x.shape[-2:]) == (n, n)
        else:
            expected = f"(..., {self.channels}, {n}, {n})"
            ok = x.dim() >= 3 and tuple(x.shape[-3:]) == (self.channels, n, n)
        if not ok:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape {expected}, got shape "
                f"{tuple(x.shape)}"
            )
        return bimap(x, self.weight)
