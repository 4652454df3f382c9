"""Native fast paths for particular array libraries, found without importing them.

The core is written once against the array API standard. An adapter may
provide faster implementations of a few internal steps for its own library
(a fused CUDA kernel, a better eigensolver). The core asks for them by name
at call time with :func:`native`, keyed on the namespace of arrays it already
holds, so ``import svdpi`` never imports CuPy: the provider module is
imported only once an array of that library has reached svdpi.

The steps, with the contract every provider must meet (same results as the
generic code, to round-off):

``all_finite(a) -> bool``
    Whether every entry of the (non-empty) array ``a`` is finite.
``eigh(a) -> (eigenvalues, eigenvectors)``
    Like ``xp.linalg.eigh`` on symmetric ``a`` (ascending eigenvalues).
``coefficient_product(eigenvalues, b, *, method, num_iters, symmetrize)``
    ``Aᵀ ∘ b`` for the coefficient matrix ``A`` of
    :func:`svdpi._coefficients.coefficient_matrix`, symmetrised as
    ``(P + Pᵀ) / 2`` when ``symmetrize`` is true; or ``None`` to decline a
    call (the PyTorch provider declines while tracing, under ``torch.func``
    transforms and when autograd records), and the generic code runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


def _is_cupy_namespace(xp: Any) -> bool:
    # array_api_compat.is_cupy_namespace does the same name test, through an
    # lru_cache-wrapped helper that torch.compile (dynamo) warns about when it
    # traces svdpi's VJP for a torch tensor.
    return getattr(xp, "__name__", None) in ("cupy", "array_api_compat.cupy")


def _is_torch_namespace(xp: Any) -> bool:
    # The same name test, for the same reason.
    return getattr(xp, "__name__", None) in ("torch", "array_api_compat.torch")


# (is this namespace the provider's?, module defining the steps). The module is
# imported lazily: only a namespace that matched can have its library loaded.
PROVIDERS: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (_is_cupy_namespace, "svdpi.cupy._native"),
    (_is_torch_namespace, "svdpi.torch._native"),
)

_enabled: ContextVar[bool] = ContextVar("svdpi_native_paths", default=True)


def native(xp: Any, name: str) -> Callable[..., Any] | None:
    """The provider's implementation of step ``name`` for namespace ``xp``, or ``None``."""
    if not _enabled.get():
        return None
    for matches, module_name in PROVIDERS:
        if matches(xp):
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            return getattr(module, name, None)
    return None


@contextmanager
def native_paths(enabled: bool) -> Iterator[None]:
    """Turn the native fast paths off (or back on) inside a ``with`` block.

    For benchmarks and tests that compare a fast path with the generic code.
    """
    token = _enabled.set(bool(enabled))
    try:
        yield
    finally:
        _enabled.reset(token)
