"""examples/degenerate_gradient.py: it runs, prints a row per gap, and takes no options."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "degenerate_gradient.py"


def test_degenerate_gradient_example_runs_and_takes_no_options(capsys):
    spec = importlib.util.spec_from_file_location("degenerate_gradient_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        module.main(["--steps", "3"])  # 0.2 ignored any argument
    assert info.value.code == 2
    assert "unrecognized arguments: --steps 3" in capsys.readouterr().err
    module.main([])
    out = capsys.readouterr().out
    assert "torch.linalg.eigh" in out
    assert len([line for line in out.splitlines() if " | " in line]) == 7  # header + 6 gaps
