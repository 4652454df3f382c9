"""Checks of the layers' constructor options: a TypeError or ValueError that names the option.

``float(option)`` accepts ``"0.1"``, ``True`` and ``nan`` and fails on ``"a"``
with "could not convert string to float"; ``bool(option)`` accepts anything.
These checks accept what the option means (a real number, a truth value)
and say which option is wrong and why otherwise.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    allow_none: bool = False,
) -> float | None:
    """A finite real Python or NumPy scalar (not a bool), as a float, within the bounds.

    Examples
    --------
    >>> check_real(1, "momentum", minimum=0.0, maximum=1.0)
    1.0
    >>> check_real(True, "momentum")
    Traceback (most recent call last):
    ...
    TypeError: momentum must be a real number (a Python or NumPy scalar), got bool True
    >>> check_real(float("nan"), "eps", minimum=0.0)
    Traceback (most recent call last):
    ...
    ValueError: eps must be a finite number >= 0, got nan
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        none = " or None" if allow_none else ""
        raise TypeError(
            f"{name} must be a real number (a Python or NumPy scalar){none}, "
            f"got {type(value).__name__} {value!r}"
        )
    result = float(value)
    lower = "" if minimum is None else f" {'>' if strict_minimum else '>='} {minimum:g}"
    upper = "" if maximum is None else f" <= {maximum:g}"
    bounds = f"{lower}{' and' if lower and upper else ''}{upper}"
    too_small = minimum is not None and (result <= minimum if strict_minimum else result < minimum)
    too_large = maximum is not None and result > maximum
    if not math.isfinite(result) or too_small or too_large:
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return result


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
