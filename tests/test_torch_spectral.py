"""svdpi.torch.spectral_map: one autograd node for any SpectralFunction, against oracles.

Oracles (float64): the function through ``torch.linalg.eigh`` (or
``torch.linalg.matrix_exp``) with PyTorch's own autograd, right on
well-separated spectra; central finite differences, right everywhere the
function is smooth (also at repeated eigenvalues); the core's VJP and JVP on
the same eigenpairs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402
from svdpi.functions import Abs, Clamp, Custom, Exp, Log, Power, Softplus  # noqa: E402

from ._helpers import assert_close, spd_with_spectrum  # noqa: E402

# torch.func's first use in a process warns about torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _tanh_derivative(x):
    return 1 - torch.tanh(x) ** 2


def _tanh_second_derivative(x):
    t = torch.tanh(x)
    return -2 * t * (1 - t**2)


TANH = Custom(torch.tanh, _tanh_derivative, _tanh_second_derivative)

# name -> (function, the same on eigenvalues with torch operations, spectrum of the tests)
CASES = {
    "sqrt": (Power(0.5), torch.sqrt),
    "inv_sqrt": (Power(-0.5), torch.rsqrt),
    "power 3": (Power(3.0), lambda w: w**3),
    "log": (Log(), torch.log),
    "exp": (Exp(), torch.exp),
    "clamp": (Clamp(0.6), lambda w: w.clamp_min(0.6)),
    "softplus": (Softplus(), torch.nn.functional.softplus),
    "abs": (Abs(), torch.abs),
    "custom tanh": (TANH, torch.tanh),
}
# Positive and well separated, none at Clamp's kink (0.6).
SEPARATED = [3.0, 2.0, 1.2, 0.5, 0.3]
# Repeated eigenvalues (a triple and a double), none at the kink.
TIES = [2.0, 1.5, 1.5, 1.5, 0.4]


def _spd(spectrum, seed, batch=(2,)):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(spd_with_spectrum(np.array(spectrum), rng, batch=batch))


def _symmetric(shape, seed, dtype=torch.float64):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return (g + g.mT) / 2


def _through_eigh(a, scalar):
    w, v = torch.linalg.eigh(a)
    return (v * scalar(w)[..., None, :]) @ v.mT


@pytest.mark.parametrize("name", CASES)
def test_forward_is_the_function_of_the_eigenvalues(name):
    fn, scalar = CASES[name]
    a = _spd(SEPARATED, 0)
    assert_close(svdpi.torch.spectral_map(a, fn), _through_eigh(a, scalar), rtol=1e-13)
    result = svdpi.torch.spectral_map(a.float(), fn)
    assert result.dtype == torch.float32
    assert_close(result, _through_eigh(a, scalar), rtol=2e-6)


def test_exp_is_torch_matrix_exp_and_expm():
    a = _symmetric((3, 4, 4), 1)
    assert_close(svdpi.torch.spectral_map(a, Exp()), torch.linalg.matrix_exp(a), rtol=1e-13)
    assert_close(svdpi.torch.expm(a), torch.linalg.matrix_exp(a), rtol=1e-13)
    x = a.clone().requires_grad_(True)
    y = a.clone().requires_grad_(True)
    g = _symmetric(a.shape, 2)
    (expected,) = torch.autograd.grad(torch.linalg.matrix_exp(x), x, g)
    (grad,) = torch.autograd.grad(svdpi.torch.expm(y), y, g)
    # matrix_exp's own gradient is exact for any spectrum; for symmetric g it is symmetric.
    assert_close(grad, expected, rtol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_gradient_equals_autograd_through_eigh_on_separated_spectra(name):
    fn, scalar = CASES[name]
    a = _spd(SEPARATED, 3)
    g = _symmetric(a.shape, 4)
    x = a.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(_through_eigh(x, scalar), x, g)
    y = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.spectral_map(y, fn), y, g)
    assert_close(grad, expected, rtol=1e-10)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("spectrum", [SEPARATED, TIES], ids=["separated", "ties"])
def test_exact_gradient_against_finite_differences(name, spectrum):
    fn, _ = CASES[name]
    a = _spd(spectrum, 5)
    g = _symmetric(a.shape, 6)
    direction = _symmetric(a.shape, 7)
    x = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.spectral_map(x, fn), x, g)
    assert torch.isfinite(grad).all()
    h = 1e-5

    def f(m):
        return svdpi.torch.spectral_map(m, fn)

    fd = ((f(a + h * direction) - f(a - h * direction)) * g).sum() / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("method", ["exact", "pi", "taylor", "analytic"])
@pytest.mark.parametrize("name", ["inv_sqrt", "log", "exp", "custom tanh"])
def test_backward_and_forward_mode_are_the_cores(method, name):
    fn, _ = CASES[name]
    spectrum = SEPARATED if method == "analytic" else TIES
    a = _spd(spectrum, 8)
    g = _symmetric(a.shape, 9)
    t = _symmetric(a.shape, 10)
    # The same eigenpairs in NumPy: at a repeated eigenvalue the chain-rule
    # gradients depend on the basis an eigensolver picks.
    w, v = svdpi.eig(a)
    options = {"method": method, "num_iters": 7}
    x = a.clone().requires_grad_(True)
    value = svdpi.torch.spectral_map(x, fn, **options)
    value.backward(g)
    assert_close(value, svdpi.spectral_map(w, v, fn), rtol=1e-14)
    assert_close(x.grad, svdpi.spectral_map_vjp(w, v, fn, g, **options), rtol=1e-12)
    _, tangent = torch.func.jvp(lambda m: svdpi.torch.spectral_map(m, fn, **options), (a,), (t,))
    assert_close(tangent, svdpi.spectral_map_jvp(w, v, fn, t, **options), rtol=1e-12)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(a, t)
        out = svdpi.torch.spectral_map(dual, fn, **options)
        assert_close(torch.autograd.forward_ad.unpack_dual(out).tangent, tangent, rtol=1e-14)


@pytest.mark.parametrize("name", ["sqrt", "log", "clamp", "custom tanh"])
def test_torch_func_transforms(name):
    fn, _ = CASES[name]
    a = _spd(TIES, 11, batch=(3,))

    def loss(m):
        return (svdpi.torch.spectral_map(m, fn) ** 2).sum()

    x = a.clone().requires_grad_(True)
    loss(x).backward()
    assert_close(torch.func.grad(loss)(a), x.grad, rtol=1e-13)
    assert_close(torch.func.vmap(torch.func.grad(loss))(a), x.grad, rtol=1e-13)
    one = a[0]
    jac_rev = torch.func.jacrev(lambda m: svdpi.torch.spectral_map(m, fn))(one)
    jac_fwd = torch.func.jacfwd(lambda m: svdpi.torch.spectral_map(m, fn))(one)
    assert_close(jac_fwd, jac_rev, rtol=1e-12)
    batched = torch.func.vmap(lambda m: svdpi.torch.spectral_map(m, fn))(a)
    assert_close(batched, svdpi.torch.spectral_map(a, fn), rtol=1e-14)


def test_matrix_functions_are_spectral_maps_with_the_exact_default():
    a = _spd(TIES, 12)
    g = _symmetric(a.shape, 13)
    pairs = [
        (svdpi.torch.sqrtm, Power(0.5)),
        (svdpi.torch.inv_sqrtm, Power(-0.5)),
        (svdpi.torch.logm, Log()),
        (svdpi.torch.expm, Exp()),
        (lambda m, **kw: svdpi.torch.matrix_power(m, -1.0, **kw), Power(-1.0)),
    ]
    for function, fn in pairs:
        x = a.clone().requires_grad_(True)
        y = a.clone().requires_grad_(True)
        (default,) = torch.autograd.grad(function(x), x, g)
        (exact,) = torch.autograd.grad(svdpi.torch.spectral_map(y, fn, method="exact"), y, g)
        assert torch.equal(default, exact)


def test_bad_input_names_the_argument():
    a = torch.eye(3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"fn must be a svdpi\.functions\.SpectralFunction"):
        svdpi.torch.spectral_map(a, torch.sqrt)
    with pytest.raises(TypeError, match=r"fn must be a svdpi\.functions\.SpectralFunction"):
        svdpi.torch.spectral_map(a, 0.5)
    with pytest.raises(TypeError, match=r"a must be a torch\.Tensor"):
        svdpi.torch.spectral_map(np.eye(2), Exp())
    with pytest.raises(ValueError, match="a must be square"):
        svdpi.torch.spectral_map(torch.zeros(2, 3), Exp())
    with pytest.raises(ValueError, match="a must contain only finite values"):
        svdpi.torch.spectral_map(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), Exp())
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.spectral_map(a, Exp(), method="svd")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.torch.spectral_map(a, Exp(), num_iters=0)


@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 0, 0), (0, 0)])
@pytest.mark.parametrize("fn", [Exp(), Power(-0.5), TANH], ids=["exp", "inv_sqrt", "tanh"])
def test_empty_input_gives_an_empty_result_and_gradient(shape, fn):
    # Like code built on torch.linalg.eigh: n = 0 and empty batches are valid.
    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    out = svdpi.torch.spectral_map(a, fn)
    assert out.shape == a.shape
    (grad,) = torch.autograd.grad(out.sum(), a, create_graph=True)
    assert grad.shape == a.shape
    grad.sum().backward()
    assert a.grad.shape == a.shape


@pytest.mark.parametrize("method", ["exact", "pi"])
def test_meta_tensors_give_shapes(method):
    a = torch.empty(3, 4, 4, device="meta", dtype=torch.float64, requires_grad=True)
    for fn in (Exp(), Log(), Clamp(0.1), TANH):
        result = svdpi.torch.spectral_map(a, fn, method=method)
        assert result.device.type == "meta"
        assert result.shape == a.shape
        result.sum().backward()
        assert a.grad.shape == a.shape


def test_compiles_without_graph_break_in_a_fresh_process():
    # A fresh interpreter: nothing imported by an earlier test may make it pass.
    # Built-ins are compared by value, Custom by its callables: both are
    # constants of the graph.
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        import svdpi.torch
        from svdpi.functions import Clamp, Custom, Exp, Log, Power

        def dtanh(x):
            return 1 - torch.tanh(x) ** 2

        tanh = Custom(torch.tanh, dtanh)

        def loss(m):
            total = (svdpi.torch.spectral_map(m, Exp()) ** 2).sum()
            total = total + svdpi.torch.spectral_map(m, tanh).sum()
            total = total + svdpi.torch.spectral_map(m, Clamp(0.5), method="pi").sum()
            total = total + svdpi.torch.logm(m).diagonal(dim1=-2, dim2=-1).sum()
            total = total + svdpi.torch.sqrtm(m).sum()
            return total + svdpi.torch.matrix_power(m, -1.0).sum()

        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
        a = x @ x.mT / 4 + 0.1 * torch.eye(4, dtype=torch.float64)
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
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "compiled ok"
