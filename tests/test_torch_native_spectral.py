"""svdpi.torch's direct-torch spectral map and exact VJP are the core's, bit for bit.

White-box (``svdpi.torch._native_spectral``, the fast path of the backward
pass of ``svdpi.torch.spectral_map``): on every domain, at ties, with
clamped eigenvalues, singular matrices (the moving floor), the zero matrix,
tiny and huge scales, float32 and float64, its result must equal
:func:`svdpi.spectral_map_vjp` exactly; where it declines, the core runs.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import array_api_compat.torch as xp_torch  # noqa: E402

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402
from svdpi.functions import Abs, Clamp, Custom, Exp, Log, Power, Softplus  # noqa: E402
from svdpi.torch import _native_spectral  # noqa: E402

from ._helpers import spd_with_spectrum  # noqa: E402


def _tanh_derivative(x):
    return 1 - torch.tanh(x) ** 2


FUNCTIONS = {
    "sqrt": Power(0.5),
    "inv_sqrt": Power(-0.5),
    "inverse": Power(-1.0),
    "cube root": Power(1.0 / 3.0),
    "power 0.3": Power(0.3),
    "power 1": Power(1.0),
    "indicator": Power(0.0),
    "log": Log(),
    "exp": Exp(),
    "clamp": Clamp(0.5),
    "softplus": Softplus(),
    "abs": Abs(),
    "tanh": Custom(torch.tanh, _tanh_derivative),
}
SPECTRA = {
    "separated": [3.0, 2.0, 1.0, 0.5, 0.25],
    "ties": [2.0, 1.0, 1.0, 1.0, 0.5],
    "negative": [2.0, 1.0, 0.5, -1e-7, -0.3],  # clamped by "nonnegative" and "positive"
    "singular": [4.0, 1.0, 0.5, 1e-20, 0.0],  # the moving floor of "positive"
    "top tie": [2.0, 2.0, 1.0, 1e-20, 0.0],  # the floor's slope is NaN: max|λ| is shared
    "zero": [0.0, 0.0, 0.0, 0.0, 0.0],
}
SCALES = [1.0, 1e-30, 1e30]


def _problem(spectrum, scale, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = spd_with_spectrum(np.array(spectrum) * scale, rng, batch=(3,))
    g = rng.standard_normal(a.shape)
    a, g = (torch.from_numpy(x).to(dtype) for x in (a, g))
    w, v = svdpi.eig(a, xp=xp_torch)
    return w, v, g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("scale", SCALES, ids=["unit", "tiny", "huge"])
@pytest.mark.parametrize("spectrum", SPECTRA)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_bitwise_the_cores_exact_vjp(name, spectrum, scale, dtype):
    fn = FUNCTIONS[name]
    w, v, g = _problem(SPECTRA[spectrum], scale, dtype)
    with np.errstate(all="ignore"):
        expected = svdpi.spectral_map_vjp(w, v, fn, g, method="exact", xp=xp_torch)
    got = _native_spectral.exact_vjp(fn, w, v, g)
    if got is None:
        # Declined only where e^λ overflows: the core sums those kernel
        # entries apart (±inf where the derivative overflows, never NaN).
        assert isinstance(fn, Exp)
        assert scale == 1e30
        assert not expected.isnan().any()
        return
    assert got is not None
    # Bit for bit, NaN where the core has NaN (equal_nan), infinities included.
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("scale", SCALES, ids=["unit", "tiny", "huge"])
@pytest.mark.parametrize("spectrum", SPECTRA)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_value_bitwise_the_cores_spectral_map(name, spectrum, scale, dtype):
    fn = FUNCTIONS[name]
    w, v, _ = _problem(SPECTRA[spectrum], scale, dtype)
    with np.errstate(all="ignore"):
        expected = svdpi.spectral_map(w, v, fn, xp=xp_torch)
    got = _native_spectral.value(fn, w, v)
    if got is None:  # only where e^λ overflows: the core sums those terms apart
        assert isinstance(fn, Exp)
        assert scale == 1e30
        assert not expected.isnan().any()
        return
    assert got is not None
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))


def test_a_broadcast_cotangent_and_a_transposed_one():
    # What backward hands over: .sum() gives an expanded tensor of ones.
    w, v, g = _problem(SPECTRA["ties"], 1.0, torch.float64)
    for cotangent in (torch.ones((), dtype=g.dtype).expand_as(g), g.mT):
        expected = svdpi.spectral_map_vjp(w, v, Power(0.5), cotangent, xp=xp_torch)
        assert torch.equal(_native_spectral.exact_vjp(Power(0.5), w, v, cotangent), expected)


def test_declines_what_it_does_not_restate():
    w, v, g = _problem(SPECTRA["separated"], 1.0, torch.float64)
    assert _native_spectral.exact_vjp(Power(2.0), w, v, g) is None  # the core's split sum
    assert _native_spectral.value(Power(2.0), w, v) is None  # its overflow-safe forward
    assert _native_spectral.value(Power(-1.5), w, v) is None
    assert _native_spectral.value(Log(), w, v) is not None
    assert _native_spectral.exact_vjp(Power(0.5), w[:, :0], v[:, :0, :0], g[:, :0, :0]) is None
    tracked = g.clone().requires_grad_(True)
    assert _native_spectral.exact_vjp(Exp(), w, v, tracked) is None  # autograd records it
    with torch.enable_grad():
        assert _native_spectral.exact_vjp(Exp(), w, v, tracked) is None
    # Under a torch.func transform the node takes the core's path.
    answers = []

    def probe(a, b, c):
        answers.append(_native_spectral.exact_vjp(Exp(), a, b, c))
        return a

    torch.func.vmap(probe)(w, v, g)
    assert answers == [None]


@pytest.mark.parametrize("name", ["sqrt", "inv_sqrt", "log", "exp", "tanh"])
def test_backward_takes_it_and_equals_the_generic_path(name, monkeypatch):
    fn = FUNCTIONS[name]
    w, v, g = _problem(SPECTRA["ties"], 1.0, torch.float64)
    a = (v * w[..., None, :]) @ v.mT
    calls = []
    original = _native_spectral.exact_vjp

    def counting(*args):
        result = original(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(svdpi.torch._spectral, "exact_vjp", counting)
    x = a.clone().requires_grad_(True)
    svdpi.torch.spectral_map(x, fn).backward(g)
    assert calls == [True]
    y = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.spectral_map(y, fn), y, g, create_graph=True)
    # create_graph=True: the node with derivatives, through the core.
    assert calls == [True]
    torch.testing.assert_close(x.grad, grad.detach(), rtol=0, atol=0)
