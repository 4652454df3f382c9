"""examples/cupy_whitening.py on the CPU (NumPy) and, where there is one, the GPU (CuPy).

The hand-written backward pass (softmax, classifier, ZCA whitening VJP chained
into the SVD-PI eig VJP, covariance and centring) is checked against PyTorch
autograd through the very same forward code, in float64.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cupy_whitening.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("cupy_whitening_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def small(example):
    return example.Config(n_samples=256, n_features=12, groups=3, n_classes=3, steps=40)


def _problem(example, config, dtype="float64"):
    xp = example.array_namespace_for("numpy")
    x, labels = example.make_data(config, xp, getattr(xp, dtype))
    params = example.init_params(config, xp, getattr(xp, dtype))
    return xp, x, labels, params


@pytest.mark.parametrize(("method", "num_iters"), [("pi", 19), ("pi", 3), ("taylor", 9)])
def test_manual_backward_equals_autograd_through_svdpi_torch(example, small, method, num_iters):
    pytest.importorskip("torch")
    config = replace(small, method=method, num_iters=num_iters)
    xp, x, labels, params = _problem(example, config)
    errors = example.check_gradients(params, x, labels, config, xp)
    assert set(errors) == {"w1", "w2", "b2"}
    assert max(errors.values()) < 1e-10, errors


def test_manual_backward_equals_torch_eigh_autograd(example, small):
    # Independent of svdpi's eig backward: "analytic" is the classical eigh
    # gradient, which torch.linalg.eigh's own backward computes.
    pytest.importorskip("torch")
    config = replace(small, method="analytic")
    xp, x, labels, params = _problem(example, config)
    loss, cache = example.forward(params, x, labels, config, xp)
    manual = example.backward(params, cache, config, xp)
    loss_t, expected = example.autograd_gradients(params, x, labels, config, eig="eigh")
    assert loss_t == pytest.approx(float(loss), rel=1e-12)
    for name, grad in expected.items():
        scale = np.max(np.abs(grad))
        np.testing.assert_allclose(manual[name], grad, rtol=0, atol=1e-9 * scale, err_msg=name)


def test_manual_backward_changes_with_the_gradient_rule(example, small):
    # The check above could not tell the rules apart if the eig gradient did
    # not reach the parameters: it does, so pi with few steps differs.
    xp, x, labels, params = _problem(example, small)
    grads = {}
    for method, num_iters in [("pi", 1), ("analytic", 19)]:
        config = replace(small, method=method, num_iters=num_iters)
        _, cache = example.forward(params, x, labels, config, xp)
        grads[method] = example.backward(params, cache, config, xp)["w1"]
    assert not np.allclose(grads["pi"], grads["analytic"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_lowers_the_loss(example, small, dtype):
    xp, x, labels, params = _problem(example, small, dtype)
    lines = []
    losses = example.train(params, x, labels, small, xp, print_every=10, log=lines.append)
    assert len(losses) == small.steps
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert params["w1"].dtype == np.dtype(dtype)
    assert len(lines) == 5  # steps 0, 10, 20, 30 and the last
    assert lines[0].startswith("step    0  loss")


def test_main_on_numpy(example, capsys):
    assert example.main(["--backend", "numpy", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "backend numpy (float32)" in out
    assert "hand-written backward vs PyTorch autograd (float64)" in out
    assert "in 3 steps" in out


def test_main_without_cupy_explains(example, monkeypatch, capsys):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("CuPy and a GPU are present")
    except Exception:
        pass
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert example.main(["--backend", "cupy", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "CuPy with a CUDA device is not available" in err
    assert "--backend numpy" in err


def test_unknown_backend(example):
    with pytest.raises(ValueError, match="backend must be"):
        example.array_namespace_for("jax")


@pytest.mark.gpu
def test_example_on_cupy(example, small):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device available")
    except Exception as error:
        pytest.skip(f"no CUDA device available ({error})")
    pytest.importorskip("torch")
    xp = example.array_namespace_for("cupy")
    x, labels = example.make_data(small, xp, xp.float32)
    params = example.init_params(small, xp, xp.float32)
    errors = example.check_gradients(params, x, labels, small, xp)
    assert max(errors.values()) < 1e-10, errors
    losses = example.train(params, x, labels, small, xp, print_every=0)
    assert isinstance(params["w1"], cupy.ndarray)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps: must be >= 1"),  # 0.2: IndexError
        (["--steps", "-2"], "--steps: must be >= 1"),
        (["--seed", "-1"], "--seed: must be in [0, 4294967295]"),
        (["--dtype", "float16"], "--dtype: invalid choice"),
        (["--backend", "jax"], "--backend: invalid choice"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_are_argparse_errors(example, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        example.main(["--backend", "numpy", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
