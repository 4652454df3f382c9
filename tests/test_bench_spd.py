"""benchmarks/bench_spd.py --quick runs, with and without spd_learn, and writes its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(tmp_path, *extra, env=None):
    table = tmp_path / "spd.md"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_spd.py"),
            "--quick",
            "--output",
            str(table),
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return table.read_text()


def _rows(text, prefix):
    return [line.strip("|").split("|") for line in text.splitlines() if line.startswith(prefix)]


def test_quick_mode_times_every_candidate_with_ratios(tmp_path):
    pytest.importorskip("torch")
    text = _run(tmp_path, "--stiefel")
    rows = _rows(text, "| 8 × 6 → 3")
    assert len(rows) == 1
    header = _rows(text, "| batch × n")[0]
    assert "svdpi exact" in header[1]
    assert "eigh autograd" in "|".join(header)
    ratios = [cell.strip() for cell in rows[0][-3:]]
    last = float(ratios[-1])  # svdpi unchecked / eigh autograd is always there
    assert last > 0
    stiefel = {cells[0].strip(): cells for cells in _rows(text, "| ") if len(cells) > 8}
    assert float(stiefel["qr"][3]) == 1.0  # the reference of the time ratios
    for kind in ("qr", "cayley", "QR retraction"):
        assert float(stiefel[kind][2]) < 1e-4  # orthonormal to round-off
    assert float(stiefel["none"][2]) > 1e-3  # the unconstrained weight drifts


def test_spd_learn_columns_are_left_out_cleanly_without_it(tmp_path):
    pytest.importorskip("torch")
    # A site directory that makes `import spd_learn` fail, first on the path.
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "spd_learn.py").write_text("raise ImportError('blocked for the test')\n")
    path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
    text = _run(tmp_path, env={"PYTHONPATH": path})
    assert "spd_learn is not installed" in text
    assert "| spd_learn |" not in text
    assert _rows(text, "| 8 × 6 → 3")
