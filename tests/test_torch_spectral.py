"""svdpi.torch._spectral: a matrix function of eig(a) as one node with the core's derivatives."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import array_api_compat.torch as xp_torch  # noqa: E402

import svdpi  # noqa: E402
from svdpi.torch._spectral import SpectralMap, spectral_map  # noqa: E402

from ._helpers import assert_close, spd_with_spectrum  # noqa: E402

# torch.func's first use in a process warns about torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


@dataclasses.dataclass(frozen=True)
class _Whitening(SpectralMap):
    num_iters: int = 19

    def value(self, eigenvalues, eigenvectors):
        return svdpi.zca_whitening_matrix(eigenvalues, eigenvectors, xp=xp_torch)

    def vjp(self, eigenvalues, eigenvectors, grad):
        return svdpi.zca_whitening_matrix_vjp(
            eigenvalues, eigenvectors, grad, num_iters=self.num_iters, xp=xp_torch
        )


@dataclasses.dataclass(frozen=True)
class _Reconstruction(SpectralMap):
    """``V diag(λ) Vᵀ = sym(a)``: its derivatives are known without eig."""

    def value(self, eigenvalues, eigenvectors):
        return (eigenvectors * eigenvalues[..., None, :]) @ eigenvectors.mT

    def vjp(self, eigenvalues, eigenvectors, grad):
        return (grad + grad.mT) / 2

    def jvp(self, eigenvalues, eigenvectors, tangent_a):
        return (tangent_a + tangent_a.mT) / 2


def _spd(seed, spectrum=(3.0, 1.0, 1.0, 0.5), batch=(2,)):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(spd_with_spectrum(np.array(spectrum), rng, batch=batch))


def test_backward_is_the_cores_vjp():
    # A repeated eigenvalue: the core's VJP is finite there, autograd through eigh is not.
    a = _spd(0)
    g = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(1))
    x = a.clone().requires_grad_(True)
    value = spectral_map(x, _Whitening(num_iters=7))
    value.backward(g)
    # The same eigenpairs in NumPy (at a repeated eigenvalue the power-iteration
    # gradient depends on the basis an eigensolver picks).
    w, v = (t.numpy() for t in svdpi.eig(a))
    assert_close(value, svdpi.zca_whitening_matrix(w, v), rtol=1e-12)
    assert_close(x.grad, svdpi.zca_whitening_matrix_vjp(w, v, g.numpy(), num_iters=7), rtol=1e-12)


def test_torch_func_transforms():
    a = _spd(2)
    t = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(3))

    def loss(m):
        return (spectral_map(m, _Whitening()) ** 2).sum()

    x = a.clone().requires_grad_(True)
    loss(x).backward()
    assert_close(torch.func.grad(loss)(a), x.grad, rtol=1e-13)
    assert_close(torch.func.vmap(torch.func.grad(loss))(a), x.grad, rtol=1e-13)
    # Forward mode where the map defines it, eager and under torch.func.
    reconstruction = _Reconstruction()
    _, tangent = torch.func.jvp(lambda m: spectral_map(m, reconstruction), (a,), (t,))
    assert_close(tangent, (t + t.mT) / 2, rtol=1e-14)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(a, t)
        tangent = torch.autograd.forward_ad.unpack_dual(spectral_map(dual, reconstruction)).tangent
    assert_close(tangent, (t + t.mT) / 2, rtol=1e-14)
    with pytest.raises(NotImplementedError, match="no forward-mode derivative"):
        torch.func.jvp(lambda m: spectral_map(m, _Whitening()), (a,), (t,))


def test_second_derivatives_raise():
    a = _spd(4).requires_grad_(True)
    (grad,) = torch.autograd.grad(spectral_map(a, _Whitening()).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        grad.sum().backward()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.func.jacrev(torch.func.grad(lambda m: spectral_map(m, _Whitening()).sum()))(
            a.detach()
        )
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.func.hessian(lambda m: (spectral_map(m, _Reconstruction()) ** 2).sum())(a.detach())


def test_compiles_without_graph_break_in_a_fresh_process():
    # A fresh interpreter: nothing imported by an earlier test may make it pass.
    script = textwrap.dedent(
        """
        import dataclasses, warnings
        warnings.simplefilter("ignore", FutureWarning)
        import array_api_compat.torch as xp_torch
        import torch, svdpi
        from svdpi.torch._spectral import SpectralMap, spectral_map

        @dataclasses.dataclass(frozen=True)
        class W(SpectralMap):
            num_iters: int = 19
            def value(self, w, v):
                return svdpi.zca_whitening_matrix(w, v, xp=xp_torch)
            def vjp(self, w, v, g):
                return svdpi.zca_whitening_matrix_vjp(
                    w, v, g, num_iters=self.num_iters, xp=xp_torch
                )

        def loss(m):
            return (spectral_map(m, W(num_iters=5)) ** 2).sum()

        a = torch.randn(2, 4, 6, dtype=torch.float64)
        a = a @ a.mT / 6
        x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
        torch.compile(loss, fullgraph=True, backend="aot_eager")(x).backward()
        loss(y).backward()
        assert torch.allclose(x.grad, y.grad, rtol=1e-12), (x.grad, y.grad)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_bad_input():
    with pytest.raises(TypeError, match="SpectralMap"):
        spectral_map(torch.eye(2), lambda w, v: v)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        spectral_map(np.eye(2), _Whitening())
    with pytest.raises(ValueError, match="square"):
        spectral_map(torch.zeros(2, 3), _Whitening())
    with pytest.raises(ValueError, match="finite"):
        spectral_map(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), _Whitening())


@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 0, 0), (0, 0)])
def test_empty_input_gives_an_empty_result_and_gradient(shape):
    # Like code built on torch.linalg.eigh: n = 0 and empty batches are valid.
    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    out = svdpi.torch.inv_sqrtm(a, method="exact")
    assert out.shape == a.shape
    out.sum().backward()
    assert a.grad.shape == a.shape
