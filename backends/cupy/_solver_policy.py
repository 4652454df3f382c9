"""Which cuSOLVER symmetric eigensolver :func:`svdpi.eig` uses for a CuPy batch.

Pure Python (no CuPy import), so the policy is unit-tested on any machine.

The candidates, all reached through CuPy:

``"syevd"``
    Divide and conquer on one matrix (``cupy.linalg.eigh`` on 2-D input):
    the fastest for a single large matrix.
``"syevj_batched"``
    Jacobi on the whole batch in one call (``cupy.linalg.eigh`` on 3-D input
    uses cuSOLVER ``syevjBatched``): one launch for many small matrices,
    where a loop of per-matrix calls would be dominated by launch overhead.
``"syevd_loop"``
    ``syevd`` once per matrix: for a few large matrices, where Jacobi's cost
    grows faster with ``n`` than divide and conquer's.

The thresholds are named constants so that ``benchmarks/gpu_check.py``
(which times every solver on every benchmark shape and prints the winner)
can be used to tune them. Their values are NOT measured yet: no GPU was
available when this policy was written. They follow PyTorch's CUDA
heuristic for ``torch.linalg.eigh`` (batched Jacobi for batches of matrices
up to 32 × 32, per-matrix solvers above).
"""

from __future__ import annotations

from svdpi.adapter import check_integer

SOLVERS = ("syevd", "syevj_batched", "syevd_loop")

#: Largest ``n`` for which the batched Jacobi solver is used whatever the batch size.
SYEVJ_BATCHED_MAX_N = 32
#: Above ``SYEVJ_BATCHED_MAX_N``, batches of at most this many matrices loop
#: over ``syevd``; larger batches still use one batched Jacobi call, whose
#: single launch beats that many sequential ``syevd`` calls.
SYEVD_LOOP_MAX_BATCH = 16


def choose_eigh_solver(batch_size: int, n: int) -> str:
    """The solver for ``batch_size`` symmetric ``n × n`` matrices: one of :data:`SOLVERS`.

    Parameters
    ----------
    batch_size : int
        Number of matrices (the product of the batch dimensions), ``>= 0``.
    n : int
        Matrix size, ``>= 1``.

    Returns
    -------
    str
        ``"syevd"`` for at most one matrix; ``"syevj_batched"`` for
        ``n <= SYEVJ_BATCHED_MAX_N`` or more than ``SYEVD_LOOP_MAX_BATCH``
        matrices; else ``"syevd_loop"``.

    Examples
    --------
    >>> choose_eigh_solver(512, 32)
    'syevj_batched'
    >>> choose_eigh_solver(1, 512)
    'syevd'
    >>> choose_eigh_solver(4, 256)
    'syevd_loop'
    """
    batch_size = _nonnegative_int(batch_size, "batch_size")
    n = _nonnegative_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size <= 1:
        return "syevd"
    if n <= SYEVJ_BATCHED_MAX_N or batch_size > SYEVD_LOOP_MAX_BATCH:
        return "syevj_batched"
    return "syevd_loop"


def _nonnegative_int(value: object, name: str) -> int:
    return check_integer(value, name, minimum=0)
