"""examples/svd_polar_procrustes.py, briefly: svdpi trains from W = I, torch.linalg.svd cannot."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "svd_polar_procrustes.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("svd_polar_procrustes_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("name", ["svdpi.torch.polar", "svdpi.torch.svd (pi), U @ Vh"])
def test_svdpi_trains_from_the_identity(example, name):
    losses, _ = example.train(example.PARAMETRISATIONS[name], steps=40, dim=8)
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_autograd_through_torch_linalg_svd_is_nan_at_the_first_step(example):
    losses, _ = example.train(example.PARAMETRISATIONS["torch.linalg.svd, U @ Vh"], steps=5, dim=8)
    assert math.isfinite(losses[0])
    assert math.isnan(losses[-1])
    assert len(losses) == 2  # stopped at the first NaN gradient


def test_main_prints_a_row_per_parametrisation(example, capsys):
    results = example.main(["--steps", "2", "--dim", "4"])
    assert list(results) == list(example.PARAMETRISATIONS)
    out = capsys.readouterr().out
    for name in example.PARAMETRISATIONS:
        assert name in out
