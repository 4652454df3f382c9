"""What an adapter may use from the core: the one contract between svdpi and its backends.

An *adapter* (``svdpi.torch``, ``svdpi.jax``, ``svdpi.cupy``, or a package of
someone else's) gives a framework the core's maths: autograd rules around
the core's derivatives, layers, and faster implementations of a few
internal steps. It imports from ``svdpi`` (the public API) and from this
module, nothing else: the private modules ``svdpi._*`` may change in any
release; the names here change only with a note in the changelog. The
test suite checks that svdpi's own adapters keep to this.

The floors, from the bottom up: the **core** (array API only, no framework
imported), the **adapters** (framework glue over the core, plus native fast
paths registered through ``register``), the **layers** (modules built
on an adapter). See the architecture page of the documentation.

Argument checks
---------------
The checks the core's public functions make, for an adapter's entry points
to give the same errors (they read metadata only, never array values):

- ``check_floating``, ``check_square``, ``check_eigenpairs``,
  ``check_like``, ``check_mask``, ``check_companion`` (same
  library and device as a reference array), ``namespace_of``;
- ``check_method`` with ``METHODS`` (the eigenpairs' methods) or
  ``MATRIX_FUNCTION_METHODS`` (spectral maps, ``"exact"`` included),
  ``check_second_order`` (only ``"exact"`` has a second derivative),
  ``check_num_iters``, ``check_integer``, ``check_exponent``,
  ``check_real_option``, ``check_function`` (a
  ``SpectralFunction``).

Native fast paths (:mod:`svdpi._dispatch`'s contract)
------------------------------------------------------
- ``register`` ``(library, **steps)``: called by an adapter on import
  with the steps of ``STEPS`` it implements for its arrays;
- ``DECLINED`` (a step's "run the generic code" answer, never
  ``None``) and its type ``Decline``;
- ``native_paths``: a context manager that turns the fast paths off,
  for benchmarks and tests that compare them with the generic code;
- the generic code a native step must reproduce to round-off:
  ``coefficient_product`` (the ``"coefficient_product"`` step) and the
  floor it clamps eigenvalues to, ``eigenvalue_floor``.

Finiteness
----------
- ``all_finite`` ``(a, xp)``: the check ``svdpi.eig(check_finite=True)``
  makes (one host read; lazy arrays are not read).

Eigenpairs and their derivatives
--------------------------------
- ``vjp_from_projected``: :func:`svdpi.eig_vjp` given ``Vᵀ ḡV`` instead
  of ``ḡV`` (a framework's backward pass often has the former), with the
  arguments already checked;
- ``project_symmetric``: ``Vᵀ sym(X) V``.

Layers' statistics
------------------
- :func:`grouped_covariance` and :func:`grouped_covariance_vjp`, with the
  result type :class:`GroupedMoments`: mean, centred data and covariance
  of groups of channels, in any layout (the generic code of a whitening
  layer's statistics, and the reference of a fused kernel);
- :class:`svdpi.Truncation`, re-exported here: the truncation options,
  checked once, and their mask; ``check_truncation`` checks the options
  given one by one and returns their ``Truncation`` (kept for the layers
  that take them as separate arguments).

Stability: everything listed is stable within a minor release (0.3.x).
``check_*`` messages may be reworded; their exception types and the
argument they name will not change.
"""

from ._coefficients import coefficient_product, eigenvalue_floor
from ._covariance import GroupedMoments, grouped_covariance, grouped_covariance_vjp
from ._dispatch import DECLINED, STEPS, Decline, native_paths, register
from ._eig import all_finite
from ._gradient import project_symmetric, vjp_from_projected
from ._spectral_maps import check_function, check_second_order
from ._truncation import Truncation
from ._validation import (
    MATRIX_FUNCTION_METHODS,
    METHODS,
    check_companion,
    check_eigenpairs,
    check_exponent,
    check_floating,
    check_integer,
    check_like,
    check_mask,
    check_method,
    check_num_iters,
    check_real_option,
    check_square,
    namespace_of,
)
from ._whitening import check_truncation

__all__ = [
    "DECLINED",
    "MATRIX_FUNCTION_METHODS",
    "METHODS",
    "STEPS",
    "Decline",
    "GroupedMoments",
    "Truncation",
    "all_finite",
    "check_companion",
    "check_eigenpairs",
    "check_exponent",
    "check_floating",
    "check_function",
    "check_integer",
    "check_like",
    "check_mask",
    "check_method",
    "check_num_iters",
    "check_real_option",
    "check_second_order",
    "check_square",
    "check_truncation",
    "coefficient_product",
    "eigenvalue_floor",
    "grouped_covariance",
    "grouped_covariance_vjp",
    "namespace_of",
    "native_paths",
    "project_symmetric",
    "register",
    "vjp_from_projected",
]
