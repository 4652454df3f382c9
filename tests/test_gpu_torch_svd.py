"""svdpi.torch's SVD on a CUDA device (``-m gpu``; skipped with the reason where PyTorch has none).

As ``tests/test_gpu_torch.py`` does for the eigendecomposition: each result
is the same computation on the CPU, in float64 / complex128, to round-off
(the factors up to their sign or phase, through phase-free losses), and no
backward pass synchronises with the host, except the documented phase check
of complex input without ``canonical``.

``SVDPI_GPU_TEST_DEVICE=cpu`` runs the comparisons CPU against CPU: a check
of these tests' own code on a machine without a GPU, not of the adapter.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _svd_helpers import assert_close, random_matrix, with_singular_values

DEVICE = os.environ.get("SVDPI_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.gpu


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    return torch


def _matrix(torch, m, n, *, seed, complex_=False, spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        return torch.as_tensor(random_matrix(rng, (3, m, n), complex_))
    return torch.as_tensor(
        with_singular_values(rng, m, n, spectrum, batch=(3,), complex_=complex_)
    )


def _on_both(torch, a, function):
    """``function(leaf) -> (outputs, loss)`` on the CPU and on DEVICE: outputs and gradients."""
    results = []
    for device in ("cpu", DEVICE):
        leaf = a.detach().to(device).requires_grad_()
        outputs, loss = function(leaf)
        loss.backward()
        assert leaf.grad.device.type == torch.device(device).type
        results.append(([o.detach().cpu() for o in outputs], leaf.grad.cpu()))
    return results


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("m", "n"), [(6, 4), (4, 6)])
def test_svd_and_its_gradient_equal_the_cpu(torch, m, n, complex_, method):
    import svdpi.torch

    spectrum = [3.0, 2.0, 1.0, 0.5] if method == "analytic" else [3.0, 1.0, 1.0, 0.0]
    a = _matrix(torch, m, n, seed=1, complex_=complex_, spectrum=spectrum)

    def function(leaf):
        u, s, vh = svdpi.torch.svd(leaf, method=method)
        # Phase-free: |U|, |Vh|, and U diag(S) Vh.
        loss = (u.abs() ** 3).sum() + (vh.abs() ** 3).sum() + s.sum()
        return ((u * s[..., None, :].to(u.dtype)) @ vh, s), loss

    (cpu_out, cpu_grad), (gpu_out, gpu_grad) = _on_both(torch, a, function)
    for expected, actual in zip(cpu_out, gpu_out, strict=True):
        assert_close(actual, expected, rtol=1e-12)
    assert_close(gpu_grad, cpu_grad, rtol=1e-9)


@pytest.mark.parametrize("name", ["polar", "low_rank", "square"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_maps_and_their_gradients_equal_the_cpu(torch, name, complex_):
    import svdpi.torch
    from svdpi.functions import Power

    functions = {
        "polar": svdpi.torch.polar,
        "low_rank": lambda x: svdpi.torch.low_rank(x, 2),
        "square": lambda x: svdpi.torch.singular_value_map(x, Power(2.0)),
    }
    a = _matrix(torch, 5, 4, seed=2, complex_=complex_, spectrum=[3.0, 2.0, 1.0, 1.0])
    g = _matrix(torch, 5, 4, seed=3, complex_=complex_)

    def function(leaf):
        y = functions[name](leaf)
        return (y,), (y.conj() * g.to(leaf.device)).real.sum()

    (cpu_out, cpu_grad), (gpu_out, gpu_grad) = _on_both(torch, a, function)
    assert_close(gpu_out[0], cpu_out[0], rtol=1e-12)
    assert_close(gpu_grad, cpu_grad, rtol=1e-9)


def test_backward_passes_do_not_synchronise(torch):
    """No SVD backward reads values on the host, but for the complex phase check.

    ``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising
    CUDA call: a device-to-host read, and a blocking host-to-device copy.
    """
    if DEVICE != "cuda":
        pytest.skip("the synchronisation check is CUDA's")
    import svdpi.torch

    real = _matrix(torch, 6, 4, seed=4).to(DEVICE, torch.float32)
    complex_ = _matrix(torch, 6, 4, seed=5, complex_=True).to(DEVICE, torch.complex64)
    losses = {
        "svd pi": (
            real,
            lambda x: sum(t.abs().sum() for t in svdpi.torch.svd(x, check_finite=False)),
        ),
        "svd analytic": (
            real,
            lambda x: svdpi.torch.svd(x, method="analytic", check_finite=False).U.pow(3).sum(),
        ),
        "svd complex canonical": (
            complex_,
            lambda x: svdpi.torch.svd(x, canonical=True, check_finite=False).U.real.sum(),
        ),
        "polar": (real, lambda x: svdpi.torch.polar(x, check_finite=False).pow(2).sum()),
        "low_rank complex": (
            complex_,
            lambda x: svdpi.torch.low_rank(x, 2, check_finite=False).abs().sum(),
        ),
    }
    synchronised = {}
    for name, (a, loss_of) in losses.items():
        for checked in (False, True):  # the first backward pays any one-time set-up
            leaf = a.clone().requires_grad_()
            loss = loss_of(leaf)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error" if checked else "default")
            try:
                loss.backward()
            except RuntimeError as error:
                if not checked:
                    raise
                synchronised[name] = str(error).splitlines()[0]
            finally:
                torch.cuda.set_sync_debug_mode("default")
    assert not synchronised, f"backward passes that synchronised: {synchronised}"
    # The documented exception: complex input without canonical reads one boolean.
    leaf = complex_.clone().requires_grad_()
    loss = svdpi.torch.svd(leaf, check_finite=False).U.abs().sum()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
