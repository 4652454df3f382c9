"""The two passes over the activations that the whitening layers make, with fused backwards.

A grouped whitening layer is, per group of ``d`` channels, ``y = A (x − μ) + b``
with ``A`` a ``d × d`` function of the covariance of ``x``. Everything on
``(G, d, d)`` matrices is cheap (one autograd node whose backward is the
core's VJP, see :mod:`svdpi.torch._spectral`); what costs time is the work on the ``(N, G, d, L)``
activations. Autograd alone would make a separate pass for each term of the
input gradient (centring, covariance, product); these Functions compute the
statistics and the product in as few passes as the maths allows:

- :class:`GroupMoments`: mean, centred input and covariance (two reductions
  and one subtraction); backward ``g_x = g_x̃ + (g_μ − Σ g_x̃)/M + S x̃``
  with ``S = (G_Σ + G_Σᵀ)/M``: an addition and a batched product, both
  accumulated in place into the incoming gradient. It is the torch fast
  path of the core's :func:`svdpi.adapter.grouped_covariance` and
  :func:`svdpi.adapter.grouped_covariance_vjp` (the formula, stated once
  there; ``tests/test_torch_kernels.py`` holds this kernel to it), kept
  because it is faster: forward + backward of the statistics, float32, one
  CPU thread, 2.4 against 7.2 ms at ``(N, C, L) = (128, 64, 64)`` with 8
  groups and 1.7 against 7.7 ms at ``(32, 64, 256)`` with 16 (the core
  permutes the activations to ``(G, d, N·L)``, a copy each way, and autograd
  accumulates out of place), and because the synchronised layers all-reduce
  between its steps. (On tiny inputs, ``(64, 16, 4)``, the two are equal.)
- :class:`GroupAffine`: ``y = A x̃ + b`` as one batched ``baddbmm``;
  backward ``g_x̃ = Aᵀ g_y``, ``g_A = Σ g_y x̃ᵀ``, ``g_b = Σ g_y``.

With a process group, :class:`GroupMoments` all-reduces the sums, counts and
outer products so each rank sees the statistics of the global batch, and its
backward all-reduces the gradients of the statistics, so the input gradients
equal those of one process on the full batch.
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist

from ._autograd import cached_signature


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(N, G, d, L) -> (N·G, d, L) without a copy (x is contiguous here)."""
    n, g, d, length = x.shape
    return x.reshape(n * g, d, length)


def _per_sample(matrix: torch.Tensor, n: int) -> torch.Tensor:
    """(G, d, k) -> (N·G, d, k), the batch layout of :func:`_flat` (a small copy)."""
    g, d, k = matrix.shape
    return matrix.expand(n, g, d, k).reshape(n * g, d, k)


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(tensor, group=group)
    return tensor


def _in_transform() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is running.

    There the Functions' methods see wrapped tensors, and ``vmap`` may batch
    some of them and not others (an unbatched cotangent, a batched
    covariance): an in-place write of a batched value into an unbatched
    tensor is an error. So the backward accumulates out of place there; the
    plain eager path keeps its in-place accumulation (one activation-sized
    buffer fewer).
    """
    return torch._C._are_functorch_transforms_active()


@cached_signature
class GroupMomentsReverse(torch.autograd.Function):
    """``x (N, G, d, L)`` -> centred ``x̃``, mean ``μ (G, d)`` and covariance ``(G, d, d)``.

    The covariance is ``Σ x̃ x̃ᵀ / M`` (divided by the number of samples
    ``M = N·L``, summed over every rank of ``group``), computed from the
    centred data so that a large mean costs no precision.

    Every method is written with torch operations only, so ``torch.func``
    builds the ``vmap`` rule itself (``generate_vmap_rule``). This class has
    no ``jvp``: dynamo cannot trace a Function that defines one, so it is
    the one the layers use while ``torch.compile`` traces;
    :class:`GroupMoments` adds forward mode.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, group):
        n, g, d, length = x.shape
        dtype = x.dtype
        # One collective for the sums and the sample count (a rank may hold a
        # different batch size); float64 keeps the count exact. Built with cat,
        # not by writing into an empty buffer: under vmap the sums are batched.
        count = torch.full((1,), n * length, dtype=torch.float64, device=x.device)
        sums = torch.cat([x.sum(dim=(0, 3)).reshape(-1).to(torch.float64), count])
        _all_reduce(sums, group)
        count = sums[-1:]
        mean = (sums[:-1] / count).to(dtype).reshape(g, d)
        centred = x - mean[:, :, None]
        flat = _flat(centred)
        scatter = (flat @ flat.mT).reshape(n, g, d, d).sum(dim=0)
        _all_reduce(scatter, group)
        cov = scatter / count.to(dtype)
        return centred, mean, cov, count.to(dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, group = inputs
        centred, _, _, count = output
        ctx.save_for_backward(centred, count)
        ctx.save_for_forward(centred, count)
        # A weak reference: the autograd graph (alive as long as an output is)
        # must not keep the process group alive past destroy_process_group.
        # When it did, the group was destroyed at interpreter exit instead,
        # where gloo aborted the process ("terminate called without an active
        # exception") in about a third of 2-process runs.
        ctx.group = None if group is None else weakref.ref(group)
        ctx.mark_non_differentiable(count)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_centred, grad_mean, grad_cov, _grad_count):
        centred, count = ctx.saved_tensors
        n, g, d, _ = centred.shape
        # d loss / d μ over all ranks: the direct part plus the centring of x̃.
        grad_mu = torch.zeros(g, d, dtype=centred.dtype, device=centred.device)
        if grad_mean is not None:
            grad_mu = grad_mu + grad_mean
        if grad_centred is not None:
            grad_mu = grad_mu - grad_centred.sum(dim=(0, 3))
        if grad_cov is None:
            grad_cov = torch.zeros(g, d, d, dtype=centred.dtype, device=centred.device)
        if ctx.group is not None:
            packed = torch.cat([grad_mu.reshape(-1), grad_cov.reshape(-1)])
            _all_reduce(packed, _live_group(ctx))
            grad_mu = packed[: g * d].reshape(g, d)
            grad_cov = packed[g * d :].reshape(g, d, d)
        # The μ-dependence of the covariance drops out: Σ x̃ = 0 over the global batch.
        sym = (grad_cov + grad_cov.mT) / count
        shift = (grad_mu / count)[None, :, :, None]
        if grad_centred is None:
            grad_x = torch.matmul(sym, centred) + shift
        elif _in_transform():
            grad_x = grad_centred + shift + torch.matmul(sym, centred)
        else:
            # x̃ has one consumer, GroupAffine, whose backward returns a fresh
            # tensor nobody else holds: accumulate into it in place rather
            # than allocate (and first-touch) another activation-sized buffer.
            if grad_centred.is_contiguous() and not grad_centred.requires_grad:
                grad_x = grad_centred.add_(shift)
            else:
                grad_x = (grad_centred + shift).contiguous()
            _flat(grad_x).baddbmm_(_per_sample(sym, n), _flat(centred))
        return grad_x, None


class GroupMoments(GroupMomentsReverse):
    """:class:`GroupMomentsReverse` plus forward mode (``jvp``), outside ``torch.compile``.

    With ``ẋ`` the tangent of ``x``: ``μ̇ = Σ ẋ / M``, ``x̃̇ = ẋ − μ̇`` and
    ``Σ̇ = (S + Sᵀ) / M`` with ``S = Σ ẋ x̃ᵀ`` (the ``μ̇`` term drops out
    because ``Σ x̃ = 0``), so a process group needs one collective for
    ``Σ ẋ`` and ``S`` together.
    """

    @staticmethod
    def jvp(ctx, tangent_x, _tangent_group):
        centred, count = ctx.saved_tensors
        n, g, d, _ = centred.shape
        tangent_sum = tangent_x.sum(dim=(0, 3))
        outer = _flat(tangent_x) @ _flat(centred).mT
        outer = outer.reshape(n, g, d, d).sum(dim=0)
        if ctx.group is not None:
            packed = torch.cat([tangent_sum.reshape(-1), outer.reshape(-1)])
            _all_reduce(packed, _live_group(ctx))
            tangent_sum = packed[: g * d].reshape(g, d)
            outer = packed[g * d :].reshape(g, d, d)
        tangent_mean = tangent_sum / count
        tangent_centred = tangent_x - tangent_mean[:, :, None]
        return tangent_centred, tangent_mean, (outer + outer.mT) / count, None


def _live_group(ctx):
    group = ctx.group()
    if group is None:
        raise RuntimeError(
            "the process group of this forward pass was destroyed before its derivative was taken"
        )
    return group


@cached_signature
class GroupAffineReverse(torch.autograd.Function):
    """``y = A x + b`` per group: ``x (N, G, d, L)``, ``A (G, d, d)``, ``b (G, d)``.

    Without ``jvp`` (for ``torch.compile``), vmap rule generated, as
    :class:`GroupMomentsReverse`; :class:`GroupAffine` adds forward mode.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, matrix, bias):
        n, g, d, length = x.shape
        out = torch.baddbmm(_per_sample(bias[:, :, None], n), _per_sample(matrix, n), _flat(x))
        return out.reshape(n, g, d, length)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, matrix, _ = inputs
        ctx.save_for_backward(x, matrix)
        ctx.save_for_forward(x, matrix)

    @staticmethod
    def backward(ctx, grad_out):
        x, matrix = ctx.saved_tensors
        n, g, d, length = x.shape
        grad_x = grad_matrix = grad_bias = None
        flat_grad = _flat(grad_out)
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(_per_sample(matrix.mT, n), flat_grad).reshape(n, g, d, length)
        if ctx.needs_input_grad[1]:
            grad_matrix = (flat_grad @ _flat(x).mT).reshape(n, g, d, d).sum(dim=0)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, 3))
        return grad_x, grad_matrix, grad_bias


class GroupAffine(GroupAffineReverse):
    """:class:`GroupAffineReverse` plus forward mode: ``ẏ = Ȧ x + A ẋ + ḃ``."""

    @staticmethod
    def jvp(ctx, tangent_x, tangent_matrix, tangent_bias):
        x, matrix = ctx.saved_tensors
        # (G, d, d) @ (N, G, d, L) broadcasts over the samples.
        tangent = torch.zeros_like(x) if tangent_x is None else torch.matmul(matrix, tangent_x)
        if tangent_matrix is not None:
            tangent = tangent + torch.matmul(tangent_matrix, x)
        if tangent_bias is not None:
            tangent = tangent + tangent_bias[:, :, None]
        return tangent
