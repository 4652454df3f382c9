"""CuPy implementations of the core's native steps (see :mod:`svdpi._dispatch`).

Imported by the core only once CuPy arrays reach svdpi. Nothing here reads
an array value on the host: every function only enqueues work on the current
stream, so a VJP stays asynchronous.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import array_api_compat.cupy as xp_cupy
import numpy

import cupy
from svdpi.adapter import check_method, check_num_iters, eigenvalue_floor

from ._kernel_source import kernel_spec
from ._solver_policy import SOLVERS, choose_eigh_solver


@functools.cache
def _kernel(method: str, mode: str) -> cupy.ElementwiseKernel:
    # One compiled kernel per (method, mode); CuPy caches the binary per dtype.
    spec = kernel_spec(method, mode)
    return cupy.ElementwiseKernel(
        spec.in_params, spec.out_params, spec.operation, spec.name, preamble=spec.preamble
    )


def _launch(mode: str, eigenvalues: Any, b: Any, method: str, num_iters: int) -> Any:
    w = cupy.ascontiguousarray(eigenvalues)
    n = w.shape[-1]
    out_shape = (*w.shape, n)
    out = cupy.empty(out_shape, dtype=w.dtype)
    if out.size == 0:
        # n = 0 or an empty batch: nothing to compute, and for n = 0 no
        # maximum over the eigenvalues to take for the floor.
        return out
    floor = cupy.ascontiguousarray(eigenvalue_floor(w, xp_cupy))  # (..., 1), on the device
    args = [w.reshape(-1), floor.reshape(-1)]
    if b is not None:
        args.append(cupy.ascontiguousarray(b).reshape(-1))
    # Numbers as scalars of the array dtype, so T is decided by the arrays alone.
    scalar = w.dtype.type
    eps = scalar(numpy.finfo(w.dtype).eps)
    _kernel(method, mode)(*args, n, eps, scalar(num_iters), out.reshape(-1))
    return out


def coefficient_product(
    eigenvalues: Any, b: Any, *, method: str, num_iters: int, symmetrize: bool
) -> Any:
    """``Aᵀ ∘ b`` (symmetrised if asked) in one fused elementwise kernel, ``A`` never stored."""
    mode = "symmetric_product" if symmetrize else "product"
    return _launch(mode, eigenvalues, b, method, num_iters)


def coefficient_matrix(eigenvalues: Any, *, method: str = "pi", num_iters: int = 19) -> Any:
    """The coefficient matrix ``A`` of :func:`svdpi.eig_vjp`, computed by the fused kernel.

    Equal to the core's generic computation to round-off; exposed for tests
    and for users who want ``A`` itself.

    Parameters
    ----------
    eigenvalues : cupy.ndarray, shape (..., n)
        Descending eigenvalues, float32 or float64. ``n = 0`` and empty
        batches give an empty ``A``, as :func:`svdpi.eig_vjp` gives empty
        gradients for them.
    method : {"pi", "taylor", "analytic"}, default "pi"
        As in :func:`svdpi.eig_vjp`.
    num_iters : int, default 19
        As in :func:`svdpi.eig_vjp`.

    Returns
    -------
    cupy.ndarray, shape (..., n, n)
        ``A``, with the dtype and on the device of ``eigenvalues``.

    Examples
    --------
    A repeated eigenvalue: the entries for the pair ``(1, 1)`` are finite,
    ``(T + 1) / λ`` above the diagonal and ``-T / λ`` below (``T = 19``):

    >>> import cupy
    >>> import svdpi.cupy
    >>> a = svdpi.cupy.coefficient_matrix(cupy.asarray([3.0, 1.0, 1.0]))
    >>> cupy.asnumpy(a).round(4)
    array([[  0. ,   0.5,   0.5],
           [ -0.5,   0. ,  20. ],
           [ -0.5, -19. ,   0. ]])
    """
    check_method(method)
    num_iters = check_num_iters(num_iters)
    if not isinstance(eigenvalues, cupy.ndarray):
        raise TypeError(f"eigenvalues must be a cupy.ndarray, got {type(eigenvalues).__name__}")
    if eigenvalues.dtype not in (cupy.float32, cupy.float64):
        raise TypeError(f"eigenvalues must be float32 or float64, got {eigenvalues.dtype}")
    if eigenvalues.ndim < 1:
        raise ValueError(f"eigenvalues must have shape (..., n), got {eigenvalues.shape}")
    return _launch("coefficients", eigenvalues, None, method, num_iters)


def eigh(a: Any) -> tuple[Any, Any]:
    """``cupy.linalg.eigh`` through the solver :func:`choose_eigh_solver` picks (ascending)."""
    *batch_shape, n, _ = a.shape
    if a.size == 0:  # n = 0 or an empty batch: CuPy returns the empty pairs itself
        return cupy.linalg.eigh(a)
    solver = choose_eigh_solver(math.prod(batch_shape), n)
    return solve_eigh(a, solver)


def solve_eigh(a: Any, solver: str) -> tuple[Any, Any]:
    """Solve the symmetric eigenproblems of ``a`` with the named cuSOLVER solver.

    Parameters
    ----------
    a : cupy.ndarray, shape (..., n, n)
        Symmetric matrices, float32 or float64.
    solver : {"syevd", "syevj_batched", "syevd_loop"}
        One of :data:`SOLVERS`, as :func:`choose_eigh_solver` picks it;
        ``"syevd"`` takes a single matrix.

    Returns
    -------
    eigenvalues : cupy.ndarray, shape (..., n)
        In ascending order (cuSOLVER's), unlike :func:`svdpi.eig`.
    eigenvectors : cupy.ndarray, shape (..., n, n)
        Column ``j`` belongs to ``eigenvalues[..., j]``.

    Examples
    --------
    >>> import cupy
    >>> import svdpi.cupy
    >>> a = cupy.asarray([[[2.0, 1.0], [1.0, 2.0]]])
    >>> w, v = svdpi.cupy.solve_eigh(a, "syevj_batched")
    >>> cupy.asnumpy(w).round(6)
    array([[1., 3.]])
    """
    *batch_shape, n, _ = a.shape
    batch_size = math.prod(batch_shape)
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; the solvers are {', '.join(SOLVERS)}")
    if solver == "syevd" and batch_size > 1:
        raise ValueError(f"syevd solves one matrix, got a batch of {batch_size}")
    if a.size == 0:  # n = 0 or an empty batch: CuPy returns the empty pairs itself
        return cupy.linalg.eigh(a)
    stacked = a.reshape(batch_size, n, n)
    if solver == "syevd":
        w, v = cupy.linalg.eigh(stacked[0])  # 2-D input: cuSOLVER syevd
    elif solver == "syevj_batched":
        w, v = cupy.linalg.eigh(stacked)  # 3-D input: cuSOLVER syevjBatched
    elif solver == "syevd_loop":
        w = cupy.empty((batch_size, n), dtype=a.dtype)
        v = cupy.empty((batch_size, n, n), dtype=a.dtype)
        # A loop of solver launches (no host synchronisation): used only for a
        # few large matrices, where each syevd call is long.
        for index in range(batch_size):
            w[index], v[index] = cupy.linalg.eigh(stacked[index])
    return w.reshape(*batch_shape, n), v.reshape(*batch_shape, n, n)
