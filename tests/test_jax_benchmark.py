"""benchmarks/bench_eig_jax.py's sqrtm table (exact forward + backward against eigh), quick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_sqrtm_table_quick_mode(tmp_path):
    """A row with two positive ratios; in a subprocess (XLA's thread flags precede JAX)."""
    pytest.importorskip("jax")
    output = tmp_path / "sqrtm.md"
    command = [
        sys.executable,
        str(BENCHMARKS / "bench_eig_jax.py"),
        "--quick",
        "--only",
        "sqrtm",
        "--output",
        str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "svdpi.jax.sqrtm fwd+bwd" in text
    assert "svdpi.jax.eig grad" not in text  # --only sqrtm
    rows = [line for line in text.splitlines() if line.startswith("| 2 × 16")]
    assert len(rows) == 1, text
    ratios = [float(cell) for cell in rows[0].strip("|").split("|")[-2:]]
    assert all(ratio > 0 for ratio in ratios), rows[0]
