"""PyTorch autograd for the SVD: exact forward, derivatives from the core.

:func:`svd` differentiates the factors themselves with :func:`svdpi.svd_vjp`
/ :func:`svdpi.svd_jvp` (``method="pi"`` by default); :func:`polar`,
:func:`low_rank` and :func:`singular_value_map` are functions of the
singular values with the exact derivative of :mod:`svdpi._svd_maps`.

Each follows :func:`svdpi.torch.eig`'s pattern: three variants of one
``torch.autograd.Function`` (plain eager calls; ``torch.func`` transforms,
with forward mode; ``torch.compile``, without forward mode, which dynamo
cannot trace), and derivatives that are themselves Functions whose own
derivatives raise (first order only).
"""

from __future__ import annotations

import dataclasses

import svdpi
import torch
from svdpi.adapter import (
    DECLINED,
    canonicalize,
    check_integer,
    check_num_iters,
    check_svd_dtype,
    check_svd_method,
)
from svdpi.adapter import (
    apply_singular_value_kernels as apply_kernels,
)
from svdpi.adapter import (
    check_singular_value_function as check_function,
)
from svdpi.adapter import (
    check_svd_matrix as check_matrix,
)
from svdpi.adapter import (
    polar_kernels as _polar_kernels,
)
from svdpi.adapter import (
    singular_value_kernels as _kernels,
)
from svdpi.adapter import (
    svd_factors_finite as finite,
)
from svdpi.adapter import (
    svd_jvp_checked as jvp,
)
from svdpi.adapter import (
    svd_vjp_checked as vjp,
)
from svdpi.functions import Power, SpectralFunction

from . import _svd_native
from ._autograd import cached_signature
from ._eig import _can_read_values, _FirstOrderOnly
from ._namespace import xp_torch


def _svd_forward(a, canonical):
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    if canonical and a.numel() > 0:
        u, vh = canonicalize(u, vh, xp_torch)
    return u, s, vh


def _check(a, check_finite):
    """The checks on ``a`` of every function here (type, dtype, shape, finiteness)."""
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
    check_svd_dtype(a, "a", xp_torch)
    check_matrix(a, "a")
    readable = a.device.type != "meta" and _can_read_values()
    if check_finite and readable and not finite(a, xp_torch):
        raise ValueError(
            "a must contain only finite values (it has NaN or inf entries); "
            "pass check_finite=False to skip this check"
        )


@dataclasses.dataclass(frozen=True)
class _Options:
    """The derivative's options: a constant of the graph for torch.compile (hashable)."""

    method: str
    num_iters: int
    canonical: bool
    phase: str  # "raise" (eager: one host read) or "nan" (traced or transformed)


# ------------------------------------------------------------------------ svd


def _save(ctx, options, u, s, vh):
    ctx.save_for_backward(u, s, vh)
    ctx.save_for_forward(u, s, vh)
    ctx.options = options
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_u, grad_s, grad_vh):
    u, s, vh = ctx.saved_tensors
    options = ctx.options
    if not torch.is_grad_enabled():
        # A plain backward records no graph: no second derivative to guard,
        # and real pi/taylor take the direct torch calls (about 1.5x faster
        # on small matrices).
        if options.method != "analytic" and not u.is_complex():
            grad_a = _svd_native.svd_vjp(
                u,
                s,
                vh,
                grad_u,
                grad_s,
                grad_vh,
                method=options.method,
                num_iters=options.num_iters,
            )
            if grad_a is not DECLINED:
                return grad_a, None
        return _SvdVjp.forward(u, s, vh, grad_u, grad_s, grad_vh, options), None
    return _SvdVjp.apply(u, s, vh, grad_u, grad_s, grad_vh, options), None


def _jvp(ctx, tangent_a, _tangent_options):
    u, s, vh = ctx.saved_tensors
    return _SvdJvp.apply(u, s, vh, tangent_a, ctx.options)


@cached_signature
class _SvdReverse(torch.autograd.Function):
    """Forward: ``torch.linalg.svd``; backward: the core's VJP. No ``jvp`` (for dynamo)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, options):
        return _svd_forward(a, options.canonical)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[1], *output)

    backward = staticmethod(_backward)


class _Svd(_SvdReverse):
    """:class:`_SvdReverse` plus forward mode, for ``torch.func.jvp`` / ``jacfwd``."""

    jvp = staticmethod(_jvp)


class _SvdEager(torch.autograd.Function):
    """The same in the combined ``forward(ctx, ...)`` style: cheaper per plain eager call."""

    @staticmethod
    def forward(ctx, a, options):
        u, s, vh = _svd_forward(a, options.canonical)
        _save(ctx, options, u, s, vh)
        return u, s, vh

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


@cached_signature
class _SvdVjp(_FirstOrderOnly):
    @staticmethod
    def forward(u, s, vh, grad_u, grad_s, grad_vh, options):
        return vjp(
            u,
            s,
            vh,
            grad_u,
            grad_s,
            grad_vh,
            method=options.method,
            num_iters=options.num_iters,
            canonical=options.canonical,
            phase=options.phase,
            xp=xp_torch,
        )


@cached_signature
class _SvdJvp(_FirstOrderOnly):
    @staticmethod
    def forward(u, s, vh, tangent_a, options):
        return jvp(
            u,
            s,
            vh,
            tangent_a,
            method=options.method,
            num_iters=options.num_iters,
            canonical=options.canonical,
            xp=xp_torch,
        )


def svd(
    a: torch.Tensor,
    *,
    method: str = "pi",
    num_iters: int = 19,
    canonical: bool = False,
    check_finite: bool = True,
) -> svdpi.SVDResult:
    """Differentiable reduced SVD of real or complex matrices, singular values descending.

    The forward values are those of ``torch.linalg.svd(a, full_matrices=False)``
    (exact); the gradient is :func:`svdpi.svd_vjp` with the given ``method``,
    by default finite for repeated and zero singular values, where
    ``torch.linalg.svd``'s is infinite. Forward mode uses :func:`svdpi.svd_jvp`,
    its exact transpose.

    Parameters
    ----------
    a : torch.Tensor, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128, CPU or CUDA; ``m`` and
        ``n`` may differ either way; empty batches and ``m`` or ``n = 0``
        give empty factors.
    method : {"pi", "taylor", "analytic"}, default "pi"
        Gradient rule, see :func:`svdpi.svd_vjp`; ``"analytic"`` is
        ``torch.linalg.svd``'s own.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    canonical : bool, default False
        Make the first largest-magnitude entry of each left singular vector
        real and positive (see :func:`svdpi.svd`), and differentiate those
        factors (a loss may then depend on the phase).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation;
        skipped while compiling, under ``torch.func`` and on ``meta``).

    Returns
    -------
    svdpi.SVDResult
        ``(U, S, Vh)``, ``S`` real and descending.

    Raises
    ------
    ValueError
        In the backward pass, for complex input without ``canonical``, when
        the loss depends on the singular vectors' arbitrary phase (as
        ``torch.linalg.svd`` does; one host read).

    Notes
    -----
    Transforms: ``backward``, ``torch.func`` ``grad``/``vjp``/``jacrev``,
    ``jvp``/``jacfwd`` and ``vmap``. Second derivatives raise
    ``RuntimeError``. ``torch.compile(fullgraph=True)`` traces a function
    calling ``svd`` without a graph break (without forward mode), as for
    :func:`svdpi.torch.eig`.

    The phase check of complex input reads the backward's values on the
    host, as ``torch.linalg.svd``'s backward does. Where values cannot be
    read (while compiling, under ``torch.func`` transforms, on ``meta``) it
    is not an error: the gradient of a matrix whose loss depends on the
    phase is NaN instead.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.eye(3, 2, dtype=torch.float64).requires_grad_()  # σ = (1, 1)
    >>> u, s, vh = svdpi.torch.svd(a)
    >>> u[:, 0].sum().backward()  # singular vectors of a repeated singular value
    >>> bool(torch.isfinite(a.grad).all())
    True
    """
    _check(a, check_finite)
    method = check_svd_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    if torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active():
        # As in svdpi.torch.eig: compile of a torch.func transform would drop the
        # custom backward and differentiate torch.linalg.svd itself.
        torch._dynamo.graph_break()
    if torch.compiler.is_compiling():
        function, phase = _SvdReverse, "nan"
    elif torch._C._are_functorch_transforms_active():
        function, phase = _Svd, "nan"
    else:
        function, phase = _SvdEager, "nan" if a.device.type == "meta" else "raise"
    options = _Options(method, num_iters, canonical, phase)
    u, s, vh = function.apply(a, options)
    return svdpi.SVDResult(u, s, vh)


# ---------------------------------------------------------- singular-value maps


@dataclasses.dataclass(frozen=True)
class _Map:
    """``U diag(f) Vh`` for the polar factor (``fn is None``), a function, or the top ``rank``."""

    fn: SpectralFunction | None = None
    rank: int | None = None

    def value(self, u, s, vh):
        if self.fn is None:
            return u @ vh
        if self.rank is not None:  # the best rank-k approximation: slice, no zeros multiplied
            k = self.rank
            return (u[..., :k] * s[..., None, :k].to(u.dtype)) @ vh[..., :k, :]
        return (u * self.fn.value(s, xp=xp_torch)[..., None, :].to(u.dtype)) @ vh

    def derivative(self, u, s, vh, x):
        shape = (u.shape[-2], vh.shape[-1])
        if s.shape[-1] == 0:
            return torch.zeros_like(x)
        if self.fn is None:
            kernels = _polar_kernels(s, shape, xp_torch)
        else:
            mask = None
            if self.rank is not None:
                mask = torch.arange(s.shape[-1], device=s.device) < self.rank
                mask = mask.expand(s.shape)
            kernels = _kernels(s, shape, self.fn, mask, xp_torch)
        return apply_kernels(u, vh, x, *kernels, xp_torch)


def _map_save(ctx, spec, a, u, s, vh):
    # ``a`` links a create_graph backward to the input, so that differentiating
    # it reaches _FirstOrderOnly and raises.
    ctx.save_for_backward(a, u, s, vh)
    ctx.save_for_forward(u, s, vh)
    ctx.spec = spec


def _map_backward(ctx, grad):
    a, u, s, vh = ctx.saved_tensors
    if not torch.is_grad_enabled():
        return ctx.spec.derivative(u, s, vh, grad), None
    return _MapDerivative.apply(a, u, s, vh, grad, ctx.spec), None


def _map_jvp(ctx, tangent_a, _tangent_spec):
    u, s, vh = ctx.saved_tensors
    return _MapDerivative.apply(tangent_a, u, s, vh, tangent_a, ctx.spec)


@cached_signature
class _MapReverse(torch.autograd.Function):
    """Forward: SVD, then the map; backward: the exact derivative. No ``jvp`` (for dynamo)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, spec):
        u, s, vh = _svd_forward(a, False)
        # The factors are outputs (non-differentiable): a Function with a
        # separate setup_context can only save its inputs and outputs.
        return spec.value(u, s, vh), u, s, vh

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, u, s, vh = output
        _map_save(ctx, inputs[1], inputs[0], u, s, vh)
        ctx.mark_non_differentiable(u, s, vh)

    @staticmethod
    def backward(ctx, grad, _grad_u, _grad_s, _grad_vh):
        return _map_backward(ctx, grad)


class _MapFunc(_MapReverse):
    """:class:`_MapReverse` plus forward mode, for ``torch.func.jvp`` / ``jacfwd``."""

    @staticmethod
    def jvp(ctx, tangent_a, tangent_spec):
        return _map_jvp(ctx, tangent_a, tangent_spec), None, None, None


class _MapEager(torch.autograd.Function):
    """The same in the combined ``forward(ctx, ...)`` style, cheaper per plain eager call."""

    @staticmethod
    def forward(ctx, a, spec):
        u, s, vh = _svd_forward(a, False)
        _map_save(ctx, spec, a, u, s, vh)
        return spec.value(u, s, vh)

    backward = staticmethod(_map_backward)
    jvp = staticmethod(_map_jvp)


@cached_signature
class _MapDerivative(_FirstOrderOnly):
    @staticmethod
    def forward(_a, u, s, vh, x, spec):
        return spec.derivative(u, s, vh, x)


def _apply_map(a, spec):
    # Written out as in svdpi.torch.eig and spectral_map (a helper returning the
    # Function class broke fullgraph compilation).
    if torch.compiler.is_compiling():
        if torch._C._are_functorch_transforms_active():
            torch._dynamo.graph_break()
        return _MapReverse.apply(a, spec)[0]
    if torch._C._are_functorch_transforms_active():
        return _MapFunc.apply(a, spec)[0]
    return _MapEager.apply(a, spec)


def polar(a: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """The orthogonal (unitary) polar factor ``U Vh`` of ``a``, with its exact derivative.

    ``a = Q H`` with ``Q = U Vh`` and ``H = V diag(σ) Vh`` positive
    semi-definite: ``Q`` is the orthogonal (unitary; with orthonormal
    columns or rows if ``m ≠ n``) matrix nearest to ``a``. The derivative
    is :func:`svdpi.polar_vjp`'s: exact, finite and independent of the
    singular vectors at repeated singular values.

    Parameters
    ----------
    a : torch.Tensor, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., m, n)
        ``U Vh``: orthonormal columns (``m >= n``) or rows (``m <= n``).

    Notes
    -----
    A (numerically) rank-deficient matrix, whose smallest singular value is
    below ``max(m, n) · eps · σ_max``, has no unique polar factor: the value
    is one of them and its gradient is NaN (raising would need a host read).
    Transforms and compilation as for :func:`svd`; forward mode and
    ``vmap`` are supported, second derivatives raise.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = (2.0 * torch.eye(2, dtype=torch.float64)).requires_grad_()  # σ = (2, 2)
    >>> q = svdpi.torch.polar(a)
    >>> q
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64, grad_fn=<_MapEagerBackward>)
    >>> q[0, 1].backward()
    >>> a.grad
    tensor([[ 0.0000,  0.2500],
            [-0.2500,  0.0000]], dtype=torch.float64)
    """
    _check(a, check_finite)
    return _apply_map(a, _Map())


def low_rank(a: torch.Tensor, rank: int, *, check_finite: bool = True) -> torch.Tensor:
    """The best rank-``rank`` approximation ``U_k diag(σ_k) Vh_k`` of ``a``, exact derivative.

    Parameters
    ----------
    a : torch.Tensor, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.
    rank : int
        Number of leading singular triples kept, ``>= 0``; ``rank >= min(m, n)``
        keeps them all (the result is ``a``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., m, n)
        ``U_k diag(σ_k) Vh_k``, ``k = rank``.

    Notes
    -----
    The derivative is that of :func:`svdpi.singular_value_map_vjp` with
    ``f(σ) = σ`` on the kept singular values: exact, and independent of
    the singular vectors at repeated singular values on either side of the
    cut. It couples a kept ``σ_i`` and a dropped ``σ_j`` through
    ``σ_i / (σ_i − σ_j)``: where the two are closer than
    ``max(m, n) · eps · σ_max`` (``σ_rank = σ_rank+1``, no gap) the best
    approximation is not unique, has no derivative, and the gradient of that
    matrix is NaN; with a small but resolved gap it is large. Transforms and
    compilation as for :func:`svd`.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> a = torch.diag(torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    >>> svdpi.torch.low_rank(a, 3).diagonal()  # the repeated pair stays on one side
    tensor([3., 2., 2., 0.], dtype=torch.float64)
    """
    _check(a, check_finite)
    rank = check_integer(rank, "rank", minimum=0)
    rank = min(rank, min(a.shape[-2], a.shape[-1]))
    return _apply_map(a, _Map(Power(1.0), rank))


def singular_value_map(
    a: torch.Tensor, fn: SpectralFunction, *, check_finite: bool = True
) -> torch.Tensor:
    """``U diag(f(σ)) Vh`` for a function ``f`` of the singular values, exact derivative.

    Parameters
    ----------
    a : torch.Tensor, shape (..., m, n)
        Real or complex: float32, float64, complex64 or complex128.
    fn : svdpi.functions.SpectralFunction
        ``f`` with ``f(0) = 0`` (checked on the CPU once per function and
        dtype, outside compilation and ``torch.func``); e.g. ``Power(p)``,
        ``p > 0``, or ``Custom(f, df)``.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries (one host synchronisation).

    Returns
    -------
    torch.Tensor, shape (..., m, n)
        The same for every choice of singular vectors.

    Notes
    -----
    The derivative is :func:`svdpi.singular_value_map_vjp`'s (rectangular
    Daleckii–Krein), finite wherever ``f`` is differentiable on the singular
    values (at 0 too where one is 0). Transforms and compilation as for
    :func:`svd`.

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> from svdpi.functions import Power
    >>> a = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    >>> svdpi.torch.singular_value_map(a, Power(2.0))
    tensor([[ 9.,  0.],
            [ 0., 16.],
            [ 0.,  0.]], dtype=torch.float64)
    """
    _check(a, check_finite)
    if _can_read_values():
        check_function(fn, xp_torch, torch.float64)
    elif not isinstance(fn, SpectralFunction):
        raise TypeError(f"fn must be a svdpi.functions.SpectralFunction, got {type(fn).__name__}")
    return _apply_map(a, _Map(fn))
