"""svdpi.cupy._native as written, on a NumPy-backed stand-in CuPy.

The stand-in's kernels are the generated source compiled for the host: the
launch plumbing that only a GPU would otherwise exercise.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

import svdpi
from svdpi import _dispatch

from ._cupy_helpers import (
    METHODS,
    compile_host_kernels,
    core_coefficients,
    kernel_source,
    solver_policy,
)
from ._helpers import assert_close, random_spd, spd_with_spectrum


@pytest.fixture(scope="module")
def host_kernels():
    return compile_host_kernels()


# --- svdpi.cupy._native on a stand-in CuPy --------------------------------------------------
#
# The launch code (operand order, flattening, contiguity, scalar dtypes, the
# solver loop) is plumbing that only a GPU would otherwise exercise. Here
# `cupy` is a NumPy-backed stand-in whose ElementwiseKernel runs the kernel's
# generated source compiled for the host, so svdpi.cupy._native runs as written.


class _FakeElementwiseKernel:
    def __init__(self, host, in_params, out_params, operation, name, preamble=""):
        self.host = host
        self.in_names = [p.split()[-1] for p in in_params.split(",")]
        self.out_names = [p.split()[-1] for p in out_params.split(",")]
        self.name = name
        self.spec = (in_params, out_params, operation, preamble)
        _FakeElementwiseKernel.launches.append(name)

    def __call__(self, *args):
        assert len(args) == len(self.in_names) + len(self.out_names), (self.name, len(args))
        named = dict(zip(self.in_names + self.out_names, args, strict=True))
        w, floor, out = named["w"], named["lam_floor"], named["out"]
        dtype = w.dtype
        for key in ("w", "lam_floor", "b", "out"):  # flat, C-contiguous operands
            if key in named:
                assert named[key].ndim == 1, key
                assert named[key].flags.c_contiguous, key
                assert named[key].dtype == dtype, key
        # Scalars of the array dtype, so the kernel's T comes from the arrays.
        assert type(named["eps"]) is dtype.type
        assert named["eps"] == np.finfo(dtype).eps
        assert type(named["num_iters"]) is dtype.type
        assert isinstance(named["n"], int)
        n = named["n"]
        assert out.size == floor.size * n * n
        b = named.get("b", np.zeros(out.size, dtype=dtype))
        out[...] = self.host.run_raw(self.name, w, floor, b, n, int(named["num_iters"]))


_FakeElementwiseKernel.launches = []


@pytest.fixture
def fake_cupy_native(monkeypatch, host_kernels):
    """svdpi.cupy._native imported against the stand-in CuPy; cleaned up afterwards."""
    import array_api_compat.numpy as xp_numpy

    fake = types.ModuleType("cupy")
    fake.ndarray = np.ndarray
    fake.float16, fake.float32, fake.float64 = np.float16, np.float32, np.float64
    fake.ascontiguousarray = np.ascontiguousarray
    fake.empty = np.empty
    fake.linalg = types.SimpleNamespace(eigh=np.linalg.eigh)

    def kernel(*args, **kwargs):
        return _FakeElementwiseKernel(host_kernels, *args, **kwargs)

    fake.ElementwiseKernel = kernel
    before = {name for name in sys.modules if name.startswith("svdpi.cupy")}
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", xp_numpy)
    _FakeElementwiseKernel.launches.clear()
    native = importlib.import_module("svdpi.cupy._native")
    native._kernel.cache_clear()
    yield native
    native._kernel.cache_clear()
    for name in [name for name in sys.modules if name.startswith("svdpi.cupy")]:
        if name not in before:
            del sys.modules[name]
    if "svdpi.cupy" not in before and hasattr(svdpi, "cupy"):
        delattr(svdpi, "cupy")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_native_launch_on_stand_in_cupy_equals_the_core(fake_cupy_native, method, dtype):
    rng = np.random.default_rng(20)
    spectra = [[4.0, 2.0, 2.0, 1.0, 0.0], [3.0, 2.5, 1.0, 0.5, -1e-3]]
    if method == "analytic":  # separated, for finite products
        spectra = [[4.0, 2.0, 1.5, 1.0, 0.1], [3.0, 2.5, 1.0, 0.5, 0.25]]
    w = np.array([spectra, spectra[::-1]], dtype=dtype)  # batch (2, 2)
    w = np.flip(np.flip(w, -1), -1)  # a non-contiguous view, as svdpi.eig returns
    b = np.swapaxes(rng.standard_normal((2, 2, 5, 5)).astype(dtype), -1, -2)  # not C-contiguous
    a = core_coefficients(np.ascontiguousarray(w), method, 7)
    at_b = np.swapaxes(a, -1, -2) * b
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    expected = {
        False: at_b,
        True: (at_b + np.swapaxes(at_b, -1, -2)) * dtype(0.5),
    }
    for symmetrize in (False, True):
        actual = fake_cupy_native.coefficient_product(
            w, b, method=method, num_iters=7, symmetrize=symmetrize
        )
        assert actual.shape == (2, 2, 5, 5)
        assert actual.dtype == dtype
        assert_close(actual, expected[symmetrize], rtol=rtol, err_msg=str(symmetrize))
    assert_close(fake_cupy_native.coefficient_matrix(w, method=method, num_iters=7), a, rtol=rtol)
    # One compiled kernel per (method, mode), reused across calls and dtypes.
    fake_cupy_native.coefficient_product(w, b, method=method, num_iters=3, symmetrize=True)
    assert sorted(_FakeElementwiseKernel.launches) == sorted(
        f"svdpi_{mode}_{method}" for mode in kernel_source.MODES
    )


def test_core_gradients_through_the_stand_in_cupy_provider(fake_cupy_native, monkeypatch):
    # The core's hook routed to svdpi.cupy._native (NumPy arrays standing in
    # for CuPy's): eig_vjp / eig_jvp / zca VJP equal the generic path.
    rng = np.random.default_rng(21)
    w, v = svdpi.eig(spd_with_spectrum([3.0, 2.0, 2.0, 0.5], rng, batch=(3,)))
    gw, gv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4, 4))
    calls = {
        "eig_vjp": lambda: svdpi.eig_vjp(w, v, gw, gv),
        "eig_jvp": lambda: svdpi.eig_jvp(w, v, gv)[1],
        "zca_vjp": lambda: svdpi.zca_whitening_matrix_vjp(w, v, gv),
    }
    expected = {name: call() for name, call in calls.items()}
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    native = fake_cupy_native
    _dispatch.register("numpy", eigh=native.eigh, coefficient_product=native.coefficient_product)
    for name, call in calls.items():
        assert_close(call(), expected[name], rtol=1e-12, err_msg=name)
    assert _FakeElementwiseKernel.launches  # the kernels did run


@pytest.mark.parametrize("batch_shape", [(), (1,), (3,), (2, 2)])
def test_native_solvers_on_stand_in_cupy(fake_cupy_native, batch_shape):
    rng = np.random.default_rng(22)
    a = random_spd(5, rng, batch=batch_shape)
    w_ref = np.linalg.eigvalsh(a)
    batch_size = int(np.prod(batch_shape))
    for solver in solver_policy.SOLVERS:
        if solver == "syevd" and batch_size != 1:
            with pytest.raises(ValueError, match="one matrix"):
                fake_cupy_native.solve_eigh(a, solver)
            continue
        w, v = fake_cupy_native.solve_eigh(a, solver)
        assert w.shape == (*batch_shape, 5)
        assert v.shape == (*batch_shape, 5, 5)
        assert_close(w, w_ref, rtol=1e-12, err_msg=solver)
        assert_close((v * w[..., None, :]) @ np.swapaxes(v, -1, -2), a, rtol=1e-12)
    w, _ = fake_cupy_native.eigh(a)  # through the policy
    assert_close(w, w_ref, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown solver"):
        fake_cupy_native.solve_eigh(a, "qr")


def test_native_coefficient_matrix_validates(fake_cupy_native):
    with pytest.raises(TypeError, match=r"cupy\.ndarray"):
        fake_cupy_native.coefficient_matrix([1.0, 2.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        fake_cupy_native.coefficient_matrix(np.ones(3, dtype=np.float16))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n\)"):
        fake_cupy_native.coefficient_matrix(np.array(1.0))
    with pytest.raises(ValueError, match="method must be one of"):
        fake_cupy_native.coefficient_matrix(np.ones(3), method="svd")
    with pytest.raises(ValueError, match="method must be one of"):
        fake_cupy_native.coefficient_matrix(np.ones((2, 0)), method="svd")


# --- n = 0 and empty batches, as the core and the framework's own ops give them -------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 0, 0), (0, 4), (2, 0, 3)])
def test_native_coefficients_of_empty_input(fake_cupy_native, method, dtype, shape):
    w = np.zeros(shape, dtype=dtype)
    b = np.ones((*shape, shape[-1]), dtype=dtype)
    expected_shape = (*shape, shape[-1])
    results = [fake_cupy_native.coefficient_matrix(w, method=method)]
    for symmetrize in (False, True):
        results.append(
            fake_cupy_native.coefficient_product(
                w, b, method=method, num_iters=19, symmetrize=symmetrize
            )
        )
    for result in results:
        assert result.shape == expected_shape
        assert result.dtype == dtype
    if shape[-1] > 0:  # an empty batch: the core's own coefficients, also empty
        core = core_coefficients(w, method, 19)
        assert core.shape == expected_shape
        np.testing.assert_array_equal(results[0], core)
    assert not _FakeElementwiseKernel.launches  # nothing to launch


@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0), (0, 4, 4), (2, 0, 3, 3)])
def test_native_eigh_of_empty_input(fake_cupy_native, shape):
    a = np.zeros(shape)
    for pairs in [
        fake_cupy_native.eigh(a),
        *(fake_cupy_native.solve_eigh(a, s) for s in ("syevj_batched", "syevd_loop")),
    ]:
        w, v = pairs
        assert w.shape == shape[:-1]
        assert v.shape == shape
        assert w.dtype == v.dtype == a.dtype
    if int(np.prod(shape[:-2])) > 1:
        with pytest.raises(ValueError, match="one matrix"):
            fake_cupy_native.solve_eigh(a, "syevd")
    with pytest.raises(ValueError, match="unknown solver"):
        fake_cupy_native.solve_eigh(a, "qr")


@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0), (0, 4, 4)])
def test_core_on_empty_input_through_the_stand_in_cupy_provider(
    fake_cupy_native, monkeypatch, shape
):
    # svdpi.eig and the VJPs on n = 0 and empty batches with the CuPy steps
    # registered: the same empty results as the core's generic path.
    a = np.zeros(shape)
    expected = svdpi.eig(a)
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    native = fake_cupy_native
    _dispatch.register("numpy", eigh=native.eigh, coefficient_product=native.coefficient_product)
    w, v = svdpi.eig(a)
    assert w.shape == expected.eigenvalues.shape
    assert v.shape == expected.eigenvectors.shape
    grad = np.ones(shape)
    assert svdpi.eig_vjp(w, v, None, grad).shape == shape
    assert svdpi.eig_jvp(w, v, grad)[1].shape == shape
    assert svdpi.zca_whitening_matrix_vjp(w, v, grad).shape == shape
