"""benchmarks/bench_svd.py --quick runs and prints a row per shape and part with a ratio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_svd_benchmark_quick_mode(tmp_path):
    pytest.importorskip("torch")
    table = tmp_path / "svd.md"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_svd.py"),
            "--quick",
            "--threads",
            "1",
            "--backward-only",
            "--output",
            str(table),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    text = table.read_text()
    assert "svdpi / torch" in text
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| 8 × 8")]
    assert [cells[1].strip() for cells in rows] == ["fwd+bwd", "bwd"]
    for cells in rows:
        assert float(cells[-1]) > 0
    assert any(line.startswith("| 2 × 16 × 24 |") for line in text.splitlines())
