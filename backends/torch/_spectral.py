"""One autograd node for every spectral function ``F(a) = V diag(f(λ)) Vᵀ``, ``(λ, V) = eig(a)``.

:func:`spectral_map` turns a :class:`svdpi.functions.SpectralFunction` into
one torch autograd node whose derivatives are the core's:
:func:`svdpi.spectral_map_vjp` backward, :func:`svdpi.spectral_map_jvp` in
forward mode and, for ``method="exact"``, :func:`svdpi.spectral_map_hvp`
for second derivatives. PyTorch never differentiates the forward's
operations, so torch computes the derivative with the formula NumPy, CuPy
and JAX users get (divided differences without cancellation, the
eigenvalue floor, the mask), finite and independent of the eigenbasis at
repeated eigenvalues.

The nodes, for ``F`` with options ``spec`` (a :class:`_Map`, hashable so
that ``torch.compile`` treats it as a constant):

* :class:`_Forward` (three variants: eager, ``torch.func``, compile):
  ``a ↦ F(a)``; backward ``ḡ ↦ vjp(ḡ)``, forward mode ``ȧ ↦ jvp(ȧ)``,
  each through :class:`_Linear`;
* :class:`_Linear`: ``(a, x) ↦ vjp(a, x)`` (or ``jvp``), linear in ``x``.
  Its own derivatives, for ``"exact"``: along ``a`` the second derivative
  ``hvp(x, ·)`` (:class:`_Second`; symmetric in its two arguments, so the
  VJP of ``ȧ ↦ hvp(x, ȧ)`` is ``hvp(x, ·)`` again), along ``x`` the
  transposed linear map, another :class:`_Linear`. For the other methods
  they raise: their gradient is a formula in the eigenpairs whose own
  derivative svdpi does not define;
* :class:`_Second`: ``(a, x, y) ↦ hvp(x, y)``, whose derivatives raise
  (third derivatives are not computed).

Errors name the function the user called (``svdpi.torch.sqrtm``,
``ZCAWhitening``, ...): ``_Map.caller``.
"""

from __future__ import annotations

import dataclasses

import svdpi
import torch
from svdpi.adapter import (
    MATRIX_FUNCTION_METHODS,
    Truncation,
    check_function,
    check_method,
    check_num_iters,
)
from svdpi.functions import SpectralFunction

from ._autograd import cached_signature
from ._eig import _check_matrix, _eigh_descending
from ._namespace import xp_torch
from ._native_spectral import exact_vjp
from ._native_spectral import value as native_value


@dataclasses.dataclass(frozen=True)
class Leading:
    """A mask rule: keep the ``n_components`` leading eigenpairs (the PCA projector)."""

    n_components: int

    def mask(self, eigenvalues: torch.Tensor, *, xp=None) -> torch.Tensor:
        n = eigenvalues.shape[-1]
        keep = torch.arange(n, device=eigenvalues.device) < self.n_components
        return keep.expand(eigenvalues.shape)


@dataclasses.dataclass(frozen=True)
class _Map:
    """What one node computes: ``fn`` on the eigenvalues kept by ``rule``, and its derivatives.

    Frozen and hashable (a ``Custom`` function hashes by its callables'
    identities): ``torch.compile`` treats an instance as a constant of the
    graph. ``rule`` chooses the kept eigenpairs from the (detached)
    eigenvalues in every call: no gradient flows through the choice.
    ``caller`` is the name errors give (the function the user called).
    """

    fn: SpectralFunction
    method: str = "exact"
    num_iters: int = 19
    rule: Truncation | Leading | None = None
    caller: str = "svdpi.torch.spectral_map"

    def mask(self, eigenvalues):
        if self.rule is None:
            return None
        return self.rule.mask(eigenvalues.detach(), xp=xp_torch)

    def value(self, eigenvalues, eigenvectors):
        if self.rule is None:  # the direct torch operations, where they apply
            result = native_value(self.fn, eigenvalues, eigenvectors)
            if result is not None:
                return result
        return svdpi.spectral_map(
            eigenvalues, eigenvectors, self.fn, mask=self.mask(eigenvalues), xp=xp_torch
        )

    def linear(self, eigenvalues, eigenvectors, x, transpose):
        """The VJP (``transpose``) or the JVP of the map at ``x``."""
        derivative = svdpi.spectral_map_vjp if transpose else svdpi.spectral_map_jvp
        return derivative(
            eigenvalues,
            eigenvectors,
            self.fn,
            x,
            mask=self.mask(eigenvalues),
            method=self.method,
            num_iters=self.num_iters,
            xp=xp_torch,
        )

    def vjp_untracked(self, eigenvalues, eigenvectors, grad):
        """The VJP in a backward pass that records nothing: the native path where it applies."""
        if self.method == "exact" and self.rule is None:
            result = exact_vjp(self.fn, eigenvalues, eigenvectors, grad)
            if result is not None:
                return result
        return self.linear(eigenvalues, eigenvectors, grad, True)

    def second(self, eigenvalues, eigenvectors, x, y):
        """``hvp(x, y)``: the second derivative ``d²F[x, y]`` (``"exact"`` only)."""
        return svdpi.spectral_map_hvp(
            eigenvalues, eigenvectors, self.fn, x, y, mask=self.mask(eigenvalues), xp=xp_torch
        )

    def once_only(self) -> RuntimeError:
        return RuntimeError(
            f"{self.caller} with method={self.method!r} is differentiable once: "
            "differentiating its derivative again (double backward, create_graph=True, "
            "torch.func.hessian, jacfwd(jacrev(...)), jacrev(jacrev(...))) needs "
            f"method='exact', whose second derivative svdpi computes exactly. The "
            f"{self.method!r} gradient is a formula in the eigenpairs whose own derivative "
            "svdpi does not define (autograd through it would be wrong at repeated "
            "eigenvalues)."
        )

    def twice_only(self) -> RuntimeError:
        return RuntimeError(
            f"{self.caller} (method='exact') is differentiable twice: its first and second "
            "derivatives are exact, third derivatives are not computed by svdpi"
        )


# ------------------------------------------------------------------ nodes


def _save(ctx, spec, a, eigenvalues, eigenvectors):
    # ``a`` links the derivative nodes to the input: differentiating them
    # along ``a`` reaches _Linear's own derivatives (second order).
    ctx.save_for_backward(a, eigenvalues, eigenvectors)
    ctx.save_for_forward(a, eigenvalues, eigenvectors)
    ctx.spec = spec


def _backward(ctx, grad):
    a, eigenvalues, eigenvectors = ctx.saved_tensors
    if not torch.is_grad_enabled():
        # A plain backward records no graph: no node needed (its Function
        # call costs about a tenth of a small forward + backward), and the
        # core's exact VJP may run as direct torch operations (_native_spectral).
        grad_a = ctx.spec.vjp_untracked(eigenvalues, eigenvectors, grad)
    else:  # create_graph=True or a torch.func transform: a node with derivatives
        grad_a = _Linear.apply(a, eigenvalues, eigenvectors, grad, ctx.spec, True)
    return grad_a, None


def _jvp(ctx, tangent_a, _tangent_spec):
    a, eigenvalues, eigenvectors = ctx.saved_tensors
    return _Linear.apply(a, eigenvalues, eigenvectors, tangent_a, ctx.spec, False)


@cached_signature
class _ForwardReverse(torch.autograd.Function):
    """Forward: exact eigh, then the function; backward: the core's VJP.

    No ``jvp``: dynamo cannot trace a Function that defines one, so this is
    the variant used while ``torch.compile`` traces.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, spec):
        eigenvalues, eigenvectors = _eigh_descending(a)
        # The eigenpairs are outputs (non-differentiable) because a Function
        # with a separate setup_context can only save its inputs and outputs.
        return spec.value(eigenvalues, eigenvectors), eigenvalues, eigenvectors

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, spec = inputs
        _, eigenvalues, eigenvectors = output
        _save(ctx, spec, a, eigenvalues, eigenvectors)
        ctx.mark_non_differentiable(eigenvalues, eigenvectors)

    @staticmethod
    def backward(ctx, grad, _grad_eigenvalues, _grad_eigenvectors):
        return _backward(ctx, grad)


class _Forward(_ForwardReverse):
    """:class:`_ForwardReverse` plus forward mode, for ``torch.func.jvp`` / ``jacfwd``."""

    @staticmethod
    def jvp(ctx, tangent_a, tangent_spec):
        return _jvp(ctx, tangent_a, tangent_spec), None, None


class _ForwardEager(torch.autograd.Function):
    """The same in the combined ``forward(ctx, ...)`` style, cheaper per call in eager mode."""

    @staticmethod
    def forward(ctx, a, spec):
        eigenvalues, eigenvectors = _eigh_descending(a)
        _save(ctx, spec, a, eigenvalues, eigenvectors)
        return spec.value(eigenvalues, eigenvectors)

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


@cached_signature
class _Linear(torch.autograd.Function):
    """``(a, x) ↦ vjp(a, x)`` (``transpose``) or ``jvp(a, x)``: a first derivative, as a node.

    Its derivatives (``"exact"`` only; the other methods raise):

    * backward, cotangent ``h``: along ``a``, ``hvp(x, h)`` (the VJP of
      ``ȧ ↦ hvp(x, ȧ)``, which is self-adjoint since ``<h, hvp(x, ȧ)>`` is
      symmetric in ``h``, ``x`` and ``ȧ``); along ``x``, the transposed map
      at ``h``;
    * forward mode: ``hvp(x, ȧ) + linear(ẋ)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, eigenvalues, eigenvectors, x, spec, transpose):
        return spec.linear(eigenvalues, eigenvectors, x, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, eigenvalues, eigenvectors, x, spec, transpose = inputs
        ctx.save_for_backward(a, eigenvalues, eigenvectors, x)
        ctx.save_for_forward(a, eigenvalues, eigenvectors, x)
        ctx.spec = spec
        ctx.transpose = transpose
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, h):
        spec = ctx.spec
        if spec.method != "exact":
            raise spec.once_only()
        a, eigenvalues, eigenvectors, x = ctx.saved_tensors
        if h is None:
            return None, None, None, None, None, None
        grad_a = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_a = _Second.apply(a, eigenvalues, eigenvectors, x, h, spec)
        if ctx.needs_input_grad[3]:
            grad_x = _Linear.apply(a, eigenvalues, eigenvectors, h, spec, not ctx.transpose)
        return grad_a, None, None, grad_x, None, None

    @staticmethod
    def jvp(ctx, tangent_a, _tangent_values, _tangent_vectors, tangent_x, _spec, _transpose):
        spec = ctx.spec
        if spec.method != "exact":
            raise spec.once_only()
        a, eigenvalues, eigenvectors, x = ctx.saved_tensors
        result = None
        if tangent_a is not None:
            result = _Second.apply(a, eigenvalues, eigenvectors, x, tangent_a, spec)
        if tangent_x is not None:
            part = _Linear.apply(a, eigenvalues, eigenvectors, tangent_x, spec, ctx.transpose)
            result = part if result is None else result + part
        return torch.zeros_like(x) if result is None else result


@cached_signature
class _Second(torch.autograd.Function):
    """``(a, x, y) ↦ hvp(x, y)``, the second derivative; its own derivatives raise."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, eigenvalues, eigenvectors, x, y, spec):
        return spec.second(eigenvalues, eigenvectors, x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.spec = inputs[-1]

    @staticmethod
    def backward(ctx, *grads):
        raise ctx.spec.twice_only()

    @staticmethod
    def jvp(ctx, *tangents):
        raise ctx.spec.twice_only()


def apply(a: torch.Tensor, spec: _Map, *, check_finite: bool) -> torch.Tensor:
    """``F(a)`` for options already checked: the node every public function goes through."""
    _check_matrix(a, check_finite, allow_empty=True)
    if a.numel() == 0:
        # n = 0 or an empty batch: every map is (..., n, n) -> (..., n, n), so
        # the result is empty, as from code built on torch.linalg.eigh. a · a · 0
        # keeps it connected to ``a`` to second order: backward gives an empty
        # gradient that itself has a graph (create_graph=True, then backward
        # again, as through eigh).
        return a * a * 0
    # The variant is chosen as in svdpi.torch.eig, written out in both places:
    # a shared helper returning the Function class made torch.compile
    # (fullgraph=True) fail with an internal dynamo error (PyTorch 2.14).
    if torch.compiler.is_compiling():
        if torch._C._are_functorch_transforms_active():
            # As in svdpi.torch.eig: compile of a torch.func transform would drop
            # the custom backward; run this call eagerly instead.
            torch._dynamo.graph_break()
        return _ForwardReverse.apply(a, spec)[0]
    if torch._C._are_functorch_transforms_active():
        return _Forward.apply(a, spec)[0]
    return _ForwardEager.apply(a, spec)


def make_map(fn, method, num_iters, *, rule=None, caller="svdpi.torch.spectral_map") -> _Map:
    """A checked :class:`_Map`: the options' errors name ``fn``, ``method``, ``num_iters``."""
    return _Map(
        check_function(fn),
        check_method(method, MATRIX_FUNCTION_METHODS),
        check_num_iters(num_iters),
        rule,
        caller,
    )


def spectral_map(
    a: torch.Tensor,
    fn: SpectralFunction,
    *,
    method: str = "exact",
    num_iters: int = 19,
    check_finite: bool = True,
) -> torch.Tensor:
    """A spectral function of symmetric matrices, ``F(a) = V diag(f(λ)) Vᵀ``, differentiable.

    One autograd node for any :class:`svdpi.functions.SpectralFunction`:
    the forward is the exact eigendecomposition and
    :func:`svdpi.spectral_map`; the backward is :func:`svdpi.spectral_map_vjp`,
    forward mode :func:`svdpi.spectral_map_jvp` and, for ``method="exact"``,
    second derivatives :func:`svdpi.spectral_map_hvp`.

    Parameters
    ----------
    a : torch.Tensor, shape (..., n, n)
        Symmetric, float32 or float64, or complex Hermitian, complex64 or
        complex128; any device. Only ``(a + aᴴ) / 2`` is used.
    fn : svdpi.functions.SpectralFunction
        The function of the eigenvalues: a built-in (``Power(p)``, ``Log()``,
        ``Exp()``, ``Clamp(minimum)``, ``Softplus()``, ``Abs()``) or a user's
        (``Custom(f, df, d2f)``, or a subclass). Its ``domain`` clamps the
        eigenvalues first (see :func:`svdpi.spectral_map`).
    method : {"exact", "pi", "taylor", "analytic"}, default "exact"
        Gradient rule, see :func:`svdpi.spectral_map_vjp`. ``"exact"``: the
        derivative of ``F`` (Daleckii–Krein), finite and independent of the
        eigenbasis at repeated eigenvalues, and differentiable once more.
        ``"pi"``, ``"taylor"``, ``"analytic"``: the chain rule through the
        eigenvectors with the coefficients of :func:`svdpi.eig_vjp` (the
        paper's layers), first derivatives only.
    num_iters : int, default 19
        Power-iteration steps (``"pi"``) or highest power kept (``"taylor"``).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN/inf entries of ``a`` (one host
        synchronisation; skipped while compiling, under ``torch.func`` and
        on the meta device).

    Returns
    -------
    torch.Tensor, shape (..., n, n)
        ``F(a)``, symmetric (Hermitian), of ``a``'s dtype.

    Raises
    ------
    TypeError
        If ``fn`` is not a ``SpectralFunction`` or ``a`` is not a floating
        tensor.
    ValueError
        For a non-square or non-finite ``a``, an unknown ``method`` or a bad
        ``num_iters``.
    RuntimeError
        When differentiating a ``"pi"``, ``"taylor"`` or ``"analytic"``
        gradient again, or an ``"exact"`` one twice more (third derivatives).

    Notes
    -----
    Transforms: ``backward`` (also ``create_graph=True``), ``torch.func``'s
    ``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``hessian`` and
    ``vmap``, ``torch.autograd.forward_ad``. ``torch.compile(fullgraph=True)``
    traces it without a graph break when ``fn`` is hashable (the built-ins
    are compared by value, ``Custom`` by its callables), but a compiled
    function has no forward mode (dynamo cannot trace a Function that
    defines one; see :func:`svdpi.torch.eig`). Empty batches and ``n = 0``
    give empty results; meta tensors give shapes.

    Complex Hermitian input: the derivatives are the core's, in PyTorch's
    gradient convention, second derivatives included; a spectral map never
    depends on the eigenvectors' phase. The backward pass computes them
    with the core's code (the direct torch operations of the real exact
    backward do not apply).

    Examples
    --------
    >>> import torch
    >>> import svdpi.torch
    >>> from svdpi.functions import Custom, Exp
    >>> a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> torch.allclose(svdpi.torch.spectral_map(a, Exp()), torch.linalg.matrix_exp(a))
    True

    A user's function, with its second derivative for Hessians:

    >>> tanh = Custom(torch.tanh, lambda x: 1 - torch.tanh(x) ** 2,
    ...               lambda x: -2 * torch.tanh(x) * (1 - torch.tanh(x) ** 2))
    >>> eye = torch.eye(2, dtype=torch.float64)
    >>> h = torch.func.hessian(lambda m: svdpi.torch.spectral_map(m, tanh).trace())(eye)
    >>> h.shape
    torch.Size([2, 2, 2, 2])
    >>> float(h[0, 0, 0, 0])  # tanh''(1) on a diagonal entry
    -0.6397...
    """
    return apply(a, make_map(fn, method, num_iters), check_finite=check_finite)
