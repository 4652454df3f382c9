"""Checks of the layers' truth-value options: a TypeError that names the option.

``bool(option)`` accepts anything; this check accepts what the option means
(a truth value) and says which option is wrong otherwise. Real-valued
options go through the core's ``svdpi.adapter.check_real``, so the layers,
``svdpi.Truncation`` and the core refuse an option in the same words.
"""

from __future__ import annotations

from typing import Any


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (a Python or NumPy bool); numbers and strings raise ``TypeError``.

    Examples
    --------
    >>> check_bool(False, "affine")
    False
    >>> check_bool(0, "affine")
    Traceback (most recent call last):
    ...
    TypeError: affine must be True or False, got int 0
    """
    if isinstance(value, bool):
        return value
    # numpy.bool_ (and a 0-d NumPy bool array), without importing NumPy.
    if getattr(value, "shape", None) == () and str(getattr(value, "dtype", "")) == "bool":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
