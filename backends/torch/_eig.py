"""PyTorch autograd for :func:`svdpi.eig`: exact forward, SVD-PI backward from the core."""

from __future__ import annotations

import array_api_compat.torch as xp_torch

import svdpi
import torch
from svdpi._validation import check_method, check_num_iters


class _Eig(torch.autograd.Function):
    """Forward: the core's exact ``eig``; backward: the core's ``eig_vjp``."""

    @staticmethod
    def forward(a, method, num_iters):
        # The finiteness check happens in svdpi.torch.eig, outside the Function.
        return tuple(svdpi.eig(a, check_finite=False, xp=xp_torch))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, method, num_iters = inputs
        eigenvalues, eigenvectors = output
        ctx.save_for_backward(eigenvalues, eigenvectors)
        ctx.method = method
        ctx.num_iters = num_iters
        # Unused outputs arrive as None rather than as zero tensors to multiply.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_eigenvalues, grad_eigenvectors):
        eigenvalues, eigenvectors = ctx.saved_tensors
        grad_a = svdpi.eig_vjp(
            eigenvalues,
            eigenvectors,
            grad_eigenvalues,
            grad_eigenvectors,
            method=ctx.method,
            num_iters=ctx.num_iters,
            xp=xp_torch,
        )
        return grad_a, None, None


def eig(
    a: torch.Tensor, *, method: str = "pi", num_iters: int = 19, check_finite: bool = True
) -> svdpi.EigResult:
    """Differentiable eigendecomposition of symmetric PSD matrices, largest eigenvalue first.

    The forward values are those of :func:`svdpi.eig` (exact); the gradient is
    :func:`svdpi.eig_vjp` with the given ``method``: by default the gradient
    of the paper's power iteration with deflation, finite for equal
    eigenvalues.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64, CPU or CUDA.
        Only ``(a + aᵀ) / 2`` is used.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Gradient rule, see :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    svdpi.EigResult
        ``(eigenvalues, eigenvectors)``, eigenvalues descending.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    >>> w, v = svdpi.torch.eig(a)
    >>> v[:, 1:].sum().backward()  # eigenvectors of a repeated eigenvalue
    >>> bool(torch.isfinite(a.grad).all())
    True
    """
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
    check_method(method)
    num_iters = check_num_iters(num_iters)
    svdpi._validation.check_floating(a, "a", xp_torch)
    svdpi._validation.check_square(a, "a")
    if check_finite and not bool(torch.isfinite(a).all()):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )
    eigenvalues, eigenvectors = _Eig.apply(a, method, num_iters)
    return svdpi.EigResult(eigenvalues, eigenvectors)
