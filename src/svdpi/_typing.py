"""Type aliases for svdpi's signatures.

The array API standard has no static array type yet (``array-api-typing`` is
not released), so an array is typed as :data:`Array`, an alias of
:data:`typing.Any` that says which arguments are arrays.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: An array of any array API library (NumPy, CuPy, PyTorch, JAX, ...).
Array: TypeAlias = Any
#: An array API namespace (``array_api_compat.array_namespace(x)``).
Namespace: TypeAlias = Any
