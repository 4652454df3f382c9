"""The core's fast paths for JAX arrays (registered with :func:`svdpi.adapter.register`).

``eigh``: ``jnp.linalg.eigh`` without its own symmetrisation. JAX forms
``(a + aᵀ) / 2`` by default, which overflows for entries above half the
dtype's maximum and makes every eigenpair NaN (``diag(3e38, 1)`` in
float32), while LAPACK handles the matrix. The core hands the step a matrix
that is already exactly symmetric (it forms ``−(a + aᵀ)/2`` as
``(a − aᵀ)/2 − a``, which cannot overflow), and for such a matrix JAX's
symmetrisation is the identity wherever it does not overflow: the results
are bitwise those of the generic code, and finite up to the dtype's maximum.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def eigh(a: Any) -> tuple[Any, Any]:
    """Ascending eigenpairs of the exactly symmetric ``a``, as ``xp.linalg.eigh`` returns them."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(a, symmetrize_input=False)
    return eigenvalues, eigenvectors
