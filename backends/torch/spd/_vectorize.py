"""Symmetric matrices as vectors: the upper triangle, off-diagonal entries times √2.

With that scaling the Euclidean norm of the vector is the Frobenius norm of
the matrix (and inner products match), so a Euclidean layer after
:func:`vectorize` sees the geometry of the tangent space (the
log-Euclidean metric after LogEig). Both directions are gathers (no
in-place writes), so they work under autograd, ``torch.func.vmap`` and
``torch.compile``.
"""

from __future__ import annotations

import math

import torch


def _triangle(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.triu_indices(n, n, device=device)
    return rows, cols


def vectorize(x: torch.Tensor) -> torch.Tensor:
    """The upper triangle of symmetric matrices, row by row, off-diagonal entries × √2.

    Parameters
    ----------
    x : torch.Tensor, shape (..., n, n)
        Symmetric matrices; the lower triangle is not read.

    Returns
    -------
    torch.Tensor, shape (..., n(n+1)/2)
        ``‖vectorize(x)‖₂ = ‖x‖_F`` for symmetric ``x``.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> x = torch.tensor([[1.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    >>> v = F.vectorize(x)
    >>> v
    tensor([1.0000, 2.8284, 3.0000], dtype=torch.float64)
    >>> bool(torch.isclose(v.norm(), torch.linalg.matrix_norm(x)))
    True
    """
    _check_tensor(x, "x")
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must have shape (..., n, n), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    rows, cols = _triangle(n, x.device)
    # Made in x's dtype: torch.where on Python numbers would round √2 to float32.
    scale = x.new_full(rows.shape, math.sqrt(2.0)).masked_fill(rows == cols, 1.0)
    return x[..., rows, cols] * scale


def unvectorize(v: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`vectorize`: symmetric matrices from their scaled upper triangles.

    Parameters
    ----------
    v : torch.Tensor, shape (..., d)
        ``d = n(n+1)/2`` for some ``n >= 0``.

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        Symmetric.

    Examples
    --------
    >>> import torch
    >>> from svdpi.torch.spd import functional as F
    >>> F.unvectorize(torch.tensor([1.0, 2.0 * 2**0.5, 3.0], dtype=torch.float64))
    tensor([[1., 2.],
            [2., 3.]], dtype=torch.float64)
    """
    _check_tensor(v, "v")
    if v.dim() < 1:
        raise ValueError("v must have at least one dimension, got a 0-d tensor")
    d = v.shape[-1]
    n = (math.isqrt(8 * d + 1) - 1) // 2
    if n * (n + 1) // 2 != d:
        raise ValueError(
            f"v's last dimension must be n(n+1)/2 for an integer n (1, 3, 6, 10, ...), got {d}"
        )
    rows, cols = _triangle(n, v.device)
    # position[i, j]: where entry (i, j) (or (j, i)) sits in the vector.
    position = torch.zeros(n, n, dtype=torch.long, device=v.device)
    position = position.index_put((rows, cols), torch.arange(d, device=v.device))
    position = torch.maximum(position, position.mT) if n else position
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    # Divided by √2 (not multiplied by 1/√2): vectorize's (a·√2)/√2 gives a back
    # exactly in most cases.
    scale = v.new_full((n, n), math.sqrt(2.0)).masked_fill(eye, 1.0)
    return v[..., position] / scale


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
