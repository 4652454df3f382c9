"""The paper's algorithm written literally: an independent oracle for svdpi's gradients.

Power iteration with deflation as in Wang et al. (NeurIPS 2019) and their
published code: for each eigenvector j, a power-iteration block whose forward
returns the SVD eigenvector unchanged and whose backward is the truncated
series ``Σ_{i=0..T} (M_j/‖M_j v‖)^i (I − v vᵀ)/‖M_j v‖ · ḡ vᵀ``; the Rayleigh
quotient ``λ_j = vᵀ M_j v / vᵀ v`` and the deflation ``M_{j+1} = M_j − M_j v vᵀ``
are differentiated by torch autograd. Python loops on purpose: this is the
slow, obviously-right version the closed form is tested against.
"""

from __future__ import annotations

import torch


class PowerIterationBlock(torch.autograd.Function):
    """Forward returns the starting vector; backward is the paper's series (T + 1 terms)."""

    @staticmethod
    def forward(ctx, m, v, num_iters, min_norm):
        ctx.save_for_backward(m, v)
        ctx.num_iters = num_iters
        ctx.min_norm = min_norm
        return v.clone()

    @staticmethod
    def backward(ctx, grad_v):
        m, v = ctx.saved_tensors
        n = m.shape[-1]
        eye = torch.eye(n, dtype=m.dtype, device=m.device)
        norm = torch.linalg.vector_norm(m @ v)
        if ctx.min_norm is not None:
            norm = norm.clamp(min=ctx.min_norm)
        term = (eye - v @ v.T) / norm
        total = term.clone()
        q = m / norm
        for _ in range(ctx.num_iters):
            term = q @ term
            total = total + term
        return total @ grad_v @ v.T, None, None, None


def paper_eig(m, k=None, num_iters=19, min_norm=None, start_vectors=None):
    """Top-``k`` eigenpairs of one matrix ``m`` (n, n) with the paper's PI-with-deflation graph.

    ``start_vectors`` (n, n): the SVD eigenvectors PI starts from (computed
    here when omitted); pass the ones under test so that signs agree.
    Returns ``(eigenvalues (k,), eigenvectors (n, k))``, differentiable w.r.t. ``m``.
    """
    n = m.shape[-1]
    k = n if k is None else k
    if start_vectors is None:
        _, vectors = torch.linalg.eigh(m.detach())
        vectors = vectors.flip(-1)
    else:
        vectors = start_vectors.detach()
    deflated = m
    lambdas, vs = [], []
    for j in range(k):
        v = PowerIterationBlock.apply(deflated, vectors[:, j : j + 1], num_iters, min_norm)
        lam = (v.T @ deflated @ v) / (v.T @ v)
        deflated = deflated - deflated @ v @ v.T
        lambdas.append(lam.reshape(()))
        vs.append(v)
    return torch.stack(lambdas), torch.cat(vs, dim=1)


def paper_eig_vjp(m, grad_eigenvalues, grad_eigenvectors, num_iters=19, start_vectors=None):
    """Symmetric gradient of ``<ḡλ, λ> + <ḡV, V>`` through :func:`paper_eig`, batched by loop.

    ``m``: (..., n, n) float64 tensor; cotangents (..., k) and (..., n, k) for
    the top ``k`` eigenpairs; ``start_vectors`` (..., n, n) as in :func:`paper_eig`.
    """
    batch_shape = m.shape[:-2]
    n = m.shape[-1]
    k = grad_eigenvalues.shape[-1]
    flat_m = m.reshape(-1, n, n)
    flat_gl = grad_eigenvalues.reshape(-1, k)
    flat_gv = grad_eigenvectors.reshape(-1, n, k)
    if start_vectors is None:
        flat_start = [None] * flat_m.shape[0]
    else:
        flat_start = start_vectors.reshape(-1, n, n)
    grads = []
    for mi, gl, gv, start in zip(flat_m, flat_gl, flat_gv, flat_start, strict=True):
        mi = mi.detach().clone().requires_grad_(True)
        lam, vec = paper_eig(mi, k=k, num_iters=num_iters, start_vectors=start)
        (lam @ gl + (vec * gv).sum()).backward()
        g = mi.grad
        grads.append((g + g.T) / 2)
    return torch.stack(grads).reshape(*batch_shape, n, n)
