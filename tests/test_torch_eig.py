"""svdpi.torch.eig: values, gradients against oracles, torch.func transforms, compile."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import array_api_compat.torch as xp_torch  # noqa: E402

import svdpi  # noqa: E402
import svdpi.torch  # noqa: E402

from ._helpers import assert_close, random_spd, spd_with_spectrum  # noqa: E402
from .paper_reference import paper_eig_vjp  # noqa: E402

# Loading torch's forward-AD decompositions calls the deprecated torch.jit.script.
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"


def _spd(n, seed, batch=(), spectrum=None):
    rng = np.random.default_rng(seed)
    if spectrum is None:
        a = random_spd(n, rng, batch=batch)
    else:
        a = spd_with_spectrum(spectrum, rng, batch=batch)
    return torch.from_numpy(a)


def _sign_invariant_loss(weights):
    """A loss of the eigenpairs that does not depend on the eigenvectors' signs."""

    def loss(a):
        w, v = svdpi.torch.eig(a, method="analytic")
        return (w * weights[0]).sum() + ((v**2) * weights[1]).sum()

    return loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_the_core_eig(dtype):
    a = _spd(5, 0, batch=(3,)).to(dtype)
    w, v = svdpi.torch.eig(a)
    w_ref, v_ref = svdpi.eig(a.numpy())
    assert w.dtype == dtype
    assert v.dtype == dtype
    assert_close(w, w_ref, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    # Eigenvectors up to sign: compare the projectors.
    assert_close(
        (v * w[..., None, :]) @ v.mT,
        (v_ref * w_ref[..., None, :]) @ np.swapaxes(v_ref, -1, -2),
        rtol=1e-5,
    )
    assert bool((w[..., :-1] >= w[..., 1:]).all())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_bitwise_the_core_eig_on_torch_tensors(dtype, symmetric):
    # The same symmetrisation, (a − aᵀ)/2 − a, and the same eigensolver.
    a = _spd(6, 1, batch=(2,)).to(dtype)
    if not symmetric:
        a = a + 1e-3 * torch.randn(
            a.shape, dtype=dtype, generator=torch.Generator().manual_seed(2)
        )
    w, v = svdpi.torch.eig(a)
    w_ref, v_ref = svdpi.eig(a, xp=xp_torch)
    assert torch.equal(w, w_ref)
    assert torch.equal(v, v_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entries_near_the_dtypes_maximum(dtype):
    # Issue 18.1: a + aᵀ overflowed (NaN eigenvalues, NaN square roots) while
    # the input is finite and eigh handles it.
    big = torch.finfo(dtype).max / 1.2
    a = torch.diag(torch.tensor([big, 1.0], dtype=dtype))
    w = svdpi.torch.eig(a).eigenvalues
    assert_close(w, torch.tensor([big, 1.0], dtype=dtype), rtol=1e-6)
    assert w[1] == 1.0
    root = svdpi.torch.sqrtm(a)
    expected = torch.diag(torch.tensor([big, 1.0], dtype=dtype).sqrt())
    assert_close(root, expected, rtol=1e-6)
    off_diagonal = torch.tensor([[big / 2, big / 4], [big / 4, big / 2]], dtype=dtype)
    w = svdpi.torch.eig(off_diagonal).eigenvalues
    assert_close(w, torch.tensor([0.75 * big, 0.25 * big], dtype=dtype), rtol=1e-6)
    assert torch.isfinite(svdpi.torch.inv_sqrtm(off_diagonal)).all()


@pytest.mark.parametrize(
    "spectrum",
    [None, [4.0, 2.0, 2.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]],
    ids=["random", "triple", "identity"],
)
@pytest.mark.parametrize("num_iters", [5, 19])
def test_backward_matches_the_papers_loop(spectrum, num_iters):
    a = _spd(5, 1, spectrum=spectrum).requires_grad_(True)
    rng = np.random.default_rng(2)
    g_w = torch.from_numpy(rng.standard_normal(5))
    g_v = torch.from_numpy(rng.standard_normal((5, 5)))
    w, v = svdpi.torch.eig(a, num_iters=num_iters)
    ((w * g_w).sum() + (v * g_v).sum()).backward()
    # The oracle differentiates the paper's loop started at the same eigenvectors.
    expected = paper_eig_vjp(a.detach(), g_w, g_v, num_iters=num_iters, start_vectors=v.detach())
    assert bool(torch.isfinite(a.grad).all())
    assert_close(a.grad, expected, rtol=1e-10)


def test_backward_with_only_some_outputs_used():
    a = _spd(4, 3, batch=(2,)).requires_grad_(True)
    svdpi.torch.eig(a).eigenvalues.sum().backward()
    # d Σλ / d a = I (trace).
    assert_close(a.grad, torch.eye(4, dtype=a.dtype).expand(2, 4, 4), rtol=1e-12)


def test_grad_against_finite_differences():
    # "analytic" is the exact derivative: on a well separated spectrum it must
    # agree with central differences (an oracle independent of svdpi's maths).
    a = _spd(4, 4, spectrum=[5.0, 3.0, 1.5, 0.5])
    rng = np.random.default_rng(5)
    weights = (
        torch.from_numpy(rng.standard_normal(4)),
        torch.from_numpy(rng.standard_normal((4, 4))),
    )
    loss = _sign_invariant_loss(weights)
    grad = torch.func.grad(loss)(a)
    direction = torch.from_numpy(rng.standard_normal((4, 4)))
    direction = (direction + direction.T) / 2
    h = 1e-5
    fd = (loss(a + h * direction) - loss(a - h * direction)) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-7)

    # The PI gradient converges to it as num_iters grows (ratios <= 0.6 here).
    def pi_loss(m):
        w, v = svdpi.torch.eig(m, num_iters=60)
        return (w * weights[0]).sum() + ((v**2) * weights[1]).sum()

    assert_close(torch.func.grad(pi_loss)(a), grad, rtol=1e-9)


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("method", ["pi", "taylor", "analytic"])
def test_jvp_is_the_core_eig_jvp(method):
    a = _spd(5, 6)
    t = torch.from_numpy(np.random.default_rng(7).standard_normal((5, 5)))
    (w, v), (dw, dv) = torch.func.jvp(
        lambda m: tuple(svdpi.torch.eig(m, method=method)), (a,), (t,)
    )
    dw_ref, dv_ref = svdpi.eig_jvp(w, v, t, method=method, xp=xp_torch)
    assert_close(dw, dw_ref, rtol=1e-14)
    assert_close(dv, dv_ref, rtol=1e-14)


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("method", ["pi", "analytic"])
def test_forward_ad_dual_numbers_outside_torch_func(method):
    # Plain eager calls use the ctx-style Function; its forward mode is the same eig_jvp.
    import torch.autograd.forward_ad as fwAD

    a = _spd(4, 21, batch=(2,), spectrum=[3.0, 1.0, 0.5, 0.25])
    t = torch.from_numpy(np.random.default_rng(8).standard_normal((2, 4, 4)))
    with fwAD.dual_level():
        w, v = svdpi.torch.eig(fwAD.make_dual(a, t), method=method)
        w, dw = fwAD.unpack_dual(w)
        v, dv = fwAD.unpack_dual(v)
    dw_ref, dv_ref = svdpi.eig_jvp(w, v, t, method=method, xp=xp_torch)
    assert_close(dw, dw_ref, rtol=1e-14)
    assert_close(dv, dv_ref, rtol=1e-14)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_jacfwd_equals_jacrev_on_a_degenerate_spectrum():
    # Forward and reverse mode are exact transposes, equal eigenvalues included.
    a = _spd(4, 8, spectrum=[3.0, 1.0, 1.0, 0.2])

    def f(m):
        return svdpi.torch.eig(m).eigenvectors

    jac_fwd = torch.func.jacfwd(f)(a)
    jac_rev = torch.func.jacrev(f)(a)
    assert bool(torch.isfinite(jac_rev).all())
    # Only the symmetric part of the input direction is defined.
    sym = lambda j: (j + j.transpose(-1, -2)) / 2  # noqa: E731
    assert_close(sym(jac_fwd), sym(jac_rev), rtol=1e-12)


def test_vmap_matches_the_batched_call():
    a = _spd(4, 9, batch=(3,))
    w, v = torch.func.vmap(lambda m: tuple(svdpi.torch.eig(m)))(a)
    w_ref, v_ref = svdpi.torch.eig(a)
    assert_close(w, w_ref, rtol=0)
    assert_close(v, v_ref, rtol=0)

    def loss(m):
        w, v = svdpi.torch.eig(m)
        return w[0] + (v[:, :2] ** 3).sum()

    grads = torch.func.vmap(torch.func.grad(loss))(a)
    batched = a.clone().requires_grad_(True)
    w, v = svdpi.torch.eig(batched)
    (w[:, 0].sum() + (v[..., :2] ** 3).sum()).backward()
    assert_close(grads, batched.grad, rtol=1e-13)


def test_second_derivatives_raise():
    a = _spd(3, 10).requires_grad_(True)
    _, v = svdpi.torch.eig(a)
    (grad,) = torch.autograd.grad((v**3).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match=r"^svdpi\.torch\.eig is differentiable once"):
        grad.sum().backward()

    def loss(m):
        return (svdpi.torch.eig(m).eigenvectors ** 3).sum()

    with pytest.raises(RuntimeError, match=r"^svdpi\.torch\.eig is differentiable once"):
        torch.func.jacrev(torch.func.grad(loss))(a.detach())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # deprecations inside torch's inductor
def test_compile_without_graph_break():
    a = _spd(4, 11, batch=(2,), spectrum=[2.0, 1.0, 1.0, 0.5])

    def loss(m):
        w, v = svdpi.torch.eig(m)
        return (w**2).sum() + (v[..., :3] ** 3).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x1 = a.clone().requires_grad_(True)
    x2 = a.clone().requires_grad_(True)
    value = compiled(x1)
    value.backward()
    loss(x2).backward()
    assert_close(value, loss(a), rtol=1e-14)
    assert_close(x1.grad, x2.grad, rtol=1e-13)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's graph-break notice
def test_compile_around_torch_func_keeps_the_pi_gradient():
    # compile(vmap(grad(f))) would silently use eigh's own (infinite) gradient
    # if the custom backward were dropped; eig makes dynamo run it eagerly.
    a = _spd(4, 12, batch=(2,), spectrum=[3.0, 1.0, 1.0, 0.5])

    def loss(m):
        return (svdpi.torch.eig(m).eigenvectors[..., :3] ** 3).sum()

    expected = torch.func.vmap(torch.func.grad(loss))(a)
    compiled = torch.compile(torch.func.vmap(torch.func.grad(loss)), backend="aot_eager")
    assert_close(compiled(a), expected, rtol=1e-13)
    inner = torch.func.vmap(torch.func.grad(torch.compile(loss, backend="aot_eager")))
    assert_close(inner(a), expected, rtol=1e-13)


def test_bad_input():
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        svdpi.torch.eig(np.eye(2))
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        svdpi.torch.eig(torch.eye(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="half precision"):
        svdpi.torch.eig(torch.eye(2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="square"):
        svdpi.torch.eig(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="finite"):
        svdpi.torch.eig(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.eig(torch.eye(2), method="svd")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.torch.eig(torch.eye(2), num_iters=-1)


def test_eig_on_the_meta_device_infers_shapes_with_the_default_check():
    # A meta tensor has no values: the finiteness check must not try to read
    # them (shape inference, FLOP counters, deferred initialisation).
    a = torch.empty(3, 5, 5, device="meta")
    w, v = svdpi.torch.eig(a)
    assert (w.shape, v.shape, w.device.type) == ((3, 5), (3, 5, 5), "meta")
