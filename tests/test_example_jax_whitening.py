"""examples/jax_whitening.py: it trains under jit, the loss falls, the CLI prints it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jax_whitening.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("jax_whitening_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("method", ["pi", "exact"])
def test_training_lowers_the_loss(example, method):
    config = replace(example.Config(), n_samples=1024, steps=80, method=method)
    result = example.train(config, verbose=False)
    losses = np.asarray(result["losses"])
    assert losses.shape == (80,)
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.5 * losses[:5].mean(), losses
    # Evaluation with the running statistics, well above chance (1 / 4).
    assert result["test_accuracy"] > 0.6, result


def test_evaluation_path_reproduces_the_training_step(example):
    """whiten() with a batch's own statistics gives the training step's output."""
    import jax.numpy as jnp

    import svdpi.jax

    config = replace(example.Config(), n_samples=1024, steps=1)
    running = example.init_running_stats(config)
    assert running.whitening.shape == (config.groups, 8, 8)
    params = example.init_params(config, example.jax.random.key(0))
    x, _ = example.make_data(config)
    h = x @ params["w1"] + params["b1"]
    y, stats = svdpi.jax.zca_whitening(h, num_groups=config.groups, eps=config.eps)
    assert bool(jnp.allclose(svdpi.jax.whiten(h, stats), y, atol=1e-4))


def test_command_line_prints_the_loss():
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "3", "--method", "taylor", "--num-iters", "9"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "step    0  loss" in result.stdout
    assert "accuracy with running statistics" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--groups", "0"], "--groups: must be >= 1"),  # 0.2: ZeroDivisionError
        (["--groups", "3"], "--groups 3 must divide the 32 hidden features"),
        (["--steps", "0"], "--steps: must be >= 1"),  # 0.2: ran 0 steps, printed accuracies
        (["--num-iters", "0"], "--num-iters: must be >= 1"),
        (["--seed", "-1"], "--seed: must be in [0, 4294967295]"),
        (["--method", "svd"], "--method: invalid choice"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_are_argparse_errors(example, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        example.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
