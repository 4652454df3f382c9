"""svdpi.torch on a CUDA device (``-m gpu``; skipped with the reason where PyTorch has none).

The torch adapter has its own fast paths (a native coefficient product,
grouped-moment kernels) that only a GPU runs on CUDA tensors. Each result
here is the same computation on the CPU, in float64, to round-off: the
eigenpairs and their gradient, the matrix functions and theirs, and the
layers' outputs and every gradient; and no backward synchronises with the
host (which would stall the GPU in every training step).

``SVDPI_GPU_TEST_DEVICE=cpu`` runs the comparisons CPU against CPU: a check
of these tests' own code on a machine without a GPU, not of the adapter.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from ._helpers import assert_close

DEVICE = os.environ.get("SVDPI_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.gpu


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    return torch


def _spd(torch, batch, n, *, seed, gap=0.3):
    """float64 SPD matrices with eigenvalues at least ``gap`` apart (for the analytic method)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((batch, n, n)))
    spectrum = 0.5 + gap * np.arange(n)[::-1] + 0.05 * rng.random((batch, n))
    return torch.as_tensor((q * spectrum[:, None, :]) @ np.swapaxes(q, -1, -2))


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
def test_eig_and_its_gradient_equal_the_cpu(torch, method):
    import svdpi.torch

    a = _spd(torch, 4, 6, seed=1)
    c = torch.as_tensor(np.random.default_rng(2).standard_normal((4, 6, 6)))
    d = torch.as_tensor(np.random.default_rng(3).standard_normal((4, 6)))

    def eig(leaf):
        w, v = svdpi.torch.eig(leaf, method=method)
        projectors = v[..., :, None, :] * v[..., None, :, :]  # sign-invariant
        loss = (c.to(leaf.device) * v * v).sum() + (d.to(leaf.device) * w).sum()
        return (w, projectors), loss

    (cpu, cpu_grad), (gpu, gpu_grad) = _on_both(torch, a, eig)
    for expected, actual in zip(cpu, gpu, strict=True):
        assert_close(actual, expected, rtol=1e-10)
    assert_close(gpu_grad, cpu_grad, rtol=1e-9)


@pytest.mark.parametrize("method", ["exact", "pi"])
@pytest.mark.parametrize("name", ["sqrtm", "inv_sqrtm", "logm"])
def test_matrix_functions_and_their_gradients_equal_the_cpu(torch, name, method):
    import svdpi.torch

    function = getattr(svdpi.torch, name)
    a = _spd(torch, 3, 8, seed=4, gap=0.05)
    g = torch.as_tensor(np.random.default_rng(5).standard_normal((3, 8, 8)))

    def apply(leaf):
        out = function(leaf, method=method)
        return (out,), (g.to(leaf.device) * out).sum()

    (cpu, cpu_grad), (gpu, gpu_grad) = _on_both(torch, a, apply)
    assert_close(gpu[0], cpu[0], rtol=1e-10)
    assert_close(gpu_grad, cpu_grad, rtol=1e-9)


def _layers(torch):
    import svdpi.torch

    return {
        "ZCAWhitening": lambda: svdpi.torch.ZCAWhitening(8, num_groups=2, dtype=torch.float64),
        "ZCAWhitening exact": lambda: svdpi.torch.ZCAWhitening(
            8, num_groups=2, method="exact", dtype=torch.float64
        ),
        "PCADenoising": lambda: svdpi.torch.PCADenoising(
            8, n_components=2, num_groups=2, dtype=torch.float64
        ),
        "CovariancePooling": lambda: svdpi.torch.CovariancePooling(0.5),
    }


@pytest.mark.parametrize(
    "name", ["ZCAWhitening", "ZCAWhitening exact", "PCADenoising", "CovariancePooling"]
)
def test_layers_equal_the_cpu_in_training_and_evaluation(torch, name):
    torch.manual_seed(6)
    layer = _layers(torch)[name]()
    with torch.no_grad():  # affine parameters away from 1 and 0, so their gradients differ
        for parameter in layer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x = torch.randn(16, 8, 5, 5, dtype=torch.float64) * torch.linspace(0.5, 2.0, 8)[:, None, None]
    grad = None
    results = []
    for device in ("cpu", DEVICE):
        module = copy.deepcopy(layer).to(device).train()
        leaf = x.detach().to(device).requires_grad_()
        out = module(leaf)
        if grad is None:
            grad = torch.randn_like(out.cpu())
        params = [leaf, *module.parameters()]
        grads = torch.autograd.grad(out, params, grad.to(device))
        module.eval()
        with torch.no_grad():
            evaluated = module(x.to(device))
        buffers = [b.detach().cpu() for b in module.buffers() if b.is_floating_point()]
        results.append(([out.detach().cpu(), evaluated.cpu()], [g.cpu() for g in grads], buffers))
    (cpu_out, cpu_grads, cpu_buffers), (gpu_out, gpu_grads, gpu_buffers) = results
    for expected, actual in zip(cpu_out + cpu_buffers, gpu_out + gpu_buffers, strict=True):
        assert_close(actual, expected, rtol=1e-9)
    for expected, actual in zip(cpu_grads, gpu_grads, strict=True):
        assert_close(actual, expected, rtol=1e-8)


def test_backward_passes_do_not_synchronise(torch):
    """Only ``check_finite`` reads values on the host (the docs say so): no backward syncs.

    ``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising
    CUDA call, a device-to-host read and a blocking host-to-device copy (a
    tensor made from a Python number on the device) alike.
    """
    if DEVICE != "cuda":
        pytest.skip("the synchronisation check is CUDA's")
    import svdpi.torch

    a = _spd(torch, 8, 6, seed=7).to(DEVICE, torch.float32)
    x = torch.randn(32, 8, 4, 4, device=DEVICE)
    zca = svdpi.torch.ZCAWhitening(8, num_groups=2, check_finite=False).to(DEVICE).train()
    losses = {
        "eig": lambda: sum(t.sum() for t in svdpi.torch.eig(leaf, check_finite=False)),
        "sqrtm exact": lambda: svdpi.torch.sqrtm(leaf, method="exact", check_finite=False).sum(),
        "inv_sqrtm pi": lambda: svdpi.torch.inv_sqrtm(leaf, method="pi", check_finite=False).sum(),
        "ZCAWhitening": lambda: zca(leaf).square().sum(),
    }
    synchronised = {}
    for name, loss_of in losses.items():
        for checked in (False, True):  # the first backward pays any one-time set-up
            leaf = (x if name == "ZCAWhitening" else a).clone().requires_grad_()
            loss = loss_of()
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
