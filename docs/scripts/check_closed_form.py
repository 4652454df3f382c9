"""Check the closed form of the SVD-PI gradient against unrolled power iteration.

Power iteration with deflation, ``T + 1`` steps per eigenvector started at
the exact eigenvectors, written out step by step and differentiated by torch
autograd (nothing of svdpi's gradient code is used), against
:func:`svdpi.eig_vjp` with ``num_iters=T``; and the coefficients against the
classical ``1 / (λ_j − λ_m)`` as ``T`` grows. float64 throughout.

Run: ``python docs/scripts/check_closed_form.py``
"""

from __future__ import annotations

import torch

import svdpi


def unrolled_power_iteration(a: torch.Tensor, start: torch.Tensor, steps: int):
    """Eigenpairs of ``a`` by ``steps`` power-iteration steps per vector, with deflation.

    ``start`` holds the starting vectors (columns), constants for autograd.
    The deflation is the paper's ``M_{j+1} = M_j − M_j v_j v_jᵀ``.
    """
    deflated = a
    values, vectors = [], []
    for j in range(a.shape[-1]):
        v = start[:, j : j + 1]
        for _ in range(steps):
            v = deflated @ v
            v = v / torch.linalg.vector_norm(v)
        values.append((v.T @ deflated @ v).reshape(()))
        vectors.append(v)
        deflated = deflated - deflated @ v @ v.T
    return torch.stack(values), torch.cat(vectors, dim=1)


def max_relative_difference(n: int = 8, num_iters: int = 19, seed: int = 0) -> float:
    """Largest relative difference between the unrolled and the closed-form gradient."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    # A spectrum with close and well separated pairs (ratios from 0.3 to 0.98).
    spectrum = torch.tensor([10.0, 9.8, 5.0, 4.0, 2.0, 1.9, 1.0, 0.3], dtype=torch.float64)[:n]
    a = (q * spectrum) @ q.T
    grad_w = torch.randn(n, generator=generator, dtype=torch.float64)
    grad_v = torch.randn(n, n, generator=generator, dtype=torch.float64)

    w, v = svdpi.eig(a)
    closed_form = svdpi.eig_vjp(w, v, grad_w, grad_v, method="pi", num_iters=num_iters)

    leaf = a.clone().requires_grad_(True)
    values, vectors = unrolled_power_iteration(leaf, v.detach(), steps=num_iters + 1)
    (values @ grad_w + (vectors * grad_v).sum()).backward()
    unrolled = (leaf.grad + leaf.grad.T) / 2  # only the symmetric part is defined
    return float((unrolled - closed_form).abs().max() / closed_form.abs().max())


def main() -> None:
    for num_iters in (1, 5, 19, 50):
        difference = max_relative_difference(num_iters=num_iters)
        print(f"T = {num_iters:2d}: max |unrolled − closed form| / max |grad| = {difference:.1e}")


if __name__ == "__main__":
    main()
