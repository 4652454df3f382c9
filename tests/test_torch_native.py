"""svdpi.torch._native: the torch coefficient product the core dispatches to.

Its contract (svdpi._dispatch) is the core's generic result; here it is held
to bitwise equality with that result on hard spectra, and its pattern cache
is checked never to keep a tensor it must not keep.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import array_api_compat.torch as xp_torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import svdpi  # noqa: E402
from svdpi import _dispatch  # noqa: E402
from svdpi._gradient import _coefficient_product  # noqa: E402
from svdpi.torch import _native  # noqa: E402

from ._helpers import assert_close, random_spd  # noqa: E402

SPECTRA = ["random", "repeated", "cluster", "zero", "negative", "huge", "tiny"]


def _eigenvalues(kind, n, dtype, generator):
    if kind == "random":
        w = torch.rand(3, n, generator=generator, dtype=torch.float64) * 10
    elif kind == "repeated":
        w = torch.full((3, n), 2.0, dtype=torch.float64)
        w[:, 0] = 5.0
    elif kind == "cluster":
        w = 1.0 + 1e-13 * torch.rand(3, n, generator=generator, dtype=torch.float64)
    elif kind == "zero":
        w = torch.zeros(3, n, dtype=torch.float64)
    elif kind == "negative":
        w = torch.randn(3, n, generator=generator, dtype=torch.float64)
    elif kind == "huge":
        w = 1e30 * torch.rand(3, n, generator=generator, dtype=torch.float64)
    else:  # tiny
        w = 1e-30 * torch.rand(3, n, generator=generator, dtype=torch.float64)
    return w.to(dtype).sort(dim=-1, descending=True).values


def _generic(eigenvalues, b, method, num_iters, symmetrize):
    with _dispatch.native_paths(False):
        return _coefficient_product(
            eigenvalues, b, method, num_iters, symmetrize=symmetrize, xp=xp_torch
        )


def test_the_core_dispatches_torch_arrays_here():
    assert _dispatch.native(xp_torch, "coefficient_product") is _native.coefficient_product
    with _dispatch.native_paths(False):
        assert _dispatch.native(xp_torch, "coefficient_product") is None


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_equal_to_the_core(method, dtype):
    generator = torch.Generator().manual_seed(0)
    cases = itertools.product(
        SPECTRA, [1, 2, 7], [1, 19, 10**6, 2**23, 2**24, 2**53], [True, False]
    )
    for kind, n, num_iters, symmetrize in cases:
        w = _eigenvalues(kind, n, dtype, generator)
        b = torch.randn(3, n, n, generator=generator, dtype=torch.float64).to(dtype)
        expected = _generic(w, b, method, num_iters, symmetrize)
        got = _native.coefficient_product(
            w, b, method=method, num_iters=num_iters, symmetrize=symmetrize
        )
        # rtol=atol=0: the same operations on the same values, bit for bit
        # ("analytic" is infinite for equal eigenvalues, in both).
        torch.testing.assert_close(
            got, expected, rtol=0, atol=0, equal_nan=True, msg=f"{kind}, n={n}, T={num_iters}"
        )


def test_uncached_sizes_and_batch_shapes():
    # n above CACHE_MAX_N builds its patterns per call; no batch and a 2-d batch.
    generator = torch.Generator().manual_seed(1)
    n = _native.CACHE_MAX_N + 3
    for shape in [(n,), (2, 1, n)]:
        w = torch.rand(shape, generator=generator, dtype=torch.float64).sort(-1, True).values
        b = torch.randn((*shape, n), generator=generator, dtype=torch.float64)
        info = _native._cached_patterns.cache_info()
        got = _native.coefficient_product(w, b, method="pi", num_iters=19, symmetrize=True)
        assert _native._cached_patterns.cache_info().currsize == info.currsize
        assert torch.equal(got, _generic(w, b, "pi", 19, True))


def test_cache_keeps_no_inference_tensor():
    # Patterns first built in inference mode serve later calls outside it.
    _native._cached_patterns.cache_clear()
    rng = np.random.default_rng(2)
    w, v = svdpi.eig(torch.from_numpy(random_spd(5, rng)))
    g = torch.from_numpy(rng.standard_normal((5, 5)))
    with torch.inference_mode():
        expected = svdpi.eig_vjp(w, v, None, g)
    assert _native._cached_patterns.cache_info().currsize == 1
    assert not any(
        t.is_inference()
        for t in _native._cached_patterns(5, w.dtype, w.device, "pi", 19, True)
        if isinstance(t, torch.Tensor)
    )
    hits = _native._cached_patterns.cache_info().hits
    assert torch.equal(svdpi.eig_vjp(w, v, None, g), expected)
    assert _native._cached_patterns.cache_info().hits == hits + 1


def test_inputs_are_not_overwritten():
    generator = torch.Generator().manual_seed(4)
    for method in ["pi", "analytic"]:
        w = torch.rand(2, 6, generator=generator, dtype=torch.float64).sort(-1, True).values
        b = torch.randn(2, 6, 6, generator=generator, dtype=torch.float64)
        w0, b0 = w.clone(), b.clone()
        _native.coefficient_product(w, b, method=method, num_iters=19, symmetrize=True)
        assert torch.equal(w, w0)
        assert torch.equal(b, b0)


def test_declines_when_autograd_records():
    # Its in-place operations could not be differentiated: the core's generic
    # code runs instead, and torch autograd differentiates through it.
    rng = np.random.default_rng(5)
    w, v = svdpi.eig(torch.from_numpy(random_spd(4, rng)))
    g = torch.from_numpy(rng.standard_normal((4, 4))).requires_grad_(True)
    b = v.mT @ g
    declined = _native.coefficient_product(w, b, method="pi", num_iters=19, symmetrize=True)
    assert declined is _dispatch.DECLINED
    with torch.no_grad():
        assert (
            _native.coefficient_product(w, b, method="pi", num_iters=19, symmetrize=True)
            is not _dispatch.DECLINED
        )
    weights = torch.from_numpy(rng.standard_normal((4, 4)))
    (svdpi.eig_vjp(w, v, None, g) * weights).sum().backward()
    # The VJP is linear in g: its gradient is its adjoint applied to the weights.
    with _dispatch.native_paths(False):
        expected = torch.func.vjp(lambda x: svdpi.eig_vjp(w, v, None, x), g.detach())[1](weights)
    assert_close(g.grad, expected[0], rtol=1e-13)


def test_cache_is_not_used_while_tracing_or_under_transforms():
    rng = np.random.default_rng(3)
    w, v = svdpi.eig(torch.from_numpy(random_spd(4, rng, batch=(3,))))
    g = torch.from_numpy(rng.standard_normal((3, 4, 4)))
    expected = svdpi.eig_vjp(w, v, None, g)
    _native._cached_patterns.cache_clear()
    # vmap: the patterns are built per call, the result is the batched one.
    batched = torch.func.vmap(lambda wi, vi, gi: svdpi.eig_vjp(wi, vi, None, gi))(w, v, g)
    assert _native._cached_patterns.cache_info().currsize == 0
    assert_close(batched, expected, rtol=1e-14)
    # A fake tensor (export, compile) must never reach the cache.
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(x) for x in (w, v, g)]
        svdpi.eig_vjp(fake[0], fake[1], None, fake[2])
    assert _native._cached_patterns.cache_info().currsize == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite(dtype):
    assert _dispatch.native(xp_torch, "all_finite") is _native.all_finite
    finfo = torch.finfo(dtype)
    a = torch.full((2, 3, 3), finfo.max, dtype=dtype)  # a sum would overflow
    a[0, 0, 0] = finfo.min
    assert _native.all_finite(a)
    assert _native.all_finite(a.clone().requires_grad_(True))  # no warning, no graph
    for bad in (float("nan"), float("inf"), -float("inf")):
        b = a.clone()
        b[1, 2, 1] = bad
        assert not _native.all_finite(b)


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_whole_eig_vjp_bitwise_equal_to_the_cores(method, dtype):
    # svdpi.torch.eig's backward takes _native.eig_vjp (normalisation, product,
    # sandwich in direct torch operations): the core's eig_vjp, native paths
    # on or off, bit for bit.
    generator = torch.Generator().manual_seed(1)
    for kind, n, num_iters, with_values in itertools.product(
        SPECTRA, [1, 2, 7], [1, 19, 2**24], [True, False]
    ):
        w = _eigenvalues(kind, n, dtype, generator)
        q = torch.linalg.qr(torch.randn(3, n, n, generator=generator, dtype=torch.float64))[0]
        v = q.to(dtype)
        gw = torch.randn(3, n, generator=generator, dtype=torch.float64).to(dtype)
        gv = torch.randn(3, n, n, generator=generator, dtype=torch.float64).to(dtype)
        gw = gw if with_values else None
        got = _native.eig_vjp(w, v, gw, gv, method, num_iters)
        for enabled in (True, False):
            with _dispatch.native_paths(enabled):
                expected = svdpi.eig_vjp(
                    w, v, gw, gv, method=method, num_iters=num_iters, xp=xp_torch
                )
            torch.testing.assert_close(
                got, expected, rtol=0, atol=0, equal_nan=True, msg=f"{kind}, n={n}"
            )


def test_the_whole_eig_vjp_declines_and_backward_uses_it(monkeypatch):
    a = torch.from_numpy(random_spd(4, np.random.default_rng(2), batch=(2,)))
    w, v = svdpi.torch.eig(a)
    gv = torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(3))
    assert _native.eig_vjp(w[:, :0], v[:, :0, :0], None, gv[:, :0, :0], "pi", 19) is None
    with _dispatch.native_paths(False):
        assert _native.eig_vjp(w, v, None, gv, "pi", 19) is None
    with torch.enable_grad():
        assert _native.eig_vjp(w, v, None, gv.clone().requires_grad_(True), "pi", 19) is None
    calls = []
    original = _native.eig_vjp

    def counting(*args):
        result = original(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(_native, "eig_vjp", counting)
    x = a.clone().requires_grad_(True)
    svdpi.torch.eig(x).eigenvectors.backward(gv)
    assert calls == [True]
    expected = svdpi.eig_vjp(w, v, None, gv)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
