"""svdpi.torch's SVD: svd, polar, low_rank, singular_value_map with autograd and torch.func."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import array_api_compat.torch as xp_torch  # noqa: E402
from _svd_helpers import assert_close, random_matrix, with_singular_values  # noqa: E402

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402
from svdpi.functions import Power  # noqa: E402

# Loading torch's forward-AD decompositions calls the deprecated torch.jit.script.
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"
SHAPES = [(5, 3), (3, 5), (4, 4)]
DTYPES = [torch.float64, torch.complex128]


def _matrix(m, n, seed, dtype=torch.float64, batch=(2,), spectrum=None):
    rng = np.random.default_rng(seed)
    complex_ = dtype.is_complex
    if spectrum is None:
        a = random_matrix(rng, (*batch, m, n), complex_)
    else:
        a = with_singular_values(rng, m, n, spectrum, batch=batch, complex_=complex_)
    return torch.tensor(a, dtype=dtype)


def _phase_free_loss(weights):
    """A loss of all three factors that does not depend on the singular vectors' phase."""

    def loss(u, s, vh):
        return (
            (u.abs() ** 2 * weights[0]).sum()
            + (s * weights[1]).sum()
            + ((u * s.unsqueeze(-2).to(u.dtype)) @ vh).real.pow(3).sum()
            + (vh.abs() ** 3 * weights[2]).sum()
        )

    return loss


def _weights(u, s, vh, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in (u, s, vh)]


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128]
)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_forward_is_torch_linalg_svd(m, n, dtype):
    a = _matrix(m, n, 0, dtype)
    u, s, vh = svdpi.torch.svd(a)
    expected = torch.linalg.svd(a, full_matrices=False)
    for x, y in zip((u, s, vh), expected, strict=True):
        assert x.dtype == y.dtype
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_analytic_backward_is_torch_linalg_svd_backward(m, n, dtype):
    a = _matrix(m, n, 1, dtype)
    weights = _weights(*torch.linalg.svd(a, full_matrices=False))
    loss = _phase_free_loss(weights)
    x1, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    loss(*svdpi.torch.svd(x1, method="analytic")).backward()
    loss(*torch.linalg.svd(x2, full_matrices=False)).backward()
    assert_close(x1.grad, x2.grad, rtol=1e-12)


@pytest.mark.parametrize("method", ["pi", "taylor"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize("used", ["all", "u", "vh", "s"])
def test_backward_is_the_core_svd_vjp(m, n, dtype, method, used):
    """Real input takes the direct-torch VJP in a plain backward: held to the core's result."""
    a = _matrix(m, n, 2, dtype, spectrum=[2.0, 1.0, 1.0, 0.5])
    x = a.clone().requires_grad_(True)
    u, s, vh = svdpi.torch.svd(x, method=method)
    cotangents = {"u": None, "s": None, "vh": None}
    g = torch.Generator().manual_seed(3)
    for name, value in zip(["u", "s", "vh"], (u, s, vh), strict=True):
        if used in ("all", name):
            cotangents[name] = torch.randn(value.shape, generator=g, dtype=value.dtype)
    if dtype.is_complex:
        cotangents = dict(zip(cotangents, _phase_free(u, vh, cotangents), strict=True))
    outputs = [o for o, k in zip((u, s, vh), cotangents, strict=True) if cotangents[k] is not None]
    torch.autograd.backward(outputs, [c for c in cotangents.values() if c is not None])
    expected = svdpi.svd_vjp(
        u.detach(), s.detach(), vh.detach(), *cotangents.values(), method=method
    )
    assert_close(x.grad, expected, rtol=1e-13)


def _phase_free(u, vh, cotangents):
    from _svd_helpers import phase_free

    grad_u, grad_s, grad_vh = cotangents.values()
    if grad_u is None and grad_vh is None:
        return grad_u, grad_s, grad_vh
    gu = np.zeros(u.shape, complex) if grad_u is None else grad_u.numpy()
    gvh = np.zeros(vh.shape, complex) if grad_vh is None else grad_vh.numpy()
    gu, gvh = phase_free(u.detach().numpy(), vh.detach().numpy(), gu, gvh)
    return torch.tensor(gu), grad_s, torch.tensor(gvh)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_and_zero_singular_values_give_finite_gradients(dtype):
    """Where torch.linalg.svd's gradient explodes (issue 17: 2.6e14 for a loss of size 1)."""
    a = _matrix(6, 4, 4, dtype, spectrum=[2.0, 1.0, 1.0, 0.0])
    for method in ("pi", "taylor"):
        x = a.clone().requires_grad_(True)
        u, _, vh = svdpi.torch.svd(x, method=method)
        (u[..., :3].sum() + vh.sum()).backward()
        assert torch.isfinite(x.grad).all()
    reference = a.clone().requires_grad_(True)
    u, _, vh = torch.linalg.svd(reference, full_matrices=False)
    (u[..., :3].sum() + vh.sum()).backward()
    assert not torch.isfinite(reference.grad).all() or reference.grad.abs().max() > 1e6


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("method", ["pi", "analytic"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_jvp_is_the_core_svd_jvp(m, n, dtype, method):
    a = _matrix(m, n, 5, dtype, batch=())
    t = _matrix(m, n, 6, dtype, batch=())
    _, tangents = torch.func.jvp(lambda x: tuple(svdpi.torch.svd(x, method=method)), (a,), (t,))
    expected = svdpi.svd_jvp(*svdpi.svd(a), t, method=method)
    for actual, desired in zip(tangents, expected, strict=True):
        assert_close(actual, desired, rtol=1e-13)
    # Forward-mode AD outside torch.func (dual numbers) gives the same.
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = svdpi.torch.svd(fwAD.make_dual(a, t), method=method)
        for x, desired in zip(dual, expected, strict=True):
            assert_close(fwAD.unpack_dual(x).tangent, desired, rtol=1e-13)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_jacfwd_equals_jacrev_at_repeated_singular_values():
    a = _matrix(4, 3, 7, batch=(), spectrum=[2.0, 1.0, 1.0])

    def f(x):
        u, s, vh = svdpi.torch.svd(x, canonical=True)
        return torch.cat([u.flatten(), s, vh.flatten()])

    assert_close(torch.func.jacfwd(f)(a), torch.func.jacrev(f)(a), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vmap_of_grad_matches_the_batched_backward(dtype):
    a = _matrix(5, 3, 8, dtype, batch=(3,))
    loss = _phase_free_loss(_weights(*svdpi.svd(a[0])))

    def single(x):
        return loss(*svdpi.torch.svd(x))

    grads = torch.func.vmap(torch.func.grad(single))(a)
    batched = a.clone().requires_grad_(True)
    u, s, vh = svdpi.torch.svd(batched)
    loss(u, s, vh).backward()
    assert_close(grads, batched.grad, rtol=1e-12)


def test_second_derivatives_raise():
    a = _matrix(4, 3, 9, batch=()).requires_grad_(True)
    u, _, _ = svdpi.torch.svd(a)
    (grad,) = torch.autograd.grad((u**3).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        grad.sum().backward()
    for fn in (svdpi.torch.polar, lambda x: svdpi.torch.low_rank(x, 2)):
        (grad,) = torch.autograd.grad(fn(a).pow(3).sum(), a, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiable once"):
            grad.sum().backward()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.func.jacrev(torch.func.grad(lambda x: svdpi.torch.svd(x).U.pow(3).sum()))(a.detach())


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_phase_dependent_loss_raises_eagerly_and_is_nan_under_torch_func(dtype):
    a = _matrix(4, 3, 10, torch.complex128, batch=()).requires_grad_(True)
    u, _, _ = svdpi.torch.svd(a)
    with pytest.raises(ValueError, match="phase"):
        u.real.sum().backward()
    grad = torch.func.grad(lambda x: svdpi.torch.svd(x).U.real.sum())(a.detach())
    assert torch.isnan(grad).all()
    # canonical=True: the phase is a function of a, and so is the loss.
    x = a.detach().clone().requires_grad_(True)
    svdpi.torch.svd(x, canonical=True).U.real.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_canonical_gradient_of_a_phase_dependent_loss_matches_finite_differences():
    a = _matrix(4, 3, 11, torch.complex128, batch=())

    def loss(x):
        return svdpi.torch.svd(x, canonical=True, method="analytic").U.real.sum()

    x = a.clone().requires_grad_(True)
    loss(x).backward()
    g = torch.Generator().manual_seed(0)
    for direction in (
        torch.randn(a.shape, generator=g, dtype=a.dtype),
        1j * torch.randn(a.shape, generator=g, dtype=a.dtype),
    ):
        expected = (loss(a + 1e-6 * direction) - loss(a - 1e-6 * direction)) / 2e-6
        actual = (x.grad.conj() * direction).real.sum()
        assert actual.item() == pytest.approx(expected.item(), rel=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_maps_equal_autograd_through_torch_linalg_svd_on_separated_spectra(m, n, dtype):
    a = _matrix(m, n, 12, dtype, spectrum=[3.0, 2.0, 1.0, 0.5])
    g = _matrix(m, n, 13, dtype)

    def through_svd(x, kind):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        if kind == "polar":
            return u @ vh
        if kind == "low_rank":
            return (u[..., :2] * s[..., None, :2].to(u.dtype)) @ vh[..., :2, :]
        return (u * (s**2)[..., None, :].to(u.dtype)) @ vh

    ours = {
        "polar": svdpi.torch.polar,
        "low_rank": lambda x: svdpi.torch.low_rank(x, 2),
        "square": lambda x: svdpi.torch.singular_value_map(x, Power(2.0)),
    }
    for kind, fn in ours.items():
        x1, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
        y1, y2 = fn(x1), through_svd(x2, kind)
        assert_close(y1, y2.detach(), rtol=1e-13)
        (y1.conj() * g).real.sum().backward()
        (y2.conj() * g).real.sum().backward()
        assert_close(x1.grad, x2.grad, rtol=1e-11, err_msg=kind)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_maps_forward_mode_vmap_and_repeated_singular_values():
    a = _matrix(5, 3, 14, batch=(2,), spectrum=[2.0, 2.0, 1.0])
    t = _matrix(5, 3, 15, batch=(2,))
    for fn, core in (
        (svdpi.torch.polar, lambda u, s, vh, x: svdpi.polar_jvp(u, s, vh, x)),
        (
            lambda x: svdpi.torch.singular_value_map(x, Power(3.0)),
            lambda u, s, vh, x: svdpi.singular_value_map_jvp(u, s, vh, Power(3.0), x),
        ),
    ):
        _, tangent = torch.func.jvp(fn, (a,), (t,))
        assert_close(tangent, core(*svdpi.svd(a), t), rtol=1e-13)
        grads = torch.func.vmap(torch.func.grad(lambda x, fn=fn: fn(x).pow(2).sum()))(a)
        x = a.clone().requires_grad_(True)
        fn(x).pow(2).sum().backward()
        assert_close(grads, x.grad, rtol=1e-13)
        assert torch.isfinite(grads).all()


def test_low_rank_without_a_gap_is_nan_and_with_one_is_finite():
    # Exactly repeated singular values (an SVD of a rotated product would
    # split them by round-off, and a cut between distinct ones has a derivative).
    tie = torch.zeros(4, 3, dtype=torch.float64)
    tie[0, 0], tie[1, 1], tie[2, 2] = 2.0, 1.0, 1.0
    x = tie.clone().requires_grad_(True)
    svdpi.torch.low_rank(x, 2).sum().backward()
    assert torch.isnan(x.grad).any()
    a = _matrix(4, 3, 16, batch=(), spectrum=[2.0, 1.0, 1.0])
    x = a.clone().requires_grad_(True)
    svdpi.torch.low_rank(x, 1).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(svdpi.torch.low_rank(a, 7), svdpi.torch.low_rank(a, 3))
    assert_close(svdpi.torch.low_rank(a, 3), a, rtol=1e-13)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_compile_fullgraph_in_a_fresh_process():
    # A fresh interpreter: nothing imported by an earlier test may make it pass.
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        import svdpi.torch
        from svdpi.functions import Power

        def real_loss(m):
            u, s, vh = svdpi.torch.svd(m)
            return ((u[..., :2] ** 3).sum() + s.sum() + (vh ** 2 * 3).sum()
                    + svdpi.torch.polar(m).sum() + svdpi.torch.low_rank(m, 2).sum()
                    + svdpi.torch.singular_value_map(m, Power(3.0)).sum())

        def complex_loss(m):
            u, s, vh = svdpi.torch.svd(m, canonical=True)
            return ((u.abs() ** 2 * 2).sum() + s.sum() + u.real.sum()
                    + svdpi.torch.polar(m).abs().sum())

        g = torch.Generator().manual_seed(0)
        for loss, dtype in ((real_loss, torch.float64), (complex_loss, torch.complex128)):
            a = torch.randn(2, 5, 3, generator=g, dtype=dtype)
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


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's graph-break notice
def test_compile_around_torch_func_keeps_the_pi_gradient():
    a = _matrix(4, 3, 17, batch=(2,), spectrum=[2.0, 1.0, 1.0])

    def loss(m):
        return (svdpi.torch.svd(m).U ** 3).sum()

    expected = torch.func.vmap(torch.func.grad(loss))(a)
    assert torch.isfinite(expected).all()
    compiled = torch.compile(torch.func.vmap(torch.func.grad(loss)), backend="aot_eager")
    assert_close(compiled(a), expected, rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_meta_tensors_give_shapes(dtype):
    a = torch.empty(3, 5, 4, device="meta", dtype=dtype, requires_grad=True)
    u, s, vh = svdpi.torch.svd(a)
    assert (u.shape, s.shape, vh.shape, u.device.type) == ((3, 5, 4), (3, 4), (3, 4, 4), "meta")
    (u.abs().sum() + s.sum() + vh.abs().sum()).backward()
    assert a.grad.shape == a.shape
    for fn in (svdpi.torch.polar, lambda x: svdpi.torch.low_rank(x, 2)):
        y = fn(a)
        assert (y.shape, y.device.type) == (a.shape, "meta")


@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (0, 3, 2), (2, 4, 0)])
def test_empty_input_behaves_like_torch_linalg_svd(shape):
    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    u, s, vh = svdpi.torch.svd(a)
    expected = torch.linalg.svd(a.detach(), full_matrices=False)
    assert [x.shape for x in (u, s, vh)] == [x.shape for x in expected]
    (u.sum() + s.sum() + vh.sum()).backward()
    assert a.grad.shape == a.shape
    for fn in (svdpi.torch.polar, lambda x: svdpi.torch.low_rank(x, 1)):
        assert fn(a).shape == a.shape


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match=r"a must be a torch\.Tensor"):
        svdpi.torch.svd(np.eye(2))
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        svdpi.torch.polar(torch.eye(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="half precision"):
        svdpi.torch.low_rank(torch.eye(2, dtype=torch.bfloat16), 1)
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\)"):
        svdpi.torch.svd(torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        svdpi.torch.svd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="finite"):
        svdpi.torch.polar(torch.tensor([[1.0, complex(0, float("inf"))], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.svd(torch.eye(2), method="exact")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.torch.svd(torch.eye(2), num_iters=0)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        svdpi.torch.low_rank(torch.eye(2), -1)
    with pytest.raises(TypeError, match="rank must be an integer"):
        svdpi.torch.low_rank(torch.eye(2), 1.5)
    with pytest.raises(ValueError, match=r"f\(0\) = 0"):
        svdpi.torch.singular_value_map(torch.eye(2), Power(0.0))
    with pytest.raises(TypeError, match="SpectralFunction"):
        svdpi.torch.singular_value_map(torch.eye(2), torch.tanh)


def test_the_namespace_is_array_api_compat_torch_with_a_lazy_conj():
    from svdpi.torch._svd import xp_torch as namespace

    assert namespace.__name__ == xp_torch.__name__
    assert namespace.conj is torch.conj
    assert namespace.linalg is xp_torch.linalg


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("dtype", DTYPES)
def test_analytic_forward_mode_is_torch_linalg_svds_including_the_phase_choice(dtype):
    """svdpi turns u_j and v_j by opposite phases, as torch.linalg.svd's forward mode does."""
    a = _matrix(5, 3, 18, dtype, batch=())
    t = _matrix(5, 3, 19, dtype, batch=())
    _, expected = torch.func.jvp(lambda x: torch.linalg.svd(x, full_matrices=False), (a,), (t,))
    _, actual = torch.func.jvp(lambda x: tuple(svdpi.torch.svd(x, method="analytic")), (a,), (t,))
    for x, y in zip(actual, expected, strict=True):
        assert_close(x, y, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_zero_and_extreme_matrices(dtype):
    """The zero matrix: pi gradients finite, the polar factor's NaN (it is not unique)."""
    zero = torch.zeros(2, 4, 3, dtype=dtype, requires_grad=True)
    u, s, vh = svdpi.torch.svd(zero)
    (u.abs().sum() + s.sum() + vh.abs().sum()).backward()
    assert torch.isfinite(zero.grad).all()
    x = zero.detach().clone().requires_grad_(True)
    svdpi.torch.polar(x).abs().sum().backward()
    assert torch.isnan(x.grad).all()
    # Entries near the float32 limits: the gradient scales like 1 / scale.
    a = _matrix(4, 3, 20, torch.complex128 if dtype.is_complex else torch.float64, batch=())
    grads = []
    for scale in (1.0, 1e30, 1e-30):
        x = (a * scale).to(dtype).requires_grad_(True)
        u, s, vh = svdpi.torch.svd(x)
        (u.abs().pow(3).sum() + vh.abs().pow(3).sum()).backward()
        assert torch.isfinite(x.grad).all()
        grads.append(x.grad * scale)
    assert_close(grads[1], grads[0], rtol=1e-4)
    assert_close(grads[2], grads[0], rtol=1e-4)
