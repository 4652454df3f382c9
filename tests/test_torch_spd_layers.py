"""svdpi.torch.spd's eigenvalue layers: ReEig, LogEig, ExpEig, PowerEig.

Oracles: ``V f(Λ) Vᵀ`` through ``torch.linalg.eigh`` for values; autograd
through ``eigh`` (the exact derivative where the spectrum is well separated)
and central differences for gradients; at equal and nearly equal
eigenvalues, the Daleckii–Krein derivative with 80-digit divided differences
(``tests/_mpmath_oracles.py``) on diagonal input, whose eigenvalues every
eigensolver returns exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mpmath")

from svdpi.functions import Clamp, Exp, Log, Power  # noqa: E402
from svdpi.torch import spd  # noqa: E402
from svdpi.torch.spd import functional as F  # noqa: E402

from ._helpers import assert_close  # noqa: E402
from ._mpmath_oracles import divided_difference, oracle_for  # noqa: E402

LAYERS = {
    "ReEig": (lambda **k: spd.ReEig(0.3, **k), lambda w: w.clamp_min(0.3), Clamp(0.3)),
    "LogEig": (lambda **k: spd.LogEig(**k), torch.log, Log()),
    "ExpEig": (lambda **k: spd.ExpEig(**k), torch.exp, Exp()),
    "PowerEig": (lambda **k: spd.PowerEig(-0.5, **k), lambda w: w**-0.5, Power(-0.5)),
}


def _spd(batch, n, seed=0, dtype=torch.float64, ridge=1e-1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 2 * n, generator=generator, dtype=torch.float64)
    return (x @ x.mT / (2 * n) + ridge * torch.eye(n, dtype=torch.float64)).to(dtype)


def _eigh_map(x, f):
    w, v = torch.linalg.eigh(x)
    return (v * f(w).unsqueeze(-2)) @ v.mT


def _cotangent(shape, seed=1):
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_are_the_function_of_the_eigenvalues(name, dtype):
    make, f, _ = LAYERS[name]
    x = _spd((3, 2), 5, dtype=dtype)
    y = make()(x)
    assert y.shape == x.shape
    assert y.dtype == dtype
    expected = _eigh_map(x.double(), f)
    assert_close(y, expected, rtol=1e-13 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("method", ["exact", "analytic"])
def test_gradients_equal_autograd_through_eigh_on_separated_spectra(name, method):
    make, f, _ = LAYERS[name]
    x = _spd((4,), 6, seed=2)
    g = _cotangent((4, 6, 6))
    x1 = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(make(method=method)(x1), x1, g)
    x2 = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(_eigh_map((x2 + x2.mT) / 2, f), x2, g)
    assert_close(grad, expected, rtol=1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_exact_gradient_matches_central_differences(name):
    make, _, _ = LAYERS[name]
    layer = make()
    x = _spd((), 5, seed=3)
    direction = _cotangent((5, 5), seed=4)
    direction = (direction + direction.T) / 2
    g = _cotangent((5, 5), seed=5)
    x1 = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((layer(x1) * g).sum(), x1)
    h = 1e-6
    difference = ((layer(x + h * direction) - layer(x - h * direction)) * g).sum() / (2 * h)
    assert_close((grad * direction).sum(), difference, rtol=1e-7)


@pytest.mark.parametrize("method", ["pi", "taylor"])
def test_other_methods_run_and_are_finite(method):
    x = _spd((3,), 5, seed=6).requires_grad_()
    y = spd.LogEig(method=method, num_iters=7)(spd.ReEig(0.2, method=method)(x))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def _tie_gradient(function, eigenvalues, g, method="exact"):
    """The gradient of ``<g, F(diag(eigenvalues))>`` and its 80-digit oracle ``K ∘ sym(g)``."""
    layer = {
        Clamp: lambda: spd.ReEig(function.minimum, method=method),
        Log: lambda: spd.LogEig(method=method),
        Exp: lambda: spd.ExpEig(method=method),
        Power: lambda: spd.PowerEig(function.p, method=method),
    }[type(function)]()
    x = torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(layer(x), x, g)
    oracle = oracle_for(function)
    n = len(eigenvalues)
    kernel = np.array(
        [[float(divided_difference(oracle, eigenvalues[i], eigenvalues[j])) for j in range(n)]
         for i in range(n)]
    )  # fmt: skip
    sym = ((g + g.T) / 2).numpy()
    return grad.numpy(), kernel * sym


def _relative(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# Eigenvalues at and near ties. Diagonal input: every eigensolver returns these
# exactly, so the oracle's kernel is evaluated at the eigenvalues the layer sees.
TIES = {
    "ReEig, clamped ties": (Clamp(1e-3), [2.0, 1.0, 1e-6, 1e-6, 1e-7]),
    "ReEig, across the kink": (Clamp(1e-3), [2.0, 1e-3 * (1 + 1e-9), 1e-3 * (1 - 3e-9), 0.5]),
    "ReEig, at the floor": (Clamp(1e-3), [1.0, 1e-3, 1e-3, 1e-4]),
    "LogEig, exact tie": (Log(), [2.0, 1.0, 1.0, 0.5]),
    "LogEig, gap 1e-13": (Log(), [2.0, 1.0, 1.0 + 1e-13, 0.5]),
    "LogEig, gap 1e-9": (Log(), [2.0, 1.0, 1.0 + 1e-9, 1e-3]),
    "LogEig, gap 1e-6": (Log(), [3.0, 1.0, 1.0 + 1e-6, 1.0 - 1e-6]),
    "ExpEig, gap 1e-11": (Exp(), [2.0, -1.0, -1.0 + 1e-11, 0.0]),
    "PowerEig(-1/2), gap 1e-10": (Power(-0.5), [4.0, 1.0, 1.0 + 1e-10, 0.25]),
}


@pytest.mark.parametrize("case", list(TIES))
def test_exact_gradient_equals_the_oracle_at_and_near_ties(case):
    function, eigenvalues = TIES[case]
    n = len(eigenvalues)
    g = _cotangent((n, n), seed=7)
    grad, expected = _tie_gradient(function, eigenvalues, g)
    assert _relative(grad, expected) < 1e-13, case


def test_exact_gradient_at_ties_is_independent_of_the_eigenbasis():
    # A rotated matrix with a triple clamped eigenvalue and a tied pair above
    # the floor: the exact gradient is the Daleckii–Krein formula with the
    # constructed eigenpairs, whatever basis the eigensolver picks inside each
    # (numerically) tied eigenspace. Autograd through eigh, with its
    # 1/(λi − λj) at gaps of round-off size, is 37 % off here.
    q, _ = torch.linalg.qr(_cotangent((6, 6), seed=8))
    eigenvalues = torch.tensor([3.0, 1.5, 1.5, 1e-6, 1e-6, 1e-6], dtype=torch.float64)
    x = (q * eigenvalues) @ q.T
    x = ((x + x.T) / 2).requires_grad_()
    g = _cotangent((6, 6), seed=9)
    (grad,) = torch.autograd.grad(spd.ReEig(1e-3)(x), x, g)
    f = Clamp(1e-3)
    kernel = f.divided_difference(eigenvalues[:, None], eigenvalues[None, :])
    expected = q @ (kernel * (q.T @ ((g + g.T) / 2) @ q)) @ q.T
    assert_close(grad, expected, rtol=1e-12)
    (through_eigh,) = torch.autograd.grad(_eigh_map(x, lambda w: w.clamp_min(1e-3)), x, g)
    assert (through_eigh - expected).abs().max() > 1e-2 * expected.abs().max()


def test_reeig_gradient_is_zero_across_clamped_eigenvalues():
    x = torch.diag(torch.tensor([1.0, 1e-6, 1e-6], dtype=torch.float64)).requires_grad_()
    g = torch.ones(3, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(spd.ReEig(1e-3)(x), x, g)
    assert grad[1:, 1:].abs().max() == 0
    assert grad[0, 0] == 1


def test_second_derivatives_of_the_exact_method():
    x = _spd((), 4, seed=10).requires_grad_()
    for layer in (spd.LogEig(), spd.ExpEig(), spd.PowerEig(0.5)):
        assert torch.autograd.gradgradcheck(lambda a, layer=layer: layer(a), (x,))


def test_second_derivatives_at_a_tie_are_finite():
    x = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    g = _cotangent((3, 3), seed=11)
    (grad,) = torch.autograd.grad(spd.LogEig()(x), x, g, create_graph=True)
    (hessian_vector,) = torch.autograd.grad((grad * g).sum(), x)
    assert torch.isfinite(hessian_vector).all()


def test_logeig_vectorize_option():
    x = _spd((2, 3), 4, seed=12)
    vector = spd.LogEig(vectorize=True)(x)
    assert vector.shape == (2, 3, 10)
    assert_close(vector, F.vectorize(spd.LogEig()(x)), rtol=0)


def test_functional_forms_equal_the_layers():
    x = _spd((3,), 4, seed=13)
    assert torch.equal(F.reeig(x, 0.3), spd.ReEig(0.3)(x))
    assert torch.equal(F.logeig(x), spd.LogEig()(x))
    assert torch.equal(F.expeig(x), spd.ExpEig()(x))
    assert torch.equal(F.poweig(x, 0.5), spd.PowerEig(0.5)(x))


def test_only_the_symmetric_part_is_used():
    x = _spd((2,), 4, seed=14)
    skew = _cotangent((2, 4, 4), seed=15)
    skew = skew - skew.mT
    for layer in (spd.ReEig(0.3), spd.ExpEig()):
        assert_close(layer(x + skew), layer(x), rtol=1e-14)


def test_empty_batches_and_n_zero():
    for shape in [(0, 4, 4), (3, 0, 0), (2, 0, 3, 3)]:
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        for layer in (spd.ReEig(), spd.LogEig(), spd.ExpEig(), spd.PowerEig(0.5)):
            y = layer(x)
            assert y.shape == shape
            y.sum().backward()
            assert x.grad.shape == shape
    assert spd.LogEig(vectorize=True)(torch.zeros(0, 3, 3)).shape == (0, 6)


def test_meta_device():
    x = torch.empty(5, 4, 4, device="meta")
    for layer in (spd.ReEig(), spd.LogEig(), spd.ExpEig(), spd.PowerEig(0.5)):
        y = layer(x)
        assert y.device.type == "meta"
        assert y.shape == (5, 4, 4)


def test_autocast_and_half_precision_compute_in_float32():
    x = _spd((3,), 5, seed=16, dtype=torch.float32)
    expected = spd.LogEig()(spd.ReEig(0.2)(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = spd.LogEig()(spd.ReEig(0.2)(x))
    assert y.dtype == torch.float32
    assert_close(y, expected, rtol=0)
    half = spd.LogEig()(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert_close(half.float(), spd.LogEig()(x.to(torch.bfloat16).float()), rtol=1e-2)


# torch.func.jvp loads torch's forward-AD decompositions, which call the deprecated
# torch.jit.script (a warning from inside torch, once per process).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torch_func_vmap_grad_and_forward_mode():
    x = _spd((3,), 4, seed=17)
    layer = spd.LogEig()
    assert_close(torch.func.vmap(layer)(x), layer(x), rtol=1e-14)
    grad = torch.func.grad(lambda a: layer(a).sum())(x[0])
    x0 = x[0].clone().requires_grad_()
    (expected,) = torch.autograd.grad(layer(x0).sum(), x0)
    assert_close(grad, expected, rtol=1e-14)
    tangent = _cotangent((4, 4), seed=18)
    tangent = (tangent + tangent.T) / 2
    _, jvp = torch.func.jvp(layer, (x[0],), (tangent,))
    h = 1e-6
    difference = (layer(x[0] + h * tangent) - layer(x[0] - h * tangent)) / (2 * h)
    assert_close(jvp, difference, rtol=1e-7)


def test_parameterless_layers_have_empty_state_and_a_readable_repr():
    assert spd.ReEig().state_dict() == {}
    assert repr(spd.ReEig()) == "ReEig(threshold=0.0001, method='exact', check_finite=True)"
    assert repr(spd.LogEig(vectorize=True, method="pi")) == (
        "LogEig(vectorize=True, method='pi', num_iters=19, check_finite=True, check_spd=True)"
    )
    assert repr(spd.ExpEig()) == "ExpEig(method='exact', check_finite=True)"
    assert repr(spd.PowerEig(0.5, check_spd=False)) == (
        "PowerEig(exponent=0.5, method='exact', check_finite=True, check_spd=False)"
    )


def test_non_finite_input_raises_and_the_check_can_be_skipped():
    x = _spd((3,), 4, seed=19)
    x[1, 2, 2] = math.nan
    for layer in (spd.ReEig(), spd.LogEig(), spd.ExpEig(), spd.PowerEig(2.0)):
        with pytest.raises(ValueError, match=rf"{type(layer).__name__} input must contain only"):
            layer(x)
    y = spd.ExpEig(check_finite=False)(torch.diag(torch.tensor([1.0, math.inf])))
    assert not torch.isfinite(y).all()  # NaN or inf out, nothing finite-looking


def test_non_spd_input_raises_where_the_layer_needs_spd():
    x = _spd((4,), 3, seed=20)
    x[2] = torch.diag(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"1 of 4 matrices are not \(matrix 2\).*ReEig first"):
        spd.LogEig()(x)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        spd.PowerEig(-0.5)(x)
    # ReEig and ExpEig take any symmetric matrix; check_spd=False skips the check.
    assert torch.isfinite(spd.LogEig()(spd.ReEig()(x))).all()
    assert torch.isfinite(spd.ExpEig()(x)).all()
    assert torch.isfinite(spd.LogEig(check_spd=False)(x)).all()


def test_bad_input_shapes_and_dtypes():
    layer = spd.LogEig()
    with pytest.raises(TypeError, match=r"LogEig input must be a torch\.Tensor"):
        layer([[1.0]])
    with pytest.raises(TypeError, match="real floating dtype"):
        layer(torch.eye(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="real floating dtype"):
        layer(torch.eye(3, dtype=torch.complex128))
    with pytest.raises(ValueError, match="square in its last two dimensions"):
        layer(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n, n\)"):
        layer(torch.zeros(3))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: spd.ReEig(-1.0), ValueError, "threshold must be a finite number >= 0"),
        (lambda: spd.ReEig(math.nan), ValueError, "threshold must be a finite number"),
        (lambda: spd.ReEig(True), TypeError, "threshold must be a real number"),
        (lambda: spd.ReEig(method="svd"), ValueError, "method must be one of"),
        (lambda: spd.LogEig(num_iters=0), ValueError, "num_iters must be >= 1"),
        (lambda: spd.LogEig(vectorize=1), TypeError, "vectorize must be True or False"),
        (lambda: spd.LogEig(check_spd="yes"), TypeError, "check_spd must be True or False"),
        (lambda: spd.ExpEig(check_finite=None), TypeError, "check_finite must be True or False"),
        (lambda: spd.PowerEig(math.inf), ValueError, "exponent must be finite"),
        (lambda: spd.PowerEig("2"), TypeError, "exponent must be a real number"),
    ],
)
def test_bad_options_name_the_option(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_zero_matrices_and_extreme_values():
    zero = torch.zeros(2, 3, 3, dtype=torch.float64, requires_grad=True)
    reeig = spd.ReEig(1e-2)(zero)
    assert_close(reeig, 1e-2 * torch.eye(3, dtype=torch.float64).expand(2, 3, 3), rtol=0)
    exp = spd.ExpEig()(zero)
    assert_close(exp, torch.eye(3, dtype=torch.float64).expand(2, 3, 3), rtol=0)
    (exp.sum() + reeig.sum()).backward()
    assert torch.isfinite(zero.grad).all()
    with pytest.raises(ValueError, match="2 of 2 matrices are not"):
        spd.LogEig()(zero)
    # Near float64's largest and smallest numbers: nothing overflows or underflows.
    for exponents in ([300, 299, 295], [-300, -301, -305]):
        x = torch.diag(torch.tensor([10.0**e for e in exponents], dtype=torch.float64))
        expected = torch.tensor(exponents, dtype=torch.float64) * math.log(10.0)
        assert_close(spd.LogEig()(x).diagonal(), expected, rtol=1e-15)
    # An eigenvalue below svdpi's floor (n·eps·λ_max, what an eigensolver can
    # tell from 0 in a general matrix) is raised to it, as in svdpi.torch.logm.
    x = torch.diag(torch.tensor([1e300, 1.0, 1.0], dtype=torch.float64))
    floor = 3 * torch.finfo(torch.float64).eps * 1e300
    assert_close(spd.LogEig()(x)[1, 1], torch.tensor(math.log(floor), dtype=torch.float64))
    # e^800 overflows float64: inf, and 0 and 1 where its eigenvector is 0, as
    # torch.linalg.matrix_exp gives (0.3: NaN there, inf · 0).
    a = torch.diag(torch.tensor([800.0, 0.0], dtype=torch.float64))
    overflow = spd.ExpEig()(a)
    assert torch.equal(overflow, torch.linalg.matrix_exp(a))
    assert torch.equal(overflow, torch.tensor([[math.inf, 0.0], [0.0, 1.0]], dtype=torch.float64))
