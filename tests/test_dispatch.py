"""The core's hook for native fast paths: which step is asked for, when, and that it is used.

A fake provider registered for NumPy stands in for an adapter, so every
decision is checked on the CPU.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from array_api_compat import is_numpy_namespace

import svdpi
from svdpi import _dispatch
from svdpi._coefficients import coefficient_matrix

from ._helpers import random_spd


@pytest.fixture
def fake_provider(monkeypatch):
    """A provider module for NumPy whose steps record their calls and scale their result."""
    calls = []
    module = types.ModuleType("svdpi_fake_provider")

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

    module.coefficient_product = coefficient_product
    module.eigh = eigh
    module.scale = 1.0
    module.calls = calls
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(_dispatch, "PROVIDERS", ((is_numpy_namespace, module.__name__),))
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


def test_eig_uses_native_eigh_for_a_provided_namespace(monkeypatch, fake_provider):
    import array_api_strict as xp

    monkeypatch.setattr(_dispatch, "PROVIDERS", ((lambda ns: ns is xp, fake_provider.__name__),))

    def strict_eigh(a):
        fake_provider.calls.append(("eigh",))
        return xp.linalg.eigh(a)

    monkeypatch.setattr(fake_provider, "eigh", strict_eigh)
    a = xp.asarray(random_spd(3, np.random.default_rng(4)))
    w, _ = svdpi.eig(a)
    assert fake_provider.calls == [("eigh",)]
    assert bool(xp.all(w[:-1] >= w[1:]))  # still flipped to descending by the core


@pytest.mark.parametrize(
    "name", ["cupy", "array_api_compat.cupy", "numpy", "torch", "array_api_compat.torch"]
)
def test_cupy_namespace_test_agrees_with_array_api_compat(name):
    """svdpi's own (dynamo-friendly) namespace tests say what array-api-compat says."""
    import array_api_compat

    namespace = types.ModuleType(name)
    assert _dispatch._is_cupy_namespace(namespace) == array_api_compat.is_cupy_namespace(namespace)
    assert not _dispatch._is_cupy_namespace(object())  # no __name__: not CuPy
    # And the PyTorch one likewise.
    assert _dispatch._is_torch_namespace(namespace) == array_api_compat.is_torch_namespace(
        namespace
    )
    assert not _dispatch._is_torch_namespace(object())
