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
  ``check_real`` (a finite real option within bounds), ``check_function`` (a
  ``SpectralFunction``).

Native fast paths (:mod:`svdpi._dispatch`'s contract)
------------------------------------------------------
- ``register`` ``(library, **steps)``: called by an adapter on import
  with the steps of ``STEPS`` it implements for its arrays;
- ``DECLINED`` (a step's "run the generic code" answer, never
  ``None``) and its type ``Decline``;
- ``native_paths``: a context manager that turns the fast paths off,
  for benchmarks and tests that compare them with the generic code, and
  ``native_paths_enabled`` (whether they are on), which an adapter's own
  fast paths outside this registry consult too;
- the generic code a native step must reproduce to round-off:
  ``coefficient_product`` (the ``"coefficient_product"`` step) and the
  floor it clamps eigenvalues to, ``eigenvalue_floor``.

Finiteness
----------
- ``all_finite`` ``(a, xp)``: the check ``svdpi.eig(check_finite=True)``
  makes (one host read; lazy arrays are not read). Complex input is
  checked by its real and imaginary parts, so a registered
  ``"all_finite"`` step only ever receives real arrays.

Eigenpairs and their derivatives
--------------------------------
- ``vjp_from_projected``: :func:`svdpi.eig_vjp` given ``Vᴴ ḡV`` instead
  of ``ḡV`` (a framework's backward pass often has the former), with the
  arguments already checked; keywords ``canonical=`` (differentiate the
  canonical eigenvectors) and ``phase=`` (for complex eigenvectors, what to
  do when the cotangent depends on their phase: ``"raise"``, one host
  read, the default; ``"nan"`` where values cannot be read, e.g. while
  compiling; ``"off"``);
- ``project_symmetric``: ``Vᴴ herm(X) V`` (``Vᵀ sym(X) V`` for real input);
- ``canonical_columns`` ``(v, xp)``: ``(v · d, d)``, the canonical phase
  (sign, for real input) of each column that ``svdpi.eig(canonical=True)``
  applies, for an adapter's own forward pass (``v`` with at least one row).

Complex Hermitian input takes the same functions: eigenvectors, cotangents
and tangents complex, eigenvalues real (``check_eigenpairs`` and
``check_like`` accept that; ``check_floating`` takes ``allow_complex=True``
for an adapter's own argument of either kind). The ``coefficient_product``
and ``eigh`` steps receive real arrays only: the core splits complex
products into real and imaginary parts and solves complex Hermitian
eigenproblems with the library's own ``eigh``.

The singular value decomposition
--------------------------------
- ``svd_vjp_checked`` and ``svd_jvp_checked``: :func:`svdpi.svd_vjp` and
  :func:`svdpi.svd_jvp` after their argument checks (an adapter's backward
  has checked them), with ``canonical=`` and, for the VJP, ``phase=`` (what
  to do when a complex loss depends on the singular vectors' phase);
- ``check_svd_dtype``, ``check_svd_matrix`` (shape ``(..., m, n)``),
  ``check_svd_method``, ``svd_factors_finite`` (the finiteness check of
  real or complex input), ``canonicalize`` (the canonical phase of the
  factors);
- functions of the singular values: ``check_singular_value_function``
  (a ``SpectralFunction`` with ``f(0) = 0``), ``singular_value_kernels`` and
  ``polar_kernels`` (the rectangular Daleckii–Krein kernels ``D⁻``, ``D⁺``
  and ``f(σ)/σ``), ``apply_singular_value_kernels`` (the map they define,
  its own transpose).

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
from ._complex import canonical_columns
from ._covariance import GroupedMoments, grouped_covariance, grouped_covariance_vjp
from ._dispatch import DECLINED, STEPS, Decline, native_paths, native_paths_enabled, register
from ._eig import all_finite
from ._eig import all_finite as svd_factors_finite
from ._gradient import project_symmetric, vjp_from_projected
from ._spectral_maps import check_function, check_second_order
from ._svd import canonicalize, check_svd_dtype
from ._svd import check_matrix as check_svd_matrix
from ._svd_gradient import check_svd_method
from ._svd_gradient import jvp as svd_jvp_checked
from ._svd_gradient import vjp as svd_vjp_checked
from ._svd_maps import _kernels as singular_value_kernels
from ._svd_maps import _polar_kernels as polar_kernels
from ._svd_maps import apply_kernels as apply_singular_value_kernels
from ._svd_maps import check_function as check_singular_value_function
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
    check_real,
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
    "apply_singular_value_kernels",
    "canonical_columns",
    "canonicalize",
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
    "check_real",
    "check_second_order",
    "check_singular_value_function",
    "check_square",
    "check_svd_dtype",
    "check_svd_matrix",
    "check_svd_method",
    "check_truncation",
    "coefficient_product",
    "eigenvalue_floor",
    "grouped_covariance",
    "grouped_covariance_vjp",
    "namespace_of",
    "native_paths",
    "native_paths_enabled",
    "polar_kernels",
    "project_symmetric",
    "register",
    "singular_value_kernels",
    "svd_factors_finite",
    "svd_jvp_checked",
    "svd_vjp_checked",
    "vjp_from_projected",
]
