"""Argument checks shared by the public functions.

Every check here looks only at metadata (shape, dtype, Python values), never
at array contents, so none of them synchronises with a GPU.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from array_api_compat import array_namespace

METHODS = ("pi", "taylor", "analytic")
#: Methods of the matrix-function VJPs/JVPs (``matrix_power_vjp``,
#: ``zca_whitening_matrix_vjp``, ...): the eigenvector chain rule with the
#: coefficients of :data:`METHODS`, or the Daleckii–Krein formula ("exact").
MATRIX_FUNCTION_METHODS = (*METHODS, "exact")


def check_floating(x: Any, name: str, xp: Any, *, allow_complex: bool = False) -> None:
    """Require a float32 or float64 array (or complex64, complex128 with ``allow_complex``).

    Complex input is accepted where it has a meaning: a Hermitian matrix for
    :func:`svdpi.eig`, its eigenvectors, their cotangents and tangents.
    Everything that is real by nature (eigenvalues, a covariance's data,
    truncation thresholds) refuses it, naming the argument.
    """
    dtype = x.dtype
    if dtype in (xp.float32, xp.float64):
        return
    if allow_complex and dtype in (xp.complex64, xp.complex128):
        return
    if xp.isdtype(dtype, "complex floating") and not allow_complex:
        raise TypeError(
            f"{name} has complex dtype {dtype}; {name} must be real (float32 or float64)"
        )
    if xp.isdtype(dtype, ("real floating", "complex floating")):
        # float16 / bfloat16 / complex32: eigensolvers and the 1/λ coefficients
        # need more range and precision than half precision has.
        raise TypeError(
            f"{name} has dtype {dtype}; half precision is not supported, upcast to "
            "float32 (or float64) first, e.g. a.astype(float32) / a.float()"
        )
    if allow_complex:
        raise TypeError(
            f"{name} must have a floating dtype (float32, float64, complex64 or "
            f"complex128), got {dtype}"
        )
    raise TypeError(f"{name} must have a real floating dtype (float32 or float64), got {dtype}")


def check_square(x: Any, name: str, *, allow_empty: bool = False) -> int:
    """Require shape (..., n, n) with n >= 1 (n >= 0 if ``allow_empty``); return n.

    ``eig`` and its derivatives accept ``n = 0`` and return empty results, as
    ``torch.linalg.eigh`` and ``numpy.linalg.eigh`` do.
    """
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"{name} must have shape (..., n, n), got {len(shape)}-d shape {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be square in its last two dimensions, got shape {shape}")
    if shape[-1] == 0 and not allow_empty:
        raise ValueError(f"{name} must have n >= 1, got shape {shape}")
    return shape[-1]


def check_eigenpairs(
    eigenvalues: Any, eigenvectors: Any, xp: Any, *, allow_empty: bool = False
) -> int:
    """Check an (eigenvalues, eigenvectors) pair as returned by :func:`svdpi.eig`.

    The eigenvalues are real; the eigenvectors real, or complex (of a
    Hermitian matrix) of the same precision.
    """
    check_companion(eigenvalues, "eigenvalues", eigenvectors, "eigenvectors")
    check_floating(eigenvalues, "eigenvalues", xp)
    check_floating(eigenvectors, "eigenvectors", xp, allow_complex=True)
    n = check_square(eigenvectors, "eigenvectors", allow_empty=allow_empty)
    if tuple(eigenvalues.shape) != tuple(eigenvectors.shape[:-1]):
        raise ValueError(
            "eigenvalues must have shape eigenvectors.shape[:-1] = "
            f"{tuple(eigenvectors.shape[:-1])}, got {tuple(eigenvalues.shape)}"
        )
    if xp.isdtype(eigenvectors.dtype, "complex floating"):
        expected = xp.float32 if eigenvectors.dtype == xp.complex64 else xp.float64
        if eigenvalues.dtype != expected:
            name = "float32" if eigenvectors.dtype == xp.complex64 else "float64"
            raise TypeError(
                f"eigenvalues must have the real dtype {name} of the eigenvectors "
                f"({eigenvectors.dtype}), got {eigenvalues.dtype}"
            )
    elif eigenvalues.dtype != eigenvectors.dtype:
        raise TypeError(
            f"eigenvalues ({eigenvalues.dtype}) and eigenvectors ({eigenvectors.dtype}) "
            "must have the same dtype"
        )
    return n


def check_like(
    x: Any, name: str, shape: tuple[int, ...], dtype: Any, xp: Any, like: Any = None
) -> None:
    """Require a cotangent or tangent of exactly ``shape`` and ``dtype``.

    With ``like`` (the eigenvectors), also of its library and on its device
    (:func:`check_companion`).
    """
    if like is not None:
        check_companion(x, name, like)
    # A complex cotangent of real arrays (or the reverse) is refused by the dtype
    # comparison below, which says what is expected; anything else by its kind.
    complex_ = dtype in (xp.complex64, xp.complex128) or x.dtype in (xp.complex64, xp.complex128)
    check_floating(x, name, xp, allow_complex=complex_)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like the eigenpairs, got {x.dtype}")


def check_method(method: Any, methods: tuple[str, ...] = METHODS) -> str:
    """Require one of ``methods`` (:data:`METHODS` for the eigenpairs themselves)."""
    if isinstance(method, str) and method in methods:
        return method
    if isinstance(method, str) and method == "exact":
        raise ValueError(
            "method='exact' (the Daleckii–Krein gradient) is defined for matrix functions "
            "(matrix_power_vjp, matrix_log_vjp, zca_whitening_matrix_vjp, pca_projector_vjp); "
            "the exact gradient of the eigenpairs themselves is method='analytic'"
        )
    raise ValueError(f"method must be one of {', '.join(map(repr, methods))}; got {method!r}")


def check_exponent(p: Any, name: str = "p") -> float:
    """Require a finite real Python or NumPy scalar (no bool, no array); return it as a float.

    An integer too large for a float (``10**400``) is refused like an
    infinite one, by a ``ValueError`` naming the argument.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"{name} must be a real number (a Python or NumPy scalar), "
            f"got {type(p).__name__} {p!r}"
        )
    try:
        value = float(p)
    except OverflowError:
        raise ValueError(
            f"{name} must be finite, got an integer too large for a float ({_short(p)})"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


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

    For options compared with array values (a threshold, a fraction, a
    momentum): NaN would compare false with everything and silently change
    the result, and a string or an array would fail later with a message
    that names nothing. The messages are those of the layers' options, so
    that every entry point refuses an option in the same words.

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
            f"got {type(value).__name__} {_short(value)}"
        )
    try:
        result = float(value)
    except OverflowError:  # an integer beyond the float range
        # (math.copysign would convert the integer to a float, and overflow again)
        result = math.inf if value > 0 else -math.inf
    lower = "" if minimum is None else f" {'>' if strict_minimum else '>='} {minimum:g}"
    upper = "" if maximum is None else f" <= {maximum:g}"
    bounds = f"{lower}{' and' if lower and upper else ''}{upper}"
    too_small = minimum is not None and (result <= minimum if strict_minimum else result < minimum)
    too_large = maximum is not None and result > maximum
    if not math.isfinite(result) or too_small or too_large:
        raise ValueError(f"{name} must be a finite number{bounds}, got {_short(value)}")
    return result


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a 400-digit integer, a large array)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-10:]}"


def library_of(x: Any) -> str:
    """The name of the library an array belongs to (its type's top-level module).

    ``jaxlib`` counts as ``jax`` (JAX's concrete arrays live in jaxlib, its
    tracers in jax). Only metadata is read.
    """
    name = type(x).__module__.split(".")[0]
    return "jax" if name == "jaxlib" else name


def namespace_of(like: Any, /, like_name: str = "eigenvectors", **named: Any) -> Any:
    """The array namespace of ``like`` and the ``named`` arrays (``None`` skipped).

    Where they do not share one, the error names the argument at fault
    (:func:`check_companion`) instead of array-api-compat's "multiple
    namespaces".
    """
    if not hasattr(like, "shape") or not hasattr(like, "dtype"):
        raise TypeError(f"{like_name} must be an array, got {type(like).__name__}")
    # Non-arrays (a list for a mask) are left to the argument's own check,
    # which names what it expects.
    named = {k: x for k, x in named.items() if hasattr(x, "shape") and hasattr(x, "dtype")}
    try:
        return array_namespace(like, *named.values())
    except TypeError:
        for name, x in named.items():
            check_companion(x, name, like, "the eigenpairs")
        raise


def check_companion(x: Any, name: str, like: Any, like_name: str = "the eigenpairs") -> None:
    """Require ``x`` to be an array of ``like``'s library on ``like``'s device.

    A cotangent from another library (a NumPy array with PyTorch eigenpairs)
    would otherwise fail inside an operation, or be converted silently; one
    on another device (PyTorch's ``meta``, another GPU) would give a result
    on the wrong device or of uninitialised memory. Arrays whose device
    cannot be read (JAX tracers) are not compared.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    library, expected = library_of(x), library_of(like)
    if library != expected:
        raise TypeError(
            f"{name} is an array of {library} ({type(x).__name__}), {like_name} of "
            f"{expected} ({type(like).__name__}); pass arrays of one library"
        )
    if expected == "jax":  # no device to compare under tracing
        return
    try:
        device, expected_device = x.device, like.device
    except AttributeError:
        return
    if device != expected_device:
        raise ValueError(
            f"{name} is on device {device}, {like_name} on {expected_device}; "
            "move it to the same device"
        )


def check_integer(value: Any, name: str, *, minimum: int) -> int:
    """Require a Python or NumPy integer (not a bool) of at least ``minimum``; return it."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


#: The largest ``num_iters`` (an int64, and a float without overflow). The
#: series it truncates has reached its limit long before: ``r^T`` underflows
#: for every ratio ``r < 1`` below 1 − 2^-50 once ``T`` passes 2^60.
MAX_NUM_ITERS = 2**63 - 1


def check_num_iters(num_iters: Any) -> int:
    """Require an integer in ``[1, MAX_NUM_ITERS]``."""
    num_iters = check_integer(num_iters, "num_iters", minimum=1)
    if num_iters > MAX_NUM_ITERS:
        raise ValueError(f"num_iters must be at most 2**63 - 1, got {_short(num_iters)}")
    return num_iters


def check_mask(mask: Any, shape: tuple[int, ...], xp: Any, like: Any = None) -> None:
    """Require a boolean array of ``shape`` (of ``like``'s library and device if given)."""
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        raise TypeError(f"mask must be a boolean array, got {type(mask).__name__}")
    if like is not None:
        check_companion(mask, "mask", like)
    if not xp.isdtype(mask.dtype, "bool"):
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"mask must have the shape of eigenvalues {tuple(shape)}, got {tuple(mask.shape)}"
        )
