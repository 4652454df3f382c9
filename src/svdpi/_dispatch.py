"""The contract between the core and the fast paths adapters register for their library.

The core is written once against the array API standard. An adapter may
provide faster implementations of a few internal steps for its own array
library (a fused CUDA kernel, a better eigensolver). The core knows the
steps, not the adapters:

* :data:`STEPS` names the steps, each with a :class:`typing.Protocol` that
  states its signature; asking for or registering any other name raises.
* An adapter calls :func:`register` with the name of its array library (the
  top-level module, ``"torch"``, ``"cupy"``) when it is imported.
* A step may decline a call by returning :data:`DECLINED` (never ``None``),
  and the core then runs its generic code.
* The core asks with :func:`native`, keyed on the library of the arrays it
  already holds. If no provider is registered for that library yet, the
  core loads the ``svdpi.native`` entry point of that name, once per
  process: installing an adapter declares which module registers it
  (``cupy = "svdpi.cupy"`` in svdpi's own metadata), so a CuPy user gets the
  fast path without ever importing ``svdpi.cupy``, while ``import svdpi``
  imports no array library. An adapter shipped by another package adds its
  own entry point; nothing here names one.

:func:`native` reads only Python dicts once the provider is loaded, so it
can be traced (``torch.compile(fullgraph=True)``): loading happens at the
adapter's import, or at the first eager call for that library, never in the
middle of a traced call whose adapter was imported. (A function that calls
the core on torch tensors and is compiled with ``fullgraph=True`` before
any eager call, in a process that never imported ``svdpi.torch``, stops at
the entry-point lookup, which dynamo does not trace: import ``svdpi.torch``
first. Importing adapters from ``import svdpi`` instead would make every
``import svdpi`` pay for them.)

Every step must give the generic code's result to round-off.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeAlias

from ._typing import Array

ENTRY_POINT_GROUP: Final = "svdpi.native"


class Declined(enum.Enum):
    """The type of :data:`DECLINED`."""

    DECLINED = "declined"


#: What a step returns to let the core's generic code handle this call.
DECLINED: Final = Declined.DECLINED
Decline: TypeAlias = Literal[Declined.DECLINED]


class AllFinite(Protocol):
    """``all_finite(a)``: whether every entry of the (non-empty) array ``a`` is finite."""

    def __call__(self, a: Array, /) -> bool | Decline: ...


class Eigh(Protocol):
    """``eigh(a)``: like ``xp.linalg.eigh`` on symmetric ``a`` (ascending eigenvalues)."""

    def __call__(self, a: Array, /) -> tuple[Array, Array] | Decline: ...


class CoefficientProduct(Protocol):
    """``Aᵀ ∘ b`` for the coefficient matrix of :mod:`svdpi._coefficients`.

    Symmetrised as ``(P + Pᵀ) / 2`` when ``symmetrize`` is true, computed as
    :func:`svdpi._coefficients.coefficient_product` does (see there for
    the form that stays exact for equal eigenvalues and any ``num_iters``).
    The arguments have been validated by the core.
    """

    def __call__(
        self, eigenvalues: Array, b: Array, /, *, method: str, num_iters: int, symmetrize: bool
    ) -> Array | Decline: ...


#: The steps an adapter may provide, with their protocols.
STEPS: Final[Mapping[str, type]] = MappingProxyType(
    {
        "all_finite": AllFinite,
        "eigh": Eigh,
        "coefficient_product": CoefficientProduct,
    }
)

# library name -> {step name -> implementation}. Replaced, never mutated in
# place, so a reader (perhaps a tracer) always sees a complete mapping.
_providers: dict[str, Mapping[str, Callable[..., Any]]] = {}
# Libraries whose entry point has been looked up (found or not).
_looked_up: set[str] = set()

_enabled: ContextVar[bool] = ContextVar("svdpi_native_paths", default=True)


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"unknown native step {step!r}; the steps are {', '.join(STEPS)}")


def register(library: str, /, **steps: Callable[..., Any]) -> None:
    """Register fast paths for the arrays of ``library`` (called by adapters on import).

    Parameters
    ----------
    library : str
        The array library's top-level module name, as :func:`library_name`
        derives it from a namespace (``"torch"`` for ``torch`` and
        ``array_api_compat.torch`` alike).
    **steps : callable
        Implementations keyed by step name (see :data:`STEPS`); a later
        registration replaces the steps it names.

    Raises
    ------
    ValueError
        For a step name not in :data:`STEPS` (a typo would otherwise fall back
        to the generic code unnoticed).
    TypeError
        For an implementation that is not callable.
    """
    for step, implementation in steps.items():
        _check_step(step)
        if not callable(implementation):
            raise TypeError(f"the {step!r} step must be callable, got {implementation!r}")
    _providers[library] = MappingProxyType({**_providers.get(library, {}), **steps})


def library_name(xp: Any) -> str:
    """The top-level module name of namespace ``xp``'s library (array-api-compat's wrapper too)."""
    # A string test rather than array_api_compat.is_*_namespace, whose
    # lru_cache-wrapped helpers dynamo warns about when it traces svdpi.
    name = getattr(xp, "__name__", "")
    if name.startswith("array_api_compat."):
        name = name[len("array_api_compat.") :]
    return name.split(".")[0]


def _load_entry_point(library: str) -> Mapping[str, Callable[..., Any]] | None:
    """Import the module that the ``svdpi.native`` entry point ``library`` names.

    Importing it registers the provider. A failing import (a broken
    installation of the library) propagates: a fast path must not vanish
    silently.
    """
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP, name=library):
        entry_point.load()
    _looked_up.add(library)
    return _providers.get(library)


def native(xp: Any, step: str) -> Callable[..., Any] | None:
    """The registered implementation of ``step`` for namespace ``xp``'s library, or ``None``.

    Raises ``ValueError`` for a step name not in :data:`STEPS`.
    """
    _check_step(step)
    if not _enabled.get():
        return None
    library = library_name(xp)
    steps = _providers.get(library)
    if steps is None and library not in _looked_up:
        steps = _load_entry_point(library)
    return None if steps is None else steps.get(step)


def call_native(xp: Any, step: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``step``'s registered implementation for ``xp`` on the arguments, if there is one.

    Returns :data:`DECLINED` both when no implementation is registered and
    when the one registered declines: either way the caller runs its generic
    code.
    """
    implementation = native(xp, step)
    return DECLINED if implementation is None else implementation(*args, **kwargs)


def native_paths_enabled() -> bool:
    """Whether the native fast paths are on here (see :func:`native_paths`).

    For an adapter's own fast paths outside this registry, so that
    ``native_paths(False)`` turns them off too.
    """
    return _enabled.get()


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
