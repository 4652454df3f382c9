"""The SVD-PI gradient coefficient against the eigenvalue ratio, for a few ``T``.

For a pair ``λ_j >= λ_m`` with ratio ``r = λ_m / λ_j``, plots ``λ_j · |A_jm|``
from svdpi's own coefficient matrix (above the diagonal, ``S_T(r)``; the
entry below is ``S_{T−1}(r)``), the classical ``λ_j / (λ_j − λ_m) = 1 / (1 − r)``
and the Taylor variant with ``K = 9``. Run by the documentation build
(matplotlib's plot directive, which saves the figure; it runs scripts in
their own folder as ``__main__``, so this one writes no file itself).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from svdpi._coefficients import coefficient_matrix

ratio = np.linspace(0.0, 1.0, 801)
# One 2 × 2 problem per ratio: eigenvalues (1, r), descending.
eigenvalues = np.stack([np.ones_like(ratio), ratio], axis=-1)

fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
with np.errstate(divide="ignore"):
    classical = 1.0 / (1.0 - ratio)
for ax in (left, right):
    ax.plot(ratio, classical, color="black", lw=2, label="classical  1 / (1 − r)")
for num_iters, color in zip((1, 5, 19, 50), ("C0", "C1", "C2", "C3"), strict=True):
    a = coefficient_matrix(eigenvalues, method="pi", num_iters=num_iters, xp=np)
    left.plot(ratio, a[:, 0, 1], color=color, label=f"pi, T = {num_iters}")
    right.plot(ratio, -a[:, 1, 0], color=color, label=f"pi, T = {num_iters}")
taylor = coefficient_matrix(eigenvalues, method="taylor", num_iters=9, xp=np)
left.plot(ratio, taylor[:, 0, 1], color="C4", ls="--", label="taylor, K = 9")
right.plot(ratio, -taylor[:, 1, 0], color="C4", ls="--", label="taylor, K = 9")

left.set_title(r"above the diagonal: $\lambda_j A_{jm} = S_T(r)$")
right.set_title(r"below the diagonal: $\lambda_j |A_{mj}| = S_{T-1}(r)$")
for ax in (left, right):
    ax.set_yscale("log")
    ax.set_ylim(0.8, 200)
    ax.set_xlim(0, 1)
    ax.set_xlabel(r"eigenvalue ratio $r = \lambda_{\mathrm{small}} / \lambda_{\mathrm{large}}$")
    ax.grid(True, which="both", alpha=0.3)
left.set_ylabel(r"coefficient $\times\ \lambda_{\mathrm{large}}$")
right.legend(loc="upper left", fontsize="small")
