"""svdpi.torch.matrix_power / sqrtm / inv_sqrtm / logm / expm against independent oracles.

Oracles (float64): the matrix function through ``torch.linalg.eigh`` with
PyTorch's own autograd (the classical gradient, right on separated spectra)
and central finite differences (right everywhere, the matrix functions being
smooth even where eigenvalues repeat).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdpi.torch  # noqa: E402

from ._helpers import assert_close, random_spd, spd_with_spectrum  # noqa: E402

JIT_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"

# name -> (svdpi.torch function of a and keywords, scalar function of the eigenvalues)
FUNCTIONS = {
    "power -1": (lambda a, **kw: svdpi.torch.matrix_power(a, -1.0, **kw), lambda w: 1 / w),
    "inv_sqrtm": (svdpi.torch.inv_sqrtm, torch.rsqrt),
    "sqrtm": (svdpi.torch.sqrtm, torch.sqrt),
    "power 2": (lambda a, **kw: svdpi.torch.matrix_power(a, 2, **kw), torch.square),
    "power 0.3": (lambda a, **kw: svdpi.torch.matrix_power(a, 0.3, **kw), lambda w: w**0.3),
    "logm": (svdpi.torch.logm, torch.log),
    "expm": (svdpi.torch.expm, torch.exp),
}


def _spd(n, seed, batch=(), spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        return torch.from_numpy(random_spd(n, rng, batch=batch, ridge=0.1))
    return torch.from_numpy(spd_with_spectrum(spectrum, rng, batch=batch))


def _symmetric(shape, seed, dtype=torch.float64):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return (g + g.mT) / 2


def _through_eigh(a, scalar):
    w, v = torch.linalg.eigh(a)
    return (v * scalar(w)[..., None, :]) @ v.mT


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_the_function_of_the_eigenvalues(name, dtype):
    fn, scalar = FUNCTIONS[name]
    a = _spd(5, 0, batch=(3,))
    expected = _through_eigh(a, scalar)
    result = fn(a.to(dtype))
    assert result.dtype == dtype
    assert result.shape == a.shape
    assert_close(result, expected, rtol=1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("method", ["exact", "analytic"])
def test_gradient_equals_autograd_through_eigh_on_separated_spectra(name, method):
    fn, scalar = FUNCTIONS[name]
    a = _spd(6, 1, batch=(2,))
    g = _symmetric(a.shape, 2)
    x = a.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(_through_eigh(x, scalar), x, g)
    y = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(y, method=method), y, g)
    assert_close(grad, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["inv_sqrtm", "sqrtm", "logm"])
def test_pi_tends_to_exact_on_a_separated_spectrum(name):
    fn, _ = FUNCTIONS[name]
    a = _spd(4, 3, spectrum=[4.0, 2.0, 1.0, 0.5])
    g = _symmetric(a.shape, 4)

    def grad(**kw):
        x = a.clone().requires_grad_(True)
        return torch.autograd.grad(fn(x, **kw), x, g)[0]

    exact = grad(method="exact")
    errors = [
        float((grad(method="pi", num_iters=k) - exact).norm() / exact.norm()) for k in (5, 20, 60)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-12


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize(
    "spectrum",
    [
        [3.0, 2.0, 1.0, 0.5],
        [2.0, 1.0, 1.0, 0.5],
        [1.5, 1.0, 1.0, 1.0],
        [1.0, 1.0 + 1e-10, 0.7, 0.3],
    ],
    ids=["separated", "double", "triple", "clustered"],
)
def test_exact_gradient_against_finite_differences(name, spectrum):
    fn, _ = FUNCTIONS[name]
    a = _spd(4, 5, spectrum=spectrum)
    g = _symmetric(a.shape, 6)
    direction = _symmetric(a.shape, 7)
    x = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x, method="exact"), x, g)
    assert torch.isfinite(grad).all()
    h = 1e-5
    fd = ((fn(a + h * direction) - fn(a - h * direction)) * g).sum() / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("method", ["pi", "taylor", "analytic", "exact"])
def test_methods_share_the_forward(method):
    a = _spd(4, 8, batch=(2,))
    assert_close(svdpi.torch.sqrtm(a, method=method), svdpi.torch.sqrtm(a), rtol=0)


def test_exact_is_finite_at_repeated_eigenvalues_where_eigh_autograd_is_not():
    a = torch.eye(3, dtype=torch.float64) * 2.0
    g = _symmetric(a.shape, 9)
    x = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.inv_sqrtm(x, method="exact"), x, g)
    # f(A) = A^{-1/2} at A = 2I: the derivative is f'(2) · dA.
    assert_close(grad, -0.5 * 2.0**-1.5 * g, rtol=1e-14)
    y = a.clone().requires_grad_(True)
    (classical,) = torch.autograd.grad(_through_eigh(y, torch.rsqrt), y, g)
    assert not torch.isfinite(classical).all()


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("method", ["pi", "exact"])
def test_forward_mode_is_the_transpose_of_reverse_mode(method):
    a = _spd(4, 10, batch=(2,), spectrum=[2.0, 1.0, 1.0, 0.5])
    g = _symmetric(a.shape, 11)
    t = _symmetric(a.shape, 12)
    x = a.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(svdpi.torch.sqrtm(x, method=method), x, g)
    _, jvp = torch.func.jvp(lambda m: svdpi.torch.sqrtm(m, method=method), (a,), (t,))
    assert float((vjp * t).sum()) == pytest.approx(float((g * jvp).sum()), rel=1e-12)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(a, t)
        tangent = torch.autograd.forward_ad.unpack_dual(svdpi.torch.sqrtm(dual, method=method))[1]
    assert_close(tangent, jvp, rtol=1e-14)


def _vmap_matches_the_batched_call(fn):
    a = _spd(3, 13, batch=(4,))

    def loss(m):
        return (fn(m) ** 2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss))(a)
    x = a.clone().requires_grad_(True)
    (batched,) = torch.autograd.grad(loss(x), x)
    assert_close(per_sample, batched, rtol=1e-13)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_torch_func_transforms():
    _vmap_matches_the_batched_call(lambda m: svdpi.torch.sqrtm(m, method="exact"))
    _vmap_matches_the_batched_call(lambda m: svdpi.torch.logm(m, method="pi"))
    a = _spd(3, 13)
    jac_rev = torch.func.jacrev(lambda m: svdpi.torch.sqrtm(m, method="exact"))(a)
    jac_fwd = torch.func.jacfwd(lambda m: svdpi.torch.sqrtm(m, method="exact"))(a)
    assert_close(jac_fwd, jac_rev, rtol=1e-12)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_vmap_of_the_exact_gradient_of_a_floored_function():
    # The floor's slope is a where, not xp.sign: array-api-compat's torch sign
    # indexes with a boolean mask, which vmap cannot batch.
    _vmap_matches_the_batched_call(lambda m: svdpi.torch.logm(m, method="exact"))
    _vmap_matches_the_batched_call(lambda m: svdpi.torch.inv_sqrtm(m, method="exact"))


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
def test_second_derivatives_of_the_chain_rule_methods_raise_naming_the_function(method):
    a = _spd(3, 14).requires_grad_(True)
    calls = {
        "sqrtm": svdpi.torch.sqrtm,
        "inv_sqrtm": svdpi.torch.inv_sqrtm,
        "logm": svdpi.torch.logm,
        "expm": svdpi.torch.expm,
        "matrix_power": lambda m, **kw: svdpi.torch.matrix_power(m, 2.0, **kw),
    }
    for name, fn in calls.items():
        message = rf"svdpi\.torch\.{name} with method='{method}' is differentiable once"
        (grad,) = torch.autograd.grad(fn(a, method=method).sum(), a, create_graph=True)
        with pytest.raises(RuntimeError, match=message):
            grad.sum().backward()
        with pytest.raises(RuntimeError, match=message):
            torch.func.hessian(lambda m, fn=fn: fn(m, method=method).sum())(a.detach())
        with pytest.raises(RuntimeError, match=message):
            torch.func.jacfwd(torch.func.jacrev(lambda m, fn=fn: fn(m, method=method).sum()))(
                a.detach()
            )


def test_compile_fullgraph_in_a_fresh_process():
    # A fresh interpreter: dynamo's caches and config from other tests must
    # not decide whether this compiles.
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        import svdpi.torch

        def loss(m):
            root = svdpi.torch.sqrtm(m, method="exact")
            log = svdpi.torch.logm(m, method="pi")
            return (root**2).sum() + log.trace() + svdpi.torch.inv_sqrtm(m, method="exact").sum()

        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 4, generator=g, dtype=torch.float64)
        a = x @ x.T + torch.eye(4, dtype=torch.float64)
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        x1, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
        value = compiled(x1)
        value.backward()
        loss(x2).backward()
        torch.testing.assert_close(value, loss(a), rtol=1e-13, atol=0)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=0)
        print("compiled ok")
        """
    )
    env = {**os.environ, "TORCHDYNAMO_VERBOSE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled ok" in result.stdout


def test_n_zero_and_empty_batch_behave_like_eigh():
    for shape in [(0, 0), (3, 0, 0), (0, 4, 4)]:
        a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        expected = _through_eigh(a, torch.sqrt)
        result = svdpi.torch.sqrtm(a)
        assert result.shape == expected.shape == shape
        result.sum().backward()
        assert a.grad.shape == shape


@pytest.mark.parametrize("method", ["pi", "exact"])
def test_meta_tensors_give_shapes(method):
    a = torch.empty(3, 4, 4, device="meta", dtype=torch.float64, requires_grad=True)
    for fn in (svdpi.torch.sqrtm, svdpi.torch.inv_sqrtm, svdpi.torch.logm):
        result = fn(a, method=method)
        assert result.device.type == "meta"
        assert result.shape == a.shape
        result.sum().backward()
        assert a.grad.shape == a.shape


def test_bad_input_names_the_argument():
    a = torch.eye(3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"a must be a torch\.Tensor"):
        svdpi.torch.sqrtm(np.eye(2))
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        svdpi.torch.sqrtm(torch.eye(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="half precision"):
        svdpi.torch.logm(torch.eye(2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="a must be square"):
        svdpi.torch.inv_sqrtm(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="a must contain only finite values"):
        svdpi.torch.sqrtm(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.sqrtm(a, method="svd")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.torch.sqrtm(a, num_iters=0)
    for p in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="p must be finite"):
            svdpi.torch.matrix_power(a, p)
    for p in (1j, "0.5", None, True):
        with pytest.raises(TypeError, match="p must be a real number"):
            svdpi.torch.matrix_power(a, p)
