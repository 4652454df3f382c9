"""The coefficient matrix that turns a perturbation of ``a`` into one of the eigenvectors.

For eigenpairs ``a = V diag(λ) Vᵀ`` (λ descending) and a symmetric perturbation
``da`` with ``E = Vᵀ da V``, every method here has the form::

    dλ_j = E_jj,        dv_j = Σ_{m≠j} A_jm E_mj v_m

and differs only in ``A``. With ``big = max(λ_j, λ_m)`` and
``r = min(λ_j, λ_m) / big`` (so ``0 < r <= 1``):

* ``"analytic"``: ``A_jm = 1 / (λ_j − λ_m)``, the exact derivative of the
  eigenvectors; infinite for equal eigenvalues.
* ``"taylor"`` (Wang et al., TPAMI 2021): the series of ``1 / (λ_j − λ_m)`` in
  ``r`` truncated after the power ``K``: ``A_jm = ±S_K(r) / big``.
* ``"pi"`` (Wang et al., NeurIPS 2019): the gradient of ``T`` power-iteration
  steps with deflation started at the exact eigenvectors. Solving the
  recursion through the deflation gives the same series, truncated after
  ``r^T`` above the diagonal (``j < m``) and after ``r^(T-1)`` below it.

Here ``S_K(r) = Σ_{i=0..K} r^i`` is evaluated in closed form (see
:func:`geometric_sum`), so the cost does not depend on ``K``, and exactly
for equal eigenvalues (``r = 1``) whatever ``K`` is.

Everything here is real. For a complex Hermitian matrix (``Vᴴ`` for ``Vᵀ``)
the same real ``A`` multiplies the real and imaginary parts of ``E`` apart
(:func:`svdpi._gradient._coefficient_product` splits them), so this module
and the native steps only ever see real arrays.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._compat import array_device
from ._divided_differences import constant
from ._typing import Array, Namespace


def eigenvalue_floor(eigenvalues: Any, xp: Any) -> Any:
    """Smallest eigenvalue the gradient coefficients may divide by, per matrix.

    ``max(n · eps · max|λ|, tiny / eps)``: eigenvalues below ``n · eps · max|λ|``
    are indistinguishable from zero after a backward-stable eigensolver (its
    error on each eigenvalue is about that large), and ``tiny / eps`` keeps
    ``(K + 1) / floor`` far from overflow for an all-zero matrix. Shape
    ``(..., 1)`` so it broadcasts against the eigenvalues.
    """
    finfo = xp.finfo(eigenvalues.dtype)
    n = eigenvalues.shape[-1]
    scale = xp.max(xp.abs(eigenvalues), axis=-1, keepdims=True)
    # maximum, not clip: array-api-compat's clip for CuPy assigns through a
    # boolean mask, which reads a count on the host (a GPU synchronisation).
    least = constant(finfo.smallest_normal / finfo.eps, eigenvalues, xp)
    return xp.maximum(scale * (n * finfo.eps), least)


def clamp_eigenvalues(eigenvalues: Any, xp: Any) -> Any:
    """Eigenvalues raised to :func:`eigenvalue_floor` (zero, negative or round-off ones)."""
    return xp.maximum(eigenvalues, eigenvalue_floor(eigenvalues, xp))


def geometric_sum(ratio_minus_one: Array, terms: float, xp: Namespace) -> tuple[Array, Array]:
    """``Σ_{i=0..terms-1} r^i`` and ``r^terms − 1`` for ``r = 1 + ratio_minus_one`` in ``(0, 1]``.

    ``r^terms − 1 = expm1(terms · log1p(r − 1))`` and the sum is that over
    ``r − 1``: accurate right up to ``r = 1``, since no ``1 − r`` is ever
    formed by cancellation (``r − 1`` is the input itself), and the cost does
    not depend on ``terms``. At exactly ``r = 1`` (equal eigenvalues) the
    numerator is ``expm1(−0) = −0``; the denominator there is ``r − 1 − 1``
    instead, so no ``0/0`` is formed, and ``terms`` is added: the sum is
    exactly ``terms`` for any ``terms``, and neither the value nor a gradient
    taken through it sees a NaN.
    """
    power_minus_one = xp.expm1(terms * xp.log1p(ratio_minus_one))
    equal = xp.astype(ratio_minus_one == 0, ratio_minus_one.dtype)
    series = power_minus_one / (ratio_minus_one - equal) + equal * terms
    return series, power_minus_one


def triangles(n: int, dtype: Any, device: Any, xp: Namespace) -> tuple[Array, Array]:
    """The strictly upper and strictly lower triangular masks of an ``n × n`` matrix."""
    index = xp.arange(n, device=device)
    upper = xp.astype(index[:, None] < index[None, :], dtype)
    return upper, xp.matrix_transpose(upper)


class CoefficientParts(NamedTuple):
    """``A = (signed + U ∘ power) / big`` (see :func:`coefficient_parts`)."""

    signed: Array
    power: Array | None
    big: Array | None


def coefficient_parts(
    eigenvalues: Array, sign: Array, *, method: str, num_iters: int, xp: Namespace
) -> CoefficientParts:
    """The matrix ``A`` of the module docstring as ``(signed + U ∘ power) / big``.

    ``U`` is the strictly upper triangular mask and ``sign`` is ``U − Uᵀ``
    (any multiple of it, for :func:`coefficient_product`'s halving), so
    ``signed = sign ∘ S`` is antisymmetric and ``power`` symmetric.
    ``"taylor"``: ``S = S_K(r)`` on both sides and no ``power``. ``"pi"``:
    the sum above the diagonal has one term more than the one below, so
    ``S = S_{T-1}(r)`` and ``power = r^T``. Keeping the two apart is what
    makes the symmetrised product exact for any ``T``: forming
    ``S_T − S_{T-1}`` from the two sums would leave nothing of ``r^T`` once
    ``T`` reaches ``1 / eps``. ``"analytic"``: ``signed = sign / (λ_j − λ_m)``
    (``sign`` the off-diagonal mask here), no ``power`` and no ``big``.
    ``eigenvalues`` must be sorted descending, as :func:`svdpi.eig` returns them.
    """
    if method == "analytic":
        difference = eigenvalues[..., :, None] - eigenvalues[..., None, :]
        n = eigenvalues.shape[-1]
        upper, lower = triangles(n, eigenvalues.dtype, array_device(eigenvalues), xp)
        # Adding 1 on the diagonal keeps 0/0 out of it; the numerator zeroes it.
        return CoefficientParts(sign / (difference + (1.0 - (upper + lower))), None, None)

    lam = clamp_eigenvalues(eigenvalues, xp)
    lam_j = lam[..., :, None]
    lam_m = lam[..., None, :]
    big = xp.maximum(lam_j, lam_m)
    # small / big − 1 as a difference: exact for close eigenvalues.
    ratio_minus_one = -xp.abs(lam_j - lam_m) / big
    # "pi": powers 0..T-1 on both sides, plus r^T above the diagonal (see the
    # module docstring); "taylor": powers 0..K on both sides.
    terms = float(num_iters) if method == "pi" else float(num_iters + 1)
    series, power_minus_one = geometric_sum(ratio_minus_one, terms, xp)
    power = power_minus_one + 1.0 if method == "pi" else None
    return CoefficientParts(sign * series, power, big)


def coefficient_matrix(eigenvalues: Array, *, method: str, num_iters: int, xp: Namespace) -> Array:
    """The matrix ``A`` of the module docstring, shape ``(..., n, n)``, zero diagonal.

    ``eigenvalues`` must be sorted descending, as :func:`svdpi.eig` returns them.
    """
    upper, lower = triangles(
        eigenvalues.shape[-1], eigenvalues.dtype, array_device(eigenvalues), xp
    )
    sign = upper + lower if method == "analytic" else upper - lower
    signed, power, big = coefficient_parts(
        eigenvalues, sign, method=method, num_iters=num_iters, xp=xp
    )
    if big is None:
        return signed
    return (signed if power is None else signed + upper * power) / big


def coefficient_product(
    eigenvalues: Array,
    b: Array,
    *,
    method: str,
    num_iters: int,
    symmetrize: bool,
    xp: Namespace,
) -> Array:
    """``P = Aᵀ ∘ b``, or ``(P + Pᵀ) / 2`` if ``symmetrize``: the generic code of the native step.

    With ``A = (N + U ∘ E) / big`` (:func:`coefficient_parts`: ``N``
    antisymmetric, ``E`` symmetric, ``U`` / ``L`` the strictly upper / lower
    masks)::

        Aᵀ ∘ b          = (L ∘ E − N) / big ∘ b
        (P + Pᵀ) / 2    = (N/2 ∘ (bᵀ − b) + X + Xᵀ) / big,   X = E ∘ L/2 ∘ b

    The second form never subtracts one coefficient from another: for equal
    eigenvalues and a huge ``num_iters`` it keeps the ``r^T`` term that
    ``A_mj b_jm + A_jm b_mj`` would lose to cancellation. The halving is
    applied to the masks, where it is exact and costs nothing.
    """
    upper, lower = triangles(
        eigenvalues.shape[-1], eigenvalues.dtype, array_device(eigenvalues), xp
    )
    sign = upper + lower if method == "analytic" else upper - lower
    if symmetrize:
        sign = sign * 0.5
    signed, power, big = coefficient_parts(
        eigenvalues, sign, method=method, num_iters=num_iters, xp=xp
    )
    if symmetrize:
        numerator = signed * (xp.matrix_transpose(b) - b)
        if power is not None:
            x = power * (lower * 0.5) * b
            numerator = numerator + x + xp.matrix_transpose(x)
        return numerator if big is None else numerator / big
    transposed = -signed if power is None else lower * power - signed
    return (transposed if big is None else transposed / big) * b
