"""The paper's whitening layers written literally: an oracle for svdpi.torch's layers.

One group at a time (a Python loop), the covariance from the centred data
in the paper's layout ``(d, N·L)``, the eigenpairs from
:func:`paper_reference.paper_eig` (power-iteration blocks with deflation,
differentiated by autograd), and ``W = Σ_j λ_j^{-1/2} v_j v_jᵀ`` /
``P = Σ_{j<k} v_j v_jᵀ`` summed one eigenvector at a time. Slow on purpose.
"""

from __future__ import annotations

import torch

try:
    from .paper_reference import paper_eig
except ImportError:  # loaded by path (benchmarks)
    from paper_reference import paper_eig


def _groups(x, num_groups):
    """(N, C, *) -> list of (d, N·L) matrices, one per group."""
    n, c = x.shape[:2]
    channels = x.reshape(n, c, -1).transpose(0, 1).reshape(c, -1)
    return list(channels.chunk(num_groups, dim=0))


def _ungroup(outputs, shape):
    c = shape[1]
    y = torch.cat(outputs, dim=0)  # (C, N·L)
    return y.reshape(c, shape[0], -1).transpose(0, 1).reshape(shape)


def paper_zca(x, num_groups, eps, weight=None, bias=None, num_iters=19):
    """Training-mode ZCA whitening of the paper; returns ``(y, means, whitening matrices)``."""
    outputs, means, matrices = [], [], []
    for xg in _groups(x, num_groups):
        mu = xg.mean(dim=1, keepdim=True)
        xc = xg - mu
        d, m = xc.shape
        cov = xc @ xc.T / m + eps * torch.eye(d, dtype=x.dtype)
        lambdas, vectors = paper_eig(cov, num_iters=num_iters)
        w = torch.zeros_like(cov)
        for j in range(d):
            v = vectors[:, j : j + 1]
            w = w + lambdas[j] ** -0.5 * (v @ v.T)
        outputs.append(w @ xc)
        means.append(mu[:, 0])
        matrices.append(w)
    y = _ungroup(outputs, x.shape)
    y = _affine(y, weight, bias)
    return y, torch.cat(means), torch.stack(matrices)


def paper_pca(x, num_groups, n_components, eps, weight=None, bias=None, num_iters=19):
    """Training-mode PCA denoising of the paper (biased variance); returns ``y``."""
    outputs = []
    for xg in _groups(x, num_groups):
        mu = xg.mean(dim=1, keepdim=True)
        var = ((xg - mu) ** 2).mean(dim=1, keepdim=True)
        xs = (xg - mu) / (var + eps).sqrt()
        d, m = xs.shape
        corr = xs @ xs.T / m + eps * torch.eye(d, dtype=x.dtype)
        _, vectors = paper_eig(corr, k=n_components, num_iters=num_iters)
        p = torch.zeros_like(corr)
        for j in range(n_components):
            v = vectors[:, j : j + 1]
            p = p + v @ v.T
        outputs.append(p @ xs)
    return _affine(_ungroup(outputs, x.shape), weight, bias)


def _affine(y, weight, bias):
    if weight is None:
        return y
    shape = (1, -1) + (1,) * (y.dim() - 2)
    return y * weight.reshape(shape) + bias.reshape(shape)


class PaperZCALayer(torch.nn.Module):
    """The literal per-group loop as a module (training mode only), for the benchmark."""

    def __init__(self, num_features, num_groups=1, eps=1e-4, num_iters=19):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.num_iters = num_iters
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        y, _, _ = paper_zca(x, self.num_groups, self.eps, self.weight, self.bias, self.num_iters)
        return y
