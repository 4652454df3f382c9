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
:func:`geometric_sum`), so the cost does not depend on ``K``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device


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
    return xp.clip(scale * (n * finfo.eps), min=finfo.smallest_normal / finfo.eps)


def clamp_eigenvalues(eigenvalues: Any, xp: Any) -> Any:
    """Eigenvalues raised to :func:`eigenvalue_floor` (zero, negative or round-off ones)."""
    return xp.maximum(eigenvalues, eigenvalue_floor(eigenvalues, xp))


def geometric_sum(log_ratio: Any, terms: Any, xp: Any) -> Any:
    """``Σ_{i=0..terms-1} r^i`` for ``r = exp(log_ratio) <= 1``, without a loop over ``i``.

    ``expm1(terms · L) / expm1(L)`` is accurate right up to ``r = 1`` (no
    ``1 − r`` cancellation). The ``L = 0`` lanes (equal eigenvalues), where it
    is ``0/0``, get a harmless denominator *before* the division, then their
    exact value ``terms``: a ``where`` after a ``0/0`` would still warn and
    poison gradients taken through this function.
    """
    at_one = log_ratio == 0
    safe_log = xp.where(at_one, xp.asarray(-1.0, dtype=log_ratio.dtype), log_ratio)
    series = xp.expm1(terms * safe_log) / xp.expm1(safe_log)
    return xp.where(at_one, terms, series)


def coefficient_matrix(eigenvalues: Any, *, method: str, num_iters: int, xp: Any) -> Any:
    """The matrix ``A`` of the module docstring, shape ``(..., n, n)``, zero diagonal.

    ``eigenvalues`` must be sorted descending, as :func:`svdpi.eig` returns them.
    """
    dtype = eigenvalues.dtype
    n = eigenvalues.shape[-1]
    index = xp.arange(n, device=device(eigenvalues))
    upper = index[:, None] < index[None, :]  # j < m: λ_j is the larger one
    diagonal = index[:, None] == index[None, :]
    zero = xp.asarray(0.0, dtype=dtype)

    if method == "analytic":
        difference = eigenvalues[..., :, None] - eigenvalues[..., None, :]
        one = xp.asarray(1.0, dtype=dtype)
        return xp.where(diagonal, zero, one / xp.where(diagonal, one, difference))

    lam = clamp_eigenvalues(eigenvalues, xp)
    lam_j = lam[..., :, None]
    lam_m = lam[..., None, :]
    big = xp.maximum(lam_j, lam_m)
    # log(small / big) through log1p of a difference: exact for close eigenvalues.
    log_ratio = xp.log1p((xp.minimum(lam_j, lam_m) - big) / big)
    if method == "pi":
        # T + 1 terms above the diagonal, T below (see the module docstring).
        terms = xp.where(
            upper,
            xp.asarray(float(num_iters + 1), dtype=dtype),
            xp.asarray(float(num_iters), dtype=dtype),
        )
    else:  # "taylor": powers 0..K on both sides
        terms = xp.asarray(float(num_iters + 1), dtype=dtype)
    series = geometric_sum(log_ratio, terms, xp) / big
    return xp.where(diagonal, zero, xp.where(upper, series, -series))
