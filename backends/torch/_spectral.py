"""Autograd for matrix functions of a symmetric matrix: eigh forward, the core's VJP backward.

A *spectral map* is ``a ↦ f(V, λ)`` with ``(λ, V) = eig(a)``: the ZCA
whitening matrix ``V diag(λ^{-1/2}) Vᵀ``, the PCA projector ``V_k V_kᵀ``, a
matrix power or logarithm. The core writes each one as a pair (or triple)
of framework-agnostic functions: the value from the eigenpairs, its
vector-Jacobian product with respect to ``a`` (and possibly its
Jacobian-vector product). :func:`spectral_map` turns such a pair into one
torch autograd node, so that PyTorch computes the derivative with the
core's formula, the one NumPy, CuPy and JAX users get, rather than by
differentiating the forward operations (a second formula that would drift
from the first, e.g. in how an eigenvalue floor is treated).

To add a matrix function, subclass :class:`SpectralMap` with a frozen
dataclass holding its options and define ``value`` and ``vjp`` (and
``jvp`` for forward mode) by calling the core::

    @dataclasses.dataclass(frozen=True)
    class _Power(SpectralMap):
        p: float
        method: str = "pi"
        num_iters: int = 19

        def value(self, eigenvalues, eigenvectors):
            return svdpi.matrix_power(eigenvalues, eigenvectors, self.p, xp=xp_torch)

        def vjp(self, eigenvalues, eigenvectors, grad):
            return svdpi.matrix_power_vjp(eigenvalues, eigenvectors, self.p, grad,
                                          method=self.method, num_iters=self.num_iters,
                                          xp=xp_torch)

    spectral_map(a, _Power(0.5))

The node keeps what :func:`svdpi.torch.eig` has: ``torch.compile(fullgraph=True)``
without a graph break, ``torch.func`` ``grad``/``vjp``/``jacrev``/``vmap`` (and
``jvp``/``jacfwd`` when the map defines ``jvp``), and second derivatives
that raise instead of being silently wrong.
"""

from __future__ import annotations

import torch

from ._autograd import cached_signature
from ._eig import _check_matrix, _eigh_descending, _FirstOrderOnly


class SpectralMap:
    """A function of the eigenpairs of a symmetric matrix with core-written derivatives.

    Subclasses are frozen (hashable) dataclasses: ``torch.compile`` treats
    an instance as a constant of the graph. ``eigenvalues`` come in
    descending order, ``eigenvectors`` as matching columns, both as
    :func:`svdpi.eig` returns them; everything must be torch operations
    (the core's functions with ``xp=array_api_compat.torch``), so that
    ``torch.func.vmap`` can batch them.
    """

    def value(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
        """The map's value, an array computed from the eigenpairs."""
        raise NotImplementedError

    def vjp(
        self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor:
        """The gradient with respect to ``a`` of ``<grad, value>``."""
        raise NotImplementedError

    def jvp(
        self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, tangent_a: torch.Tensor
    ) -> torch.Tensor:
        """The tangent of the value for a tangent ``tangent_a`` of ``a`` (forward mode)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no forward-mode derivative (jvp); use reverse "
            "mode (backward, torch.func.grad, vjp or jacrev)"
        )


def _save(ctx, spectral, a, eigenvalues, eigenvectors):
    # ``a`` only links a create_graph backward to the input, so that
    # differentiating it reaches _FirstOrderOnly and raises.
    ctx.save_for_backward(a, eigenvalues, eigenvectors)
    ctx.save_for_forward(eigenvalues, eigenvectors)
    ctx.spectral = spectral


def _backward(ctx, grad):
    a, eigenvalues, eigenvectors = ctx.saved_tensors
    if not torch.is_grad_enabled():
        # A plain backward records no graph: nothing to guard (see svdpi.torch._eig).
        grad_a = ctx.spectral.vjp(eigenvalues, eigenvectors, grad)
    else:  # create_graph=True or a torch.func transform: second derivatives must raise
        grad_a = _SpectralVjp.apply(a, eigenvalues, eigenvectors, grad, ctx.spectral)
    return grad_a, None


def _jvp(ctx, tangent_a, _tangent_spectral):
    eigenvalues, eigenvectors = ctx.saved_tensors
    return _SpectralJvp.apply(eigenvalues, eigenvectors, tangent_a, ctx.spectral)


@cached_signature
class _SpectralReverse(torch.autograd.Function):
    """Forward: exact eigh, then ``spectral.value``; backward: ``spectral.vjp``.

    No ``jvp``: dynamo cannot trace a Function that defines one, so this is
    the variant used while ``torch.compile`` traces.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, spectral):
        eigenvalues, eigenvectors = _eigh_descending(a)
        # The eigenpairs are outputs (non-differentiable) because a Function
        # with a separate setup_context can only save its inputs and outputs.
        return spectral.value(eigenvalues, eigenvectors), eigenvalues, eigenvectors

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, eigenvalues, eigenvectors = output
        _save(ctx, inputs[1], inputs[0], eigenvalues, eigenvectors)
        ctx.mark_non_differentiable(eigenvalues, eigenvectors)

    @staticmethod
    def backward(ctx, grad, _grad_eigenvalues, _grad_eigenvectors):
        return _backward(ctx, grad)


class _Spectral(_SpectralReverse):
    """:class:`_SpectralReverse` plus forward mode, for ``torch.func.jvp`` / ``jacfwd``."""

    @staticmethod
    def jvp(ctx, tangent_a, tangent_spectral):
        return _jvp(ctx, tangent_a, tangent_spectral), None, None


class _SpectralEager(torch.autograd.Function):
    """The same in the combined ``forward(ctx, ...)`` style, cheaper per call in eager mode."""

    @staticmethod
    def forward(ctx, a, spectral):
        eigenvalues, eigenvectors = _eigh_descending(a)
        _save(ctx, spectral, a, eigenvalues, eigenvectors)
        return spectral.value(eigenvalues, eigenvectors)

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


@cached_signature
class _SpectralVjp(_FirstOrderOnly):
    @staticmethod
    def forward(_a, eigenvalues, eigenvectors, grad, spectral):
        return spectral.vjp(eigenvalues, eigenvectors, grad)


@cached_signature
class _SpectralJvp(_FirstOrderOnly):
    @staticmethod
    def forward(eigenvalues, eigenvectors, tangent_a, spectral):
        return spectral.jvp(eigenvalues, eigenvectors, tangent_a)


def spectral_map(a: torch.Tensor, spectral: SpectralMap, *, check_finite: bool = True):
    """``spectral.value(*eig(a))`` as one autograd node whose derivatives are the map's own.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric, float32 or float64; only ``(a + aᵀ) / 2`` is used.
    spectral : SpectralMap
        The map, with its options (e.g. ``method``, ``num_iters``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries of ``a`` (one host
        synchronisation; skipped while compiling and under ``torch.func``).

    Returns
    -------
    torch.Tensor
        ``spectral.value(eigenvalues, eigenvectors)``.
    """
    _check_matrix(a, check_finite, allow_empty=True)
    if not isinstance(spectral, SpectralMap):
        raise TypeError(f"spectral must be a SpectralMap, got {type(spectral).__name__}")
    if a.numel() == 0:
        # n = 0 or an empty batch: every map is (..., n, n) -> (..., n, n), so
        # the result is empty, as from code built on torch.linalg.eigh. a * 0
        # keeps it connected to ``a``: backward gives an empty gradient.
        return a * 0
    # The variant is chosen as in svdpi.torch.eig, written out in both places:
    # a shared helper returning the Function class made torch.compile
    # (fullgraph=True) fail with an internal dynamo error (PyTorch 2.14).
    if torch.compiler.is_compiling():
        if torch._C._are_functorch_transforms_active():
            # As in svdpi.torch.eig: compile of a torch.func transform would drop
            # the custom backward; run this call eagerly instead.
            torch._dynamo.graph_break()
        return _SpectralReverse.apply(a, spectral)[0]
    if torch._C._are_functorch_transforms_active():
        return _Spectral.apply(a, spectral)[0]
    return _SpectralEager.apply(a, spectral)
