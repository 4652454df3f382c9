"""examples/covariance_pooling.py, briefly: the loss goes down with every gradient method."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "covariance_pooling.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("covariance_pooling_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("method", ["exact", "pi", "taylor"])
def test_loss_decreases(example, method):
    losses = example.train(example.Config(steps=60), method)
    first = example.mean_loss(losses, first=True, window=10)
    last = example.mean_loss(losses, first=False, window=10)
    assert all(math.isfinite(value) for value in losses)
    assert last < 0.5 * first, (first, last)


def test_main_prints_a_row_per_method(example, capsys):
    results = example.main(["--steps", "3", "--methods", "pi"])
    assert list(results) == ["pi"]
    assert len(results["pi"]) == 3
    assert "first 20 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps: must be >= 1"),  # 0.2: ZeroDivisionError
        (["--steps", "x"], "--steps: must be an integer"),
        (["--methods", "newton"], "--methods: invalid choice"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_are_argparse_errors(example, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        example.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
