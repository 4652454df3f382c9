"""Small helpers over array-api-compat."""

from __future__ import annotations

from typing import Any

import array_api_compat


def array_device(x: Any) -> Any:
    """The device of ``x``.

    Standard arrays carry ``.device``; ``array_api_compat.device`` also covers
    NumPy < 2, but its ``lru_cache``-wrapped type checks make ``torch.compile``
    (dynamo) warn when it traces through svdpi, so it is only the fallback.
    """
    try:
        return x.device
    except AttributeError:
        return array_api_compat.device(x)
