"""The CuPy adapter's eigensolver policy (pure Python, tested everywhere)."""

from __future__ import annotations

import pytest

from ._cupy_helpers import (
    solver_policy,
)

# --- the eigensolver policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "n", "solver"),
    [
        (0, 8, "syevd"),
        (1, 4, "syevd"),
        (1, 512, "syevd"),
        (512, 4, "syevj_batched"),
        (512, 32, "syevj_batched"),
        (2, 32, "syevj_batched"),
        (64, 64, "syevj_batched"),
        (4, 256, "syevd_loop"),
    ],
)
def test_solver_policy_on_the_benchmark_shapes(batch_size, n, solver):
    assert solver_policy.choose_eigh_solver(batch_size, n) == solver


def test_solver_policy_thresholds_are_the_named_constants(monkeypatch):
    limit_n = solver_policy.SYEVJ_BATCHED_MAX_N
    limit_batch = solver_policy.SYEVD_LOOP_MAX_BATCH
    choose = solver_policy.choose_eigh_solver
    assert choose(2, limit_n) == "syevj_batched"
    assert choose(2, limit_n + 1) == "syevd_loop"
    assert choose(limit_batch, limit_n + 1) == "syevd_loop"
    assert choose(limit_batch + 1, limit_n + 1) == "syevj_batched"
    monkeypatch.setattr(solver_policy, "SYEVJ_BATCHED_MAX_N", 8)
    assert choose(2, 16) == "syevd_loop"  # read at call time: tunable
    assert set(solver_policy.SOLVERS) == {"syevd", "syevj_batched", "syevd_loop"}


@pytest.mark.parametrize(
    ("batch_size", "n", "error", "message"),
    [
        (-1, 4, ValueError, "batch_size must be >= 0"),
        (2, 0, ValueError, "n must be >= 1"),
        (2.0, 4, TypeError, "batch_size must be an integer"),
        (2, True, TypeError, "n must be an integer"),
    ],
)
def test_solver_policy_validates(batch_size, n, error, message):
    with pytest.raises(error, match=message):
        solver_policy.choose_eigh_solver(batch_size, n)
