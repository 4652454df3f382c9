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

from ._compat import array_device


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
    least = xp.asarray(
        finfo.smallest_normal / finfo.eps,
        dtype=eigenvalues.dtype,
        device=array_device(eigenvalues),
    )
    return xp.maximum(scale * (n * finfo.eps), least)


def clamp_eigenvalues(eigenvalues: Any, xp: Any) -> Any:
    """Eigenvalues raised to :func:`eigenvalue_floor` (zero, negative or round-off ones)."""
    return xp.maximum(eigenvalues, eigenvalue_floor(eigenvalues, xp))


def geometric_sum(ratio_minus_one: Any, terms: Any, xp: Any) -> Any:
    """``Σ_{i=0..terms-1} r^i`` for ``r = 1 + ratio_minus_one`` in ``(0, 1]``, without a loop.

    ``(r^terms − 1) / (r − 1)`` with ``r^terms − 1 = expm1(terms · log1p(r − 1))``
    is accurate right up to ``r = 1``: no ``1 − r`` is ever formed by
    cancellation, since ``r − 1`` is the input itself. At ``r = 1`` (equal
    eigenvalues) it would be ``0/0``: ``r − 1`` and ``log r`` are first capped
    at ``−eps²`` instead, where ``log1p`` returns its argument, so the quotient
    is ``terms · (1 − O(terms · eps²))``, i.e. exactly ``terms`` in floating
    point. Capping *before* the division (rather than a ``where`` after it)
    keeps NaN out of the values and out of any gradient taken through them.
    """
    eps = xp.finfo(ratio_minus_one.dtype).eps
    cap = xp.asarray(
        -(eps * eps), dtype=ratio_minus_one.dtype, device=array_device(ratio_minus_one)
    )
    # Not clip: see eigenvalue_floor. log1p before the cap, so that it sees the
    # -0.0 of the diagonal (see svdpi.torch._native for why that matters).
    log_ratio = xp.minimum(xp.log1p(ratio_minus_one), cap)
    return xp.expm1(terms * log_ratio) / xp.minimum(ratio_minus_one, cap)


def coefficient_matrix(eigenvalues: Any, *, method: str, num_iters: int, xp: Any) -> Any:
    """The matrix ``A`` of the module docstring, shape ``(..., n, n)``, zero diagonal.

    ``eigenvalues`` must be sorted descending, as :func:`svdpi.eig` returns them.
    """
    dtype = eigenvalues.dtype
    n = eigenvalues.shape[-1]
    index = xp.arange(n, device=array_device(eigenvalues))
    upper = xp.astype(index[:, None] < index[None, :], dtype)  # j < m: λ_j is the larger
    sign = upper - xp.matrix_transpose(upper)  # +1 above, -1 below, 0 on the diagonal

    if method == "analytic":
        difference = eigenvalues[..., :, None] - eigenvalues[..., None, :]
        off_diagonal = xp.abs(sign)
        # Adding 1 on the diagonal keeps 0/0 out of it; the numerator zeroes it.
        return off_diagonal / (difference + (1.0 - off_diagonal))

    lam = clamp_eigenvalues(eigenvalues, xp)
    lam_j = lam[..., :, None]
    lam_m = lam[..., None, :]
    big = xp.maximum(lam_j, lam_m)
    # small / big − 1 as a difference: exact for close eigenvalues.
    ratio_minus_one = -xp.abs(lam_j - lam_m) / big
    # Number of terms: powers 0..T above the diagonal and 0..T-1 below it for
    # "pi" (see the module docstring), 0..K on both sides for "taylor".
    terms = upper + float(num_iters) if method == "pi" else float(num_iters + 1)
    return sign * geometric_sum(ratio_minus_one, terms, xp) / big
