"""svdpi.torch.spd as a whole: a compiled SPDNet, the docstring examples, the API page."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import svdpi.torch  # noqa: E402
from svdpi.torch import spd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_svdpi_torch_exposes_spd():
    assert svdpi.torch.spd is spd
    assert spd.functional.karcher_mean.__module__.startswith("svdpi.torch.spd")


def test_compile_fullgraph_of_a_small_spdnet_in_a_fresh_process():
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        from torch import nn
        from svdpi.torch import spd

        torch.manual_seed(0)
        model = nn.Sequential(
            spd.SPDBatchNorm(8, karcher_steps=2),
            spd.BiMap(8, 4),
            spd.ReEig(1e-2),
            spd.LogEig(vectorize=True),
            nn.Linear(10, 3),
        ).double()
        eager = nn.Sequential(*[m for m in model])  # the same modules, not compiled
        x = torch.randn(6, 8, 16, dtype=torch.float64)
        x = x @ x.mT / 16 + 1e-2 * torch.eye(8, dtype=torch.float64)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = compiled(x1)
        running = model[0].running_mean.clone()
        model[0].reset_running_stats()
        expected = eager(x2)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(running, model[0].running_mean, rtol=1e-10, atol=1e-12)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        expected.square().sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-11)
        for g, p in zip(grads, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-9, atol=1e-11)
        model.eval()
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-10, atol=1e-12)
        print("compiled ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled ok" in result.stdout


def test_an_ensemble_of_spdnets_under_torch_func():
    torch.manual_seed(0)
    models = [
        torch.nn.Sequential(
            spd.BiMap(6, 3, dtype=torch.float64), spd.ReEig(1e-2), spd.LogEig(vectorize=True)
        )
        for _ in range(3)
    ]
    params, buffers = torch.func.stack_module_state(models)
    x = torch.randn(5, 6, 12, dtype=torch.float64)
    x = x @ x.mT / 12

    def run(p, b):
        return torch.func.functional_call(models[0], (p, b), (x,))

    y = torch.func.vmap(run)(params, buffers)
    grads = torch.func.grad(lambda p: torch.func.vmap(run)(p, buffers).sum())(params)
    for i, model in enumerate(models):
        torch.testing.assert_close(y[i], model(x))
        model(x).sum().backward()
        torch.testing.assert_close(grads["0.free_weight"][i], model[0].free_weight.grad)


def _spd_modules():
    modules = [spd]
    for info in pkgutil.iter_modules(spd.__path__, "svdpi.torch.spd."):
        modules.append(importlib.import_module(info.name))
    return modules


@pytest.mark.parametrize("module", _spd_modules(), ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    # tests/test_doctests.py collects svdpi.torch's modules one level deep; the
    # subpackage's modules are collected here.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module.__name__) if t.examples]
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


@pytest.mark.parametrize(
    "name",
    [f"spd.{name}" for name in spd.__all__ if name != "functional"]
    + [f"spd.functional.{name}" for name in spd.functional.__all__],
)
def test_every_public_name_is_on_the_api_page(name):
    text = (ROOT / "docs" / "api" / "spd.rst").read_text(encoding="utf-8")
    short = name.rsplit(".", 1)[1]
    assert re.search(rf"^\s+{re.escape(short)}\s*$", text, flags=re.MULTILINE), name


def test_every_public_callable_has_an_example():
    for name in spd.__all__:
        if name == "functional":
            continue
        assert ">>>" in (getattr(spd, name).__doc__ or ""), name
    for name in spd.functional.__all__:
        assert ">>>" in (getattr(spd.functional, name).__doc__ or ""), name
