"""One ``jax.custom_jvp`` for every spectral function, with second derivatives for "exact".

``F(A) = V diag(mask · f(clamped λ)) Vᵀ`` is ``value``, a ``custom_jvp`` of
``A`` and of the eigenpairs (computed from ``stop_gradient(A)``, so JAX never
differentiates ``eigh``). Its JVP rule is the core's
:func:`svdpi.spectral_map_jvp` as a JAX primitive, ``linear_p``: linear in
the tangent, transposed by the core's :func:`svdpi.spectral_map_vjp`
(reverse mode), and itself differentiable in ``A`` through the core's
:func:`svdpi.spectral_map_hvp` (the primitive ``hvp_p``) for
``method="exact"``. ``hvp_p`` is bilinear in its two directions, its own
transpose in either (the second derivative is symmetric), and raises for a
third derivative. Both primitives are lowered from the core's code on
``jax.numpy`` (``mlir.lower_fun``), and batch over leading axes as the core does.

Why primitives and not a ``custom_jvp`` for the linear map: reverse mode
partially evaluates the JVP rule, and JAX's partial evaluation inlines a
``custom_jvp`` whose inputs are part known (``A``) and part unknown (the
tangent), dropping its rule. The eigenpairs then become residuals of the
linear map, and forward-over-reverse (``jax.hessian``, ``jacfwd(grad(f))``)
differentiates them through ``eigh``: NaN at a repeated eigenvalue. A
primitive stays in the linear program with ``A`` as an operand, so the outer
derivative goes through its own rule: ``hvp`` in ``A``, the map itself in the
tangent.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import svdpi
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

_SECOND_ORDER_ONLY = (
    "{name} with method='exact' is differentiable twice: a third derivative (a "
    "derivative of jax.hessian, of jacfwd(jacrev(f)), of grad(grad(f)), ...) is not "
    "supported. svdpi's second derivative is a formula in the eigenpairs and the "
    "second divided differences whose own derivative svdpi does not define, and "
    "differentiating the formula would be wrong at repeated eigenvalues."
)

_FIRST_ORDER_ONLY = (
    "{name} with method={method!r} is differentiable once: differentiating its "
    "derivative again (jax.hessian, jacfwd(jacrev(...)), grad(grad(...))) is not "
    "supported. The {method!r} derivative is a formula in the eigenpairs whose own "
    "derivative svdpi does not define, and differentiating the formula would be wrong "
    "at repeated eigenvalues. method='exact' has second derivatives."
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything static about a call: a primitive parameter and part of JAX's cache keys.

    Hashable and compared by value; ``name`` (the public function called,
    for error messages) takes no part in the comparison, so that ``logm``
    and ``matrix_log``, or ``inv_sqrtm`` and ``matrix_power(·, -0.5)``, share
    their compiled programs.
    """

    fn: Any  # a svdpi.functions.SpectralFunction
    method: str
    num_iters: int
    name: str = dataclasses.field(compare=False)
    n_components: int | None = None


def eigenpairs_and_mask(a: Any, mask: Any, spec: Spec) -> tuple[Any, Any, Any]:
    """The eigenpairs of ``a`` (no derivative flows through them) and the mask to use.

    ``mask`` (the user's) and ``n_components``' mask are combined; ``None``
    when neither applies.
    """
    eigenvalues, eigenvectors = svdpi.eig(jax.lax.stop_gradient(a), check_finite=False, xp=jnp)
    if spec.n_components is not None:
        leading = jnp.arange(a.shape[-1]) < spec.n_components
        mask = jnp.broadcast_to(leading, eigenvalues.shape) if mask is None else mask & leading
    return eigenvalues, eigenvectors, mask


def apply(a: Any, mask: Any, spec: Spec) -> Any:
    """``F(a)`` with the derivatives of ``spec`` (arguments already checked)."""
    eigenvalues, eigenvectors, mask = eigenpairs_and_mask(a, mask, spec)
    return value(a, eigenvalues, eigenvectors, mask, spec)


# ------------------------------------------------------------------ the value


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def value(a, eigenvalues, eigenvectors, mask, spec):
    """``spectral_map(eigenvalues, eigenvectors)``, differentiable in ``a``, their matrix.

    The eigenpairs' own tangents are ignored: they are computed from
    ``stop_gradient(a)``, and ``a``'s tangent carries the whole derivative.
    """
    del a
    return svdpi.spectral_map(eigenvalues, eigenvectors, spec.fn, mask=mask, xp=jnp)


@value.defjvp
def _value_jvp(spec, primals, tangents):
    a, eigenvalues, eigenvectors, mask = primals
    tangent_a = tangents[0]
    # Through value itself, so that a derivative of this rule (second order)
    # differentiates the value by this rule again.
    result = value(a, eigenvalues, eigenvectors, mask, spec)
    return result, linear(a, eigenvalues, eigenvectors, mask, tangent_a, spec, transpose=False)


# ---------------------------------------------------------------- primitives


def _operands(a, eigenvalues, eigenvectors, mask, *rest):
    head = (a, eigenvalues, eigenvectors) if mask is None else (a, eigenvalues, eigenvectors, mask)
    return (*head, *rest)


def _split(operands, masked, trailing):
    """``(a, eigenvalues, eigenvectors, mask, *trailing operands)`` from a primitive's operands."""
    a, eigenvalues, eigenvectors = operands[:3]
    mask = operands[3] if masked else None
    return a, eigenvalues, eigenvectors, mask, operands[len(operands) - trailing :]


def linear(a, eigenvalues, eigenvectors, mask, x, spec, *, transpose):
    """The JVP (``transpose=False``) or VJP of ``F`` at ``a`` applied to ``x``: ``linear_p``."""
    operands = _operands(a, eigenvalues, eigenvectors, mask, x)
    return linear_p.bind(*operands, spec=spec, transpose=transpose, masked=mask is not None)


def hvp(a, eigenvalues, eigenvectors, mask, grad, tangent, spec, *, conjugate=False):
    """The core's ``spectral_map_hvp`` at ``a``: :data:`hvp_p`.

    ``conjugate`` (complex input only): ``conj(hvp(conj(grad), tangent))``,
    the derivative of the VJP in JAX's convention (see :func:`_linear_impl`).
    """
    operands = _operands(a, eigenvalues, eigenvectors, mask, grad, tangent)
    return hvp_p.bind(*operands, spec=spec, masked=mask is not None, conjugate=conjugate)


linear_p = Primitive("svdpi_spectral_map_linear")
hvp_p = Primitive("svdpi_spectral_map_hvp")


def _linear_impl(*operands, spec, transpose, masked):
    _, eigenvalues, eigenvectors, mask, (x,) = _split(operands, masked, 1)
    options = {"mask": mask, "method": spec.method, "num_iters": spec.num_iters, "xp": jnp}
    if not transpose:
        return svdpi.spectral_map_jvp(eigenvalues, eigenvectors, spec.fn, x, **options)
    if not jnp.iscomplexobj(x):
        return svdpi.spectral_map_vjp(eigenvalues, eigenvectors, spec.fn, x, **options)
    # JAX transposes a linear map for the pairing Re Σ ct · x (no conjugate);
    # the core's VJP is PyTorch's, for Re Σ conj(ct) · x: the transpose in
    # JAX's convention is conj(vjp(conj(ct))) (docs/theory_complex.rst).
    result = svdpi.spectral_map_vjp(eigenvalues, eigenvectors, spec.fn, jnp.conj(x), **options)
    return jnp.conj(result)


def _hvp_impl(*operands, spec, masked, conjugate):
    _, eigenvalues, eigenvectors, mask, (grad, tangent) = _split(operands, masked, 2)
    if conjugate:  # the derivative of conj(vjp(conj(grad))), see _linear_impl
        grad = jnp.conj(grad)
    result = svdpi.spectral_map_hvp(
        eigenvalues, eigenvectors, spec.fn, grad, tangent, mask=mask, method=spec.method, xp=jnp
    )
    return jnp.conj(result) if conjugate else result


def _abstract(*operands, **params):
    x = operands[-1]
    return ShapedArray(x.shape, x.dtype)


def _linear_jvp(primals, tangents, *, spec, transpose, masked):
    a, eigenvalues, eigenvectors, mask, (x,) = _split(primals, masked, 1)
    tangent_a, tangent_x = tangents[0], tangents[-1]
    params = {"spec": spec, "transpose": transpose, "masked": masked}
    out = linear_p.bind(*primals, **params)
    terms = []
    if type(tangent_x) is not ad.Zero:  # linear in x
        terms.append(linear_p.bind(*primals[:-1], tangent_x, **params))
    if type(tangent_a) is not ad.Zero:
        if spec.method != "exact":
            raise NotImplementedError(_FIRST_ORDER_ONLY.format(name=spec.name, method=spec.method))
        # The derivative of the exact map along tangent_a: the core's hvp, for
        # the VJP and (where it is symmetric, i.e. wherever hvp is finite) the JVP.
        # A complex VJP is conj(vjp(conj(x))) (_linear_impl), its derivative too.
        conjugate = transpose and jnp.iscomplexobj(x)
        terms.append(
            hvp(a, eigenvalues, eigenvectors, mask, x, tangent_a, spec, conjugate=conjugate)
        )
    if not terms:
        return out, jnp.zeros_like(out)
    return out, functools.reduce(jnp.add, terms)


def _linear_transpose(cotangent, *operands, spec, transpose, masked):
    *known, x = operands
    if not ad.is_undefined_primal(x) or any(ad.is_undefined_primal(k) for k in known):
        raise NotImplementedError(f"{spec.name}: the derivative map is linear in its tangent only")
    if type(cotangent) is ad.Zero:
        return (None,) * len(known) + (ad.Zero(x.aval),)
    result = linear_p.bind(*known, cotangent, spec=spec, transpose=not transpose, masked=masked)
    return (None,) * len(known) + (result,)


def _hvp_jvp(primals, tangents, *, spec, masked, conjugate):
    a, eigenvalues, eigenvectors, mask, (grad, tangent) = _split(primals, masked, 2)
    tangent_a, tangent_grad, tangent_tangent = tangents[0], tangents[-2], tangents[-1]
    if type(tangent_a) is not ad.Zero:
        raise NotImplementedError(_SECOND_ORDER_ONLY.format(name=spec.name))
    out = hvp_p.bind(*primals, spec=spec, masked=masked, conjugate=conjugate)
    terms = []  # bilinear in (grad, tangent), over the reals
    pairs = ((tangent_grad, tangent), (grad, tangent_tangent))
    for (x, y), direction in zip(pairs, (tangent_grad, tangent_tangent), strict=True):
        if type(direction) is not ad.Zero:
            terms.append(hvp(a, eigenvalues, eigenvectors, mask, x, y, spec, conjugate=conjugate))
    if not terms:
        return out, jnp.zeros_like(out)
    return out, functools.reduce(jnp.add, terms)


def _hvp_transpose(cotangent, *operands, spec, masked, conjugate):
    *known, grad, tangent = operands
    a, eigenvalues, eigenvectors, mask, _ = _split((*known, grad, tangent), masked, 2)
    undefined = [ad.is_undefined_primal(grad), ad.is_undefined_primal(tangent)]
    if undefined.count(True) != 1 or any(ad.is_undefined_primal(k) for k in known):
        raise NotImplementedError(f"{spec.name}: the second derivative is bilinear")
    results = [None, None]
    # <S, hvp(G, T)> is symmetric in S, G and T: the transpose in either
    # argument is hvp with the cotangent in its place.
    other = tangent if undefined[0] else grad
    slot = 0 if undefined[0] else 1
    if type(cotangent) is ad.Zero:
        results[slot] = ad.Zero((grad if undefined[0] else tangent).aval)
    elif not jnp.iscomplexobj(cotangent):
        results[slot] = hvp(a, eigenvalues, eigenvectors, mask, cotangent, other, spec)
    else:
        # Complex: JAX's pairing is Re Σ S · X, the core's symmetry is for
        # Re Σ conj(S) · X. With B(G, T) = hvp(G, T) and B*(G, T) =
        # conj(hvp(conj G, T)) (conjugate=True), the transposes are: of B in
        # either slot, B*(S, other); of B* in G, B(S, T); of B* in T, B*(G, S).
        if not conjugate:
            pair, flag = (cotangent, other), True
        elif undefined[0]:
            pair, flag = (cotangent, tangent), False
        else:
            pair, flag = (grad, cotangent), True
        results[slot] = hvp(a, eigenvalues, eigenvectors, mask, *pair, spec, conjugate=flag)
    return (None,) * len(known) + tuple(results)


def _batch(primitive, operands, dims, **params):
    """vmap: every operand gets the batch axis in front (the core maps batch over leading axes)."""
    size = next(x.shape[d] for x, d in zip(operands, dims, strict=True) if d is not None)
    moved = [
        jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
        for x, d in zip(operands, dims, strict=True)
    ]
    return primitive.bind(*moved, **params), 0


def _register(primitive, impl, jvp, transpose, static):
    primitive.def_impl(jax.jit(impl, static_argnames=static))
    primitive.def_abstract_eval(_abstract)
    mlir.register_lowering(primitive, mlir.lower_fun(impl, multiple_results=False))
    ad.primitive_jvps[primitive] = jvp
    ad.primitive_transposes[primitive] = transpose
    batching.primitive_batchers[primitive] = functools.partial(_batch, primitive)


_register(linear_p, _linear_impl, _linear_jvp, _linear_transpose, ("spec", "transpose", "masked"))
_register(hvp_p, _hvp_impl, _hvp_jvp, _hvp_transpose, ("spec", "masked", "conjugate"))
