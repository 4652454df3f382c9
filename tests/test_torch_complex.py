"""svdpi.torch on complex Hermitian matrices: eig and the matrix functions (issue 17).

Oracles: the core's VJP/JVP/HVP (themselves tested against independent
oracles in test_complex_eig.py and test_complex_spectral_maps.py), autograd
through complex ``torch.linalg.eigh`` on separated spectra, and central
differences of the canonical eigenvectors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _complex_helpers import (
    hermitian_with_spectrum,
    phase_free,
    random_complex,
    random_hermitian,
)
from _helpers import assert_close

torch = pytest.importorskip("torch")

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402
from svdpi.functions import Exp, Log, Power  # noqa: E402

# The first forward-mode call in a process loads torch's JVP decompositions,
# which call the deprecated torch.jit.script (a warning from inside torch).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

METHODS = ("pi", "taylor", "analytic")


def _hermitian(spectrum, seed, batch=(2,), dtype=torch.complex128):
    a = hermitian_with_spectrum(spectrum, np.random.default_rng(seed), batch)
    return torch.tensor(a).to(dtype)


def _phase_free(v, seed):
    g = random_complex(np.random.default_rng(seed), tuple(v.shape))
    return torch.tensor(phase_free(v.detach().numpy(), g))


# ------------------------------------------------------------------------ eig


@pytest.mark.parametrize("method", METHODS)
def test_eig_forward_and_backward_are_the_cores(method):
    a = _hermitian([4.0, 2.0, 2.0, 1.0] if method != "analytic" else [4.0, 2.5, 1.5, 1.0], 0)
    x = a.clone().requires_grad_()
    w, v = svdpi.torch.eig(x, method=method)
    w_core, v_core = svdpi.eig(a)
    assert (w.dtype, v.dtype) == (torch.float64, torch.complex128)
    assert_close(w, w_core, rtol=1e-14)
    assert_close(v, v_core, rtol=1e-13)
    g_v = _phase_free(v, 1)
    g_w = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.autograd.backward((w, v), (g_w, g_v))
    expected = svdpi.eig_vjp(w.detach(), v.detach(), g_w, g_v, method=method)
    assert_close(x.grad, expected, rtol=1e-13)


def test_analytic_backward_equals_torch_linalg_eigh():
    a = _hermitian([5.0, 3.0, 2.0, 1.0], 3)
    x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
    w, v = svdpi.torch.eig(x, method="analytic")
    wt, vt = torch.linalg.eigh((y + y.mH) / 2)
    wt, vt = wt.flip(-1), vt.flip(-1)
    g = random_complex(np.random.default_rng(4), tuple(a.shape))
    # A phase-invariant loss of each: |V|² and the eigenvalues.
    weights = torch.tensor(np.abs(g))
    ((v.abs() ** 2 * weights).sum() + (w * w).sum()).backward()
    ((vt.abs() ** 2 * weights).sum() + (wt * wt).sum()).backward()
    assert_close(x.grad, y.grad.numpy(), rtol=1e-12)


def test_phase_dependent_loss_raises_eagerly_nan_under_torch_func_and_canonical_works():
    a = _hermitian([3.0, 2.0, 1.0], 5)
    x = a.clone().requires_grad_()
    _, v = svdpi.torch.eig(x)
    with pytest.raises(ValueError, match="arbitrary phase"):
        v.real.sum().backward()
    grad = torch.func.grad(lambda m: svdpi.torch.eig(m).eigenvectors.real.sum())(a)
    assert torch.isnan(grad).all()
    # canonical=True: the loss has a gradient, the core's canonical VJP, and
    # it matches central differences of the canonical eigenvectors.
    x = a.clone().requires_grad_()
    w, v = svdpi.torch.eig(x, canonical=True, method="analytic")
    v.real.sum().backward()
    expected = svdpi.eig_vjp(
        w.detach(), v.detach(), None, torch.ones_like(v), method="analytic", canonical=True
    )
    assert_close(x.grad, expected, rtol=1e-13)
    t = torch.tensor(random_hermitian(np.random.default_rng(6), tuple(a.shape)))

    def loss(m):
        return float(svdpi.eig(m, canonical=True).eigenvectors.real.sum())

    difference = (loss(a + 1e-6 * t) - loss(a - 1e-6 * t)) / 2e-6
    assert float((x.grad.conj() * t).real.sum()) == pytest.approx(difference, rel=1e-7)


@pytest.mark.parametrize("canonical", [False, True])
def test_forward_mode_is_the_core_jvp(canonical):
    a = _hermitian([4.0, 2.0, 2.0, 1.0], 7)
    t = torch.tensor(random_complex(np.random.default_rng(8), tuple(a.shape)))

    def eig(m):
        return tuple(svdpi.torch.eig(m, canonical=canonical))

    _, (dw, dv) = torch.func.jvp(eig, (a,), (t,))
    w, v = svdpi.eig(a, canonical=canonical)
    dw_core, dv_core = svdpi.eig_jvp(w, v, t, canonical=canonical)
    assert_close(dw, dw_core, rtol=1e-13)
    assert_close(dv, dv_core, rtol=1e-13)


def test_vmap_of_grad_matches_the_batched_backward_without_warnings():
    a = _hermitian([4.0, 2.0, 1.0], 9, batch=(3,))

    def loss(m):
        w, v = svdpi.torch.eig(m)
        return (v.abs() ** 3).sum() + w.sum()

    x = a.clone().requires_grad_()
    loss(x).backward()
    # pyproject turns warnings into errors: a conj_physical vmap fallback would fail here.
    assert_close(torch.func.vmap(torch.func.grad(loss))(a), x.grad.numpy(), rtol=1e-13)


def test_second_derivatives_raise():
    a = _hermitian([3.0, 2.0, 1.0], 10, batch=()).requires_grad_()
    w, v = svdpi.torch.eig(a)
    (grad,) = torch.autograd.grad((v.abs() ** 2).sum() + w.sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        grad.abs().sum().backward()


def test_complex64_and_meta_and_empty():
    a = _hermitian([3.0, 2.0, 1.0], 11, dtype=torch.complex64).requires_grad_()
    w, v = svdpi.torch.eig(a)
    assert (w.dtype, v.dtype) == (torch.float32, torch.complex64)
    (v.abs().sum() + w.sum()).backward()
    assert a.grad.dtype == torch.complex64
    meta = torch.zeros(2, 3, 3, dtype=torch.complex128, device="meta", requires_grad=True)
    w, v = svdpi.torch.eig(meta, canonical=True)
    assert (w.device.type, w.dtype, v.dtype) == ("meta", torch.float64, torch.complex128)
    empty = torch.zeros(0, 3, 3, dtype=torch.complex128, requires_grad=True)
    w, v = svdpi.torch.eig(empty)
    (v.abs().sum() + w.sum()).backward()
    assert empty.grad.shape == (0, 3, 3)


def test_check_finite_reads_real_and_imaginary_parts():
    for bad in (complex(np.nan, 0.0), complex(0.0, np.inf)):
        a = torch.eye(3, dtype=torch.complex128)
        a[0, 1] = bad
        with pytest.raises(ValueError, match="finite"):
            svdpi.torch.eig(a)
        with pytest.raises(ValueError, match="finite"):
            svdpi.torch.sqrtm(a)
    # |a| overflows, a is finite.
    big = torch.tensor([[0.0, 1e308 + 1e308j], [1e308 - 1e308j, 0.0]], dtype=torch.complex128)
    w, _ = svdpi.torch.eig(big)
    assert torch.isfinite(w).all()


# ----------------------------------------------------------- matrix functions


FUNCTIONS = {
    "sqrtm": (svdpi.torch.sqrtm, Power(0.5), torch.sqrt),
    "inv_sqrtm": (svdpi.torch.inv_sqrtm, Power(-0.5), torch.rsqrt),
    "logm": (svdpi.torch.logm, Log(), torch.log),
    "expm": (svdpi.torch.expm, Exp(), torch.exp),
    # A power above 1: the core sums its overflowing kernel terms apart.
    "matrix_power": (lambda m: svdpi.torch.matrix_power(m, 2.5), Power(2.5), lambda x: x**2.5),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matrix_functions_equal_autograd_through_eigh_and_the_core(name):
    function, fn, torch_fn = FUNCTIONS[name]
    a = _hermitian([4.0, 2.0, 1.0, 0.5], 12)
    g = torch.tensor(random_complex(np.random.default_rng(13), tuple(a.shape)))
    x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
    value = function(x)
    assert value.dtype == torch.complex128
    (value * g).real.sum().backward()
    wt, vt = torch.linalg.eigh((y + y.mH) / 2)
    reference = (vt * torch_fn(wt)[..., None, :].to(vt.dtype)) @ vt.mH
    (reference * g).real.sum().backward()
    assert_close(value.detach(), reference.detach().numpy(), rtol=1e-13)
    assert_close(x.grad, y.grad.numpy(), rtol=1e-12)
    w, v = svdpi.eig(a)
    assert_close(x.grad, svdpi.spectral_map_vjp(w, v, fn, g.conj()), rtol=1e-13)


def test_spectral_map_forward_mode_second_derivatives_and_repeated_eigenvalues():
    a = _hermitian([3.0, 1.0, 1.0, 0.5], 14)
    rng = np.random.default_rng(15)
    t = torch.tensor(random_hermitian(rng, tuple(a.shape)))
    g = torch.tensor(random_complex(rng, tuple(a.shape)))
    w, v = svdpi.eig(a)
    _, tangent = torch.func.jvp(lambda m: svdpi.torch.spectral_map(m, Log()), (a,), (t,))
    assert_close(tangent, svdpi.spectral_map_jvp(w, v, Log(), t), rtol=1e-13)
    x = a.clone().requires_grad_()
    (grad,) = torch.autograd.grad(
        (svdpi.torch.spectral_map(x, Log()) * g).real.sum(), x, create_graph=True
    )
    assert torch.isfinite(grad).all()
    (second,) = torch.autograd.grad((grad.conj() * t).real.sum(), x)
    assert_close(second, svdpi.spectral_map_hvp(w, v, Log(), g.conj(), t), rtol=1e-12)
    for method in ("pi", "taylor"):
        y = a.clone().requires_grad_()
        (svdpi.torch.inv_sqrtm(y, method=method) * g).real.sum().backward()
        expected = svdpi.spectral_map_vjp(w, v, Power(-0.5), g.conj(), method=method)
        assert_close(y.grad, expected, rtol=1e-13)


def test_matrix_functions_under_vmap_and_on_meta():
    a = _hermitian([3.0, 2.0, 1.0], 16, batch=(3,))
    g = torch.func.vmap(torch.func.grad(lambda m: svdpi.torch.sqrtm(m).real.sum()))(a)
    x = a.clone().requires_grad_()
    svdpi.torch.sqrtm(x).real.sum().backward()
    assert_close(g, x.grad.numpy(), rtol=1e-13)
    meta = torch.zeros(2, 3, 3, dtype=torch.complex64, device="meta")
    out = svdpi.torch.logm(meta)
    assert (out.device.type, out.dtype, tuple(out.shape)) == ("meta", torch.complex64, (2, 3, 3))


def test_compile_fullgraph_in_a_fresh_process():
    # A fresh interpreter: nothing imported by an earlier test may make it pass.
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        import svdpi.torch
        from svdpi.functions import Log

        def loss(m):
            w, v = svdpi.torch.eig(m)
            wc, vc = svdpi.torch.eig(m, canonical=True, method="taylor")
            return ((v.abs() ** 3).sum() + w.sum() + vc.real.sum()
                    + svdpi.torch.sqrtm(m).real.sum()
                    + (svdpi.torch.spectral_map(m, Log()) * (1 + 2j)).real.sum())

        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 4, generator=g, dtype=torch.complex128)
        a = x @ x.mH + torch.eye(4)
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        x1, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
        value = compiled(x1)
        value.backward()
        loss(x2).backward()
        torch.testing.assert_close(value, loss(a), rtol=1e-13, atol=0)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=0)

        # A phase-dependent loss cannot be checked while compiled: NaN, not a number.
        def bad(m):
            return svdpi.torch.eig(m).eigenvectors.real.sum()

        x3 = a.clone().requires_grad_(True)
        torch.compile(bad, fullgraph=True, backend="aot_eager")(x3).backward()
        assert torch.isnan(x3.grad).all()
        print("compiled ok")
        """
    )
    env = {**os.environ, "TORCHDYNAMO_VERBOSE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled ok" in result.stdout


def test_native_all_finite_takes_complex_tensors():
    from svdpi.torch import _native

    a = torch.zeros(3, 3, dtype=torch.complex64)
    assert _native.all_finite(a) is True
    a[1, 1] = complex(0.0, np.inf)
    assert _native.all_finite(a) is False
    a[1, 1] = complex(np.nan, 0.0)
    assert _native.all_finite(a) is False
    assert _native.all_finite(torch.full((2, 2), 3e38 + 3e38j, dtype=torch.complex64)) is True


def test_real_input_with_canonical_is_the_cores_and_changes_no_gradient():
    a = torch.tensor(np.random.default_rng(17).standard_normal((2, 4, 4)))
    a = a @ a.mT + torch.eye(4, dtype=a.dtype)
    g = torch.randn(2, 4, 4, dtype=a.dtype, generator=torch.Generator().manual_seed(18))
    x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
    w, v = svdpi.torch.eig(x, canonical=True)
    w_core, v_core = svdpi.eig(a, canonical=True)
    assert_close(v, v_core, rtol=1e-13)
    assert_close(w, w_core, rtol=1e-14)
    signs = (v.detach() * svdpi.torch.eig(a).eigenvectors).sum(-2)  # ±1 per column
    (v * g * signs.unsqueeze(-2)).sum().backward()
    (svdpi.torch.eig(y).eigenvectors * g).sum().backward()
    assert_close(x.grad, y.grad, rtol=1e-13)


@pytest.mark.parametrize("shape", [(0, 3, 3), (2, 0, 0)])
def test_matrix_functions_of_empty_complex_batches(shape):
    a = torch.zeros(shape, dtype=torch.complex64, requires_grad=True)
    out = svdpi.torch.inv_sqrtm(a)
    assert (out.shape, out.dtype) == (shape, torch.complex64)
    out.real.sum().backward()
    assert (a.grad.shape, a.grad.dtype) == (shape, torch.complex64)
    w, v = svdpi.torch.eig(a.detach().requires_grad_(), canonical=True)
    assert (w.shape, w.dtype, v.shape) == (shape[:-1], torch.float32, shape)


def test_hessian_vector_product_by_torch_func_is_the_cores():
    a = _hermitian([3.0, 1.0, 1.0, 0.5], 19, batch=())
    rng = np.random.default_rng(20)
    t = torch.tensor(random_hermitian(rng, tuple(a.shape)))
    g = torch.tensor(random_complex(rng, tuple(a.shape)))

    def loss(m):
        return (svdpi.torch.sqrtm(m) * g).real.sum()

    _, second = torch.func.jvp(torch.func.grad(loss), (a,), (t,))
    w, v = svdpi.eig(a)
    assert_close(second, svdpi.spectral_map_hvp(w, v, Power(0.5), g.conj(), t), rtol=1e-12)
