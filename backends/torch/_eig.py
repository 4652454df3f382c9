"""PyTorch autograd for :func:`svdpi.eig`: exact forward, SVD-PI derivatives from the core."""

from __future__ import annotations

import svdpi
import torch
from svdpi.adapter import (
    all_finite,
    canonical_columns,
    check_floating,
    check_method,
    check_num_iters,
    check_square,
    vjp_from_projected,
)

from . import _native
from ._autograd import cached_signature
from ._namespace import xp_torch


def _eigh_descending(a, canonical=False):
    # The same operations as svdpi.eig(a, check_finite=False, canonical=...,
    # xp=...), written out: the core's namespace lookup goes through
    # array-api-compat's lru_cache-wrapped helpers, which dynamo warns about
    # while compiling. The finiteness check happens in svdpi.torch.eig,
    # outside the Function.
    # -(a + aᴴ)/2 as the core forms it, (a − aᴴ)/2 − a: a + aᴴ overflows for
    # entries above half the dtype's maximum, which eigh handles, while
    # a − aᴴ is 0 for a Hermitian input (the same bits as −a then; on the
    # diagonal of a complex one the imaginary parts cancel exactly). In place
    # on the fresh difference (Function.forward records no graph): one n × n
    # temporary fewer.
    adjoint = a.mH if a.is_complex() else a.mT
    negated_eigenvalues, eigenvectors = torch.linalg.eigh(torch.sub(a, adjoint).mul_(0.5).sub_(a))
    if canonical and a.numel() > 0:
        eigenvectors, _ = canonical_columns(eigenvectors, xp_torch)
    return -negated_eigenvalues, eigenvectors


def _save(ctx, method, num_iters, canonical, phase, eigenvalues, eigenvectors):
    ctx.save_for_backward(eigenvalues, eigenvectors)
    ctx.save_for_forward(eigenvalues, eigenvectors)
    ctx.method = method
    ctx.num_iters = num_iters
    ctx.canonical = canonical
    ctx.phase = phase
    # Unused outputs arrive as None rather than as zero tensors to multiply.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_eigenvalues, grad_eigenvectors):
    eigenvalues, eigenvectors = ctx.saved_tensors
    args = (eigenvalues, eigenvectors, grad_eigenvalues, grad_eigenvectors)
    if not torch.is_grad_enabled():
        # A plain backward records no graph, so there is no second derivative
        # to guard against: skip _EigVjp's own Function call (about a tenth of
        # a small eig's forward+backward on the CPU), and compute the VJP as
        # direct torch operations where they apply (svdpi.torch._native; real
        # input only, where the canonical sign changes no derivative).
        grad_a = None
        if grad_eigenvectors is not None:
            grad_a = _native.eig_vjp(*args, ctx.method, ctx.num_iters)
        if grad_a is None:
            grad_a = _EigVjp.forward(*args, ctx.method, ctx.num_iters, ctx.canonical, ctx.phase)
    else:  # create_graph=True or a torch.func transform: keep the guard
        grad_a = _EigVjp.apply(*args, ctx.method, ctx.num_iters, ctx.canonical, ctx.phase)
    return grad_a, None, None, None, None


def _jvp(ctx, tangent_a, *_tangent_options):
    eigenvalues, eigenvectors = ctx.saved_tensors
    return _EigJvp.apply(
        eigenvalues, eigenvectors, tangent_a, ctx.method, ctx.num_iters, ctx.canonical
    )


@cached_signature
class _EigReverse(torch.autograd.Function):
    """Forward: the core's exact ``eig``; backward: ``eig_vjp``.

    Every method is written with torch operations only, so torch.func builds
    the vmap rule itself (``generate_vmap_rule``). This class has no ``jvp``
    because dynamo cannot trace a Function that defines one: it is the one
    ``eig`` uses while ``torch.compile`` traces.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, method, num_iters, canonical, phase):
        return _eigh_descending(a, canonical)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, method, num_iters, canonical, phase = inputs
        _save(ctx, method, num_iters, canonical, phase, *output)

    backward = staticmethod(_backward)


class _Eig(_EigReverse):
    """:class:`_EigReverse` plus forward mode (``eig_jvp``) for ``torch.func.jvp``/``jacfwd``."""

    jvp = staticmethod(_jvp)


class _EigEager(torch.autograd.Function):
    """:class:`_Eig` in the combined ``forward(ctx, ...)`` style, for plain eager calls.

    ``Function.apply`` binds the signature of a ``setup_context`` Function on
    every call (about 12 µs, a tenth of a 16 × 4 × 4 eigh forward+backward);
    this style skips that but cannot run under ``torch.func`` transforms or
    be traced by dynamo, where :func:`eig` uses :class:`_Eig` / :class:`_EigReverse`.
    Backward and forward mode (``torch.autograd.forward_ad``) are the same.
    """

    @staticmethod
    def forward(ctx, a, method, num_iters, canonical, phase):
        eigenvalues, eigenvectors = _eigh_descending(a, canonical)
        _save(ctx, method, num_iters, canonical, phase, eigenvalues, eigenvectors)
        return eigenvalues, eigenvectors

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


def _no_second_order(caller: str) -> str:
    return (
        f"{caller} is differentiable once: differentiating its derivative again "
        "(double backward, create_graph=True, torch.func.hessian, jacfwd(jacrev(...))) is "
        "not supported. The power-iteration gradient is a truncated series in the eigenvalue "
        "ratios whose own derivative svdpi does not define, and autograd through the formula "
        "would be wrong at repeated eigenvalues."
    )


def first_order_only(caller: str) -> type[torch.autograd.Function]:
    """A base class for a derivative node whose own derivatives raise, naming ``caller``.

    Without it autograd (or forward-mode AD) would differentiate the torch
    operations of ``eig_vjp`` / ``eig_jvp`` and silently return a wrong second
    derivative at equal eigenvalues (the ``where`` that handles the ratio-1
    lanes of the geometric series has a zero derivative there). ``caller``
    is the function the user called, which the error names.
    """
    message = _no_second_order(caller)

    class FirstOrderOnly(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, *grads):
            raise RuntimeError(message)

        @staticmethod
        def jvp(ctx, *tangents):
            raise RuntimeError(message)

    return FirstOrderOnly


#: The derivative nodes of :func:`eig` (the SVD's use it too; they may pass
#: their own name to :func:`first_order_only`).
_FirstOrderOnly = first_order_only("svdpi.torch.eig")


@cached_signature
class _EigVjp(_FirstOrderOnly):
    @staticmethod
    def forward(
        eigenvalues,
        eigenvectors,
        grad_eigenvalues,
        grad_eigenvectors,
        method,
        num_iters,
        canonical,
        phase,
    ):
        # svdpi.eig_vjp after its argument checks: eig checked method and
        # num_iters, and autograd hands over cotangents shaped like the outputs.
        # About 10 µs of a 16 × 4 × 4 backward.
        vt_grad = None
        if grad_eigenvectors is not None:
            adjoint = eigenvectors.mH if eigenvectors.is_complex() else eigenvectors.mT
            vt_grad = adjoint @ grad_eigenvectors
        return vjp_from_projected(
            eigenvalues,
            eigenvectors,
            grad_eigenvalues,
            vt_grad,
            method=method,
            num_iters=num_iters,
            canonical=canonical,
            phase=phase,
            xp=xp_torch,
        )


@cached_signature
class _EigJvp(_FirstOrderOnly):
    @staticmethod
    def forward(eigenvalues, eigenvectors, tangent_a, method, num_iters, canonical):
        return svdpi.eig_jvp(
            eigenvalues,
            eigenvectors,
            tangent_a,
            method=method,
            num_iters=num_iters,
            canonical=canonical,
            xp=xp_torch,
        )


def _can_read_values() -> bool:
    """Whether a tensor's values may be read on the host here.

    Not while torch.compile traces (it would graph-break) and not under a
    torch.func transform (vmap forbids data-dependent Python control flow).
    """
    if torch.compiler.is_compiling():
        return False
    return not torch._C._are_functorch_transforms_active()


def _check_matrix(a, check_finite: bool, *, allow_empty: bool = False) -> None:
    """The checks on ``a`` of :func:`eig` and of :func:`svdpi.torch._spectral.spectral_map`."""
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
    check_floating(a, "a", xp_torch, allow_complex=True)
    check_square(a, "a", allow_empty=allow_empty)
    # A meta tensor has no values to check: shape inference (FLOP counters,
    # deferred initialisation) must not fail on it.
    readable = a.device.type != "meta" and _can_read_values()
    if check_finite and readable and not all_finite(a, xp_torch):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )


def eig(
    a: torch.Tensor,
    *,
    method: str = "pi",
    num_iters: int = 19,
    canonical: bool = False,
    check_finite: bool = True,
) -> svdpi.EigResult:
    """Differentiable eigendecomposition of symmetric PSD matrices, largest eigenvalue first.

    The forward values are those of :func:`svdpi.eig` (exact); the gradient is
    :func:`svdpi.eig_vjp` with the given ``method``: by default the gradient
    of the paper's power iteration with deflation, finite for equal
    eigenvalues. Forward mode uses :func:`svdpi.eig_jvp`, its exact transpose.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric positive semi-definite, float32 or float64, or complex
        Hermitian, complex64 or complex128; CPU or CUDA. Only
        ``(a + aᴴ) / 2`` is used.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Gradient rule, see :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    canonical : bool, default False
        Make the first largest-magnitude entry of each eigenvector real and
        positive (see :func:`svdpi.eig`), and differentiate those
        eigenvectors: for complex input every loss of them then has a
        gradient. For real input a sign convention that changes no
        derivative.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).
        The check is skipped while ``torch.compile`` traces and under
        ``torch.func`` transforms, where values cannot be read on the host.

    Returns
    -------
    svdpi.EigResult
        ``(eigenvalues, eigenvectors)``, eigenvalues descending and real
        (float32 for complex64 input, float64 for complex128).

    Raises
    ------
    ValueError
        In the backward pass, for complex input without ``canonical``, when
        the loss depends on the eigenvectors' arbitrary phase, as
        ``torch.linalg.eigh``'s backward does (one host read, complex input
        only). Where values cannot be read (``torch.func`` transforms,
        while compiling, the meta device) that matrix's gradient is NaN
        instead.

    Notes
    -----
    Complex input: the gradient follows PyTorch's convention (the ``.grad``
    of ``torch.linalg.eigh``), with the real coefficients of real input;
    the backward pass computes it with the core's code (the direct torch
    operations of the real backward do not apply).

    Transforms: reverse mode (``backward``, ``torch.func.grad``, ``vjp``,
    ``jacrev``), forward mode (``torch.func.jvp``, ``jacfwd``) and
    ``torch.func.vmap`` are supported. Second derivatives are not: the
    derivatives are themselves autograd Functions whose backward and forward
    mode raise ``RuntimeError``, so a double backward, ``torch.func.hessian``
    or ``jacfwd(jacrev(...))`` fail loudly rather than return a second
    derivative that is wrong at repeated eigenvalues.

    ``torch.compile``: a function calling ``eig`` compiles without a graph
    break (``fullgraph=True`` works) and its backward is compiled from the
    same torch operations. Dynamo cannot trace an autograd.Function that
    defines forward mode, so while compiling ``eig`` uses a variant without
    it: forward-mode AD of a compiled function is not available. When
    ``torch.compile`` wraps a ``torch.func`` transform (``compile(vmap(grad(f)))``),
    PyTorch would drop the custom backward and differentiate ``eigh`` itself,
    silently returning the classical gradient (infinite for equal
    eigenvalues); ``eig`` forces a graph break there, so such a call runs
    eagerly and right (``fullgraph=True`` raises). ``vmap(grad(compile(f)))``
    compiles.
    With ``check_finite=True`` outside of compilation a NaN check still costs
    one host synchronisation.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    >>> w, v = svdpi.torch.eig(a)
    >>> v[:, 1:].sum().backward()  # eigenvectors of a repeated eigenvalue
    >>> bool(torch.isfinite(a.grad).all())
    True

    Forward mode and vmap:

    >>> x = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> eye = torch.eye(2, dtype=x.dtype)
    >>> _, (dw, dv) = torch.func.jvp(lambda m: tuple(svdpi.torch.eig(m)), (x,), (eye,))
    >>> dw  # a + t·I shifts every eigenvalue by t
    tensor([1.0000, 1.0000], dtype=torch.float64)
    >>> torch.func.vmap(lambda m: svdpi.torch.eig(m).eigenvalues)(torch.stack([x, 2 * x]))
    tensor([[3., 1.],
            [6., 2.]], dtype=torch.float64)

    A complex Hermitian matrix: a loss of ``|V|`` has a gradient, one of
    ``Re V`` only for the canonical eigenvectors:

    >>> h = torch.tensor([[2.0, 1 + 1j], [1 - 1j, 3.0]], dtype=torch.complex128)
    >>> w, v = svdpi.torch.eig(h.requires_grad_())
    >>> w.detach()  # real eigenvalues
    tensor([4.0000, 1.0000], dtype=torch.float64)
    >>> v.real.sum().backward()
    Traceback (most recent call last):
    ...
    ValueError: grad_eigenvectors depends on the arbitrary phase of the complex eigenvectors ...
    >>> w, v = svdpi.torch.eig(h, canonical=True)
    >>> v.real.sum().backward()
    >>> bool(torch.allclose(h.grad, h.grad.mH))  # Hermitian, PyTorch's convention
    True
    """
    _check_matrix(a, check_finite, allow_empty=True)
    check_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    if torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active():
        # torch.compile of a torch.func transform (e.g. compile(vmap(grad(f))))
        # would drop the custom backward and differentiate eigh itself: a wrong,
        # possibly huge gradient. A graph break runs this call eagerly, where
        # the transforms see the autograd.Function (fullgraph=True raises).
        torch._dynamo.graph_break()
    # phase: what the backward does when a complex loss depends on the
    # eigenvectors' phase. "raise" (one host read, as torch.linalg.eigh's
    # backward) where values can be read, else "nan" (that matrix's gradient).
    if torch.compiler.is_compiling():
        function, phase = _EigReverse, "nan"
    elif torch._C._are_functorch_transforms_active():
        function, phase = _Eig, "nan"
    else:
        function, phase = _EigEager, "nan" if a.device.type == "meta" else "raise"
    eigenvalues, eigenvectors = function.apply(a, method, num_iters, canonical, phase)
    return svdpi.EigResult(eigenvalues, eigenvectors)
