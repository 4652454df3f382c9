"""The core's contract with native fast paths: which step is asked for, when, and that it is used.

A fake provider registered for NumPy stands in for an adapter, so every
decision is checked on the CPU.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import svdpi
from svdpi import _dispatch
from svdpi._coefficients import coefficient_matrix

from ._helpers import random_spd


@pytest.fixture
def registry(monkeypatch):
    """The dispatch registry, restored after the test (registrations are process-wide)."""
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    monkeypatch.setattr(_dispatch, "_looked_up", set(_dispatch._looked_up))
    return _dispatch


@pytest.fixture
def fake_provider(registry):
    """A provider for NumPy whose steps record their calls and scale their result."""
    calls = []
    module = types.SimpleNamespace()

    def coefficient_product(eigenvalues, b, *, method, num_iters, symmetrize):
        calls.append(("coefficient_product", method, num_iters, symmetrize))
        a = coefficient_matrix(eigenvalues, method=method, num_iters=num_iters, xp=np)
        product = np.swapaxes(a, -1, -2) * b
        if symmetrize:
            product = (product + np.swapaxes(product, -1, -2)) / 2
        return module.scale * product

    def eigh(a):
        calls.append(("eigh",))
        return np.linalg.eigh(a)

    module.scale = 1.0
    module.calls = calls
    registry.register("numpy", coefficient_product=coefficient_product, eigh=eigh)
    return module


def test_no_provider_for_numpy_by_default():
    import array_api_compat.numpy as xp

    assert _dispatch.native(xp, "coefficient_product") is None
    assert _dispatch.native(xp, "eigh") is None


def test_eig_vjp_uses_the_native_product_symmetrised(fake_provider):
    rng = np.random.default_rng(0)
    w, v = svdpi.eig(random_spd(5, rng))
    fake_provider.calls.clear()  # eig itself asked for "eigh"
    gv = rng.standard_normal((5, 5))
    expected = svdpi.eig_vjp(w, v, None, gv, method="taylor", num_iters=7)
    assert fake_provider.calls == [("coefficient_product", "taylor", 7, True)]
    fake_provider.scale = 2.0  # proves the provider's result is the one used
    np.testing.assert_allclose(
        svdpi.eig_vjp(w, v, None, gv, method="taylor", num_iters=7), 2 * expected, rtol=1e-13
    )


def test_eig_jvp_uses_the_native_product_unsymmetrised(fake_provider):
    rng = np.random.default_rng(1)
    w, v = svdpi.eig(random_spd(4, rng))
    fake_provider.calls.clear()
    tangent = rng.standard_normal((4, 4))
    _, dv = svdpi.eig_jvp(w, v, tangent, num_iters=5)
    assert fake_provider.calls == [("coefficient_product", "pi", 5, False)]
    with _dispatch.native_paths(False):
        _, dv_generic = svdpi.eig_jvp(w, v, tangent, num_iters=5)
    assert len(fake_provider.calls) == 1
    np.testing.assert_allclose(dv, dv_generic, rtol=0, atol=1e-14)


def test_whitening_vjp_goes_through_the_same_hook(fake_provider):
    rng = np.random.default_rng(2)
    w, v = svdpi.eig(random_spd(3, rng, batch=(2,)))
    fake_provider.calls.clear()
    svdpi.zca_whitening_matrix_vjp(w, v, rng.standard_normal((2, 3, 3)))
    assert fake_provider.calls == [("coefficient_product", "pi", 19, True)]


def test_native_paths_false_turns_the_hook_off(fake_provider):
    rng = np.random.default_rng(3)
    w, v = svdpi.eig(random_spd(4, rng))
    fake_provider.calls.clear()
    with _dispatch.native_paths(False):
        svdpi.eig_vjp(w, v, None, rng.standard_normal((4, 4)))
    assert fake_provider.calls == []
    svdpi.eig_vjp(w, v, None, rng.standard_normal((4, 4)))
    assert len(fake_provider.calls) == 1


def test_native_paths_enabled_follows_the_context_manager():
    # For an adapter's own fast paths outside the registry (svdpi.adapter).
    from svdpi.adapter import native_paths, native_paths_enabled

    assert native_paths_enabled() is True
    with native_paths(False):
        assert native_paths_enabled() is False
        with native_paths(True):
            assert native_paths_enabled() is True
        assert native_paths_enabled() is False
    assert native_paths_enabled() is True


def test_eig_uses_native_eigh_for_a_provided_namespace(registry):
    import array_api_strict as xp

    calls = []

    def strict_eigh(a):
        calls.append("eigh")
        return xp.linalg.eigh(a)

    registry.register("array_api_strict", eigh=strict_eigh)
    a = xp.asarray(random_spd(3, np.random.default_rng(4)))
    w, _ = svdpi.eig(a)
    assert calls == ["eigh"]
    assert bool(xp.all(w[:-1] >= w[1:]))  # still flipped to descending by the core


def test_a_declining_step_leaves_the_call_to_the_generic_code(registry):
    rng = np.random.default_rng(5)
    a = random_spd(4, rng)
    w, v = svdpi.eig(a)
    gv = rng.standard_normal((4, 4))
    expected = svdpi.eig_vjp(w, v, None, gv)
    calls = []

    def decline(*args, **kwargs):
        calls.append(len(args))
        return _dispatch.DECLINED

    registry.register("numpy", all_finite=decline, eigh=decline, coefficient_product=decline)
    w_declined, _ = svdpi.eig(a)
    np.testing.assert_array_equal(w_declined, w)
    np.testing.assert_array_equal(svdpi.eig_vjp(w, v, None, gv), expected)
    assert calls == [1, 1, 2]  # every step was asked, and each declined
    with pytest.raises(ValueError, match="only finite"):  # the generic check still ran
        svdpi.eig(np.full((2, 2), np.nan))


def test_an_unknown_step_name_fails_loudly(registry):
    with pytest.raises(ValueError, match=r"unknown native step 'coefficient_prodcut'"):
        _dispatch.native(np, "coefficient_prodcut")
    with pytest.raises(ValueError, match=r"unknown native step 'eigh_'.*coefficient_product"):
        registry.register("numpy", eigh_=np.linalg.eigh)
    with pytest.raises(TypeError, match="'eigh' step must be callable"):
        registry.register("numpy", eigh=None)
    assert "numpy" not in registry._providers  # nothing half-registered


def test_registration_replaces_only_the_named_steps(registry):
    first, second = (lambda a: True), (lambda a: False)
    registry.register("numpy", all_finite=first, eigh=np.linalg.eigh)
    registry.register("numpy", all_finite=second)
    assert _dispatch.native(np, "all_finite") is second
    assert _dispatch.native(np, "eigh") is np.linalg.eigh


@pytest.mark.parametrize(
    ("name", "library"),
    [
        ("cupy", "cupy"),
        ("array_api_compat.cupy", "cupy"),
        ("torch", "torch"),
        ("array_api_compat.torch", "torch"),
        ("numpy", "numpy"),
        ("jax.numpy", "jax"),
        ("array_api_strict", "array_api_strict"),
    ],
)
def test_library_name(name, library):
    assert _dispatch.library_name(types.ModuleType(name)) == library


def test_library_name_without_a_module_name():
    assert _dispatch.library_name(object()) == ""


def test_the_protocols_cover_exactly_the_steps():
    assert set(_dispatch.STEPS) == {"all_finite", "eigh", "coefficient_product"}
    for protocol in _dispatch.STEPS.values():
        assert "__call__" in protocol.__dict__


def test_the_core_names_no_adapter():
    """Outside docstrings, no code under src/svdpi mentions an array library by name."""
    source = Path(svdpi.__file__).parent
    for path in sorted(source.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in docstrings:
                    continue
                for library in ("torch", "cupy"):
                    assert library not in node.value, (path.name, node.value)
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] + [getattr(node, "module", "")]
                assert not any(
                    library in (name or "") for name in names for library in ("torch", "cupy")
                ), (path.name, names)


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_entry_point_loads_the_provider_of_a_library_never_imported():
    # A torch tensor reaching the core in a process that never imported
    # svdpi.torch: the "svdpi.native" entry point "torch" brings its fast path.
    result = _run_python(
        """
        import sys, torch, svdpi
        from svdpi import _dispatch
        import array_api_compat.torch as xp
        assert "svdpi.torch" not in sys.modules
        assert _dispatch.native(xp, "coefficient_product") is not None
        print("svdpi.torch" in sys.modules)
        import array_api_compat.numpy as xp_numpy
        print(_dispatch.native(xp_numpy, "coefficient_product"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]


def test_fullgraph_compile_in_a_fresh_process():
    """The issue's reproducer, forward and backward, in a process that compiled nothing before.

    In 0.1 this passed only after another test had imported svdpi.torch._native:
    dynamo stopped at the core's lazy import of it.
    """
    pytest.importorskip("torch")
    result = _run_python(
        """
        import torch, svdpi.torch
        torch.manual_seed(0)
        zca = svdpi.torch.ZCAWhitening(8, num_groups=2)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), zca)
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        x = torch.randn(4, 3, 8, 8)
        y = compiled(x)
        y.square().sum().backward()
        print(tuple(y.shape), all(torch.isfinite(p.grad).all() for p in m.parameters()))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "(4, 8, 6, 6) True"
