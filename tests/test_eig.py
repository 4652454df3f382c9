"""The forward pass: exact eigenpairs, descending, in the input's namespace."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_close, from_numpy, random_spd, spd_with_spectrum, to_numpy
from array_api_compat import is_lazy_array

import svdpi


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("n", [1, 4, 9])
def test_eig_reconstructs_and_sorts_descending(xp, batch, n):
    rng = np.random.default_rng(n)
    a_np = random_spd(n, rng, batch=batch)
    w, v = svdpi.eig(from_numpy(xp, a_np))
    w_np, v_np = to_numpy(w), to_numpy(v)
    assert w_np.shape == (*batch, n)
    assert v_np.shape == (*batch, n, n)
    assert np.all(np.diff(w_np, axis=-1) <= 0)
    np.testing.assert_allclose(w_np, np.linalg.eigvalsh(a_np)[..., ::-1], rtol=1e-12)
    assert_close((v_np * w_np[..., None, :]) @ np.swapaxes(v_np, -1, -2), a_np, rtol=1e-12)
    assert_close(np.swapaxes(v_np, -1, -2) @ v_np, np.broadcast_to(np.eye(n), v_np.shape))


def test_eig_result_is_a_named_tuple(xp):
    result = svdpi.eig(from_numpy(xp, np.diag([1.0, 2.0])))
    assert isinstance(result, svdpi.EigResult)
    assert result.eigenvalues is result[0]
    assert result.eigenvectors is result[1]
    assert_close(result.eigenvalues, np.array([2.0, 1.0]))


def test_eig_uses_the_symmetric_part(xp):
    rng = np.random.default_rng(0)
    a = random_spd(5, rng)
    skew = rng.standard_normal((5, 5))
    skew = skew - skew.T
    w1, _ = svdpi.eig(from_numpy(xp, a))
    w2, _ = svdpi.eig(from_numpy(xp, a + skew))
    assert_close(w2, to_numpy(w1), rtol=1e-12)


def test_eig_float32(xp):
    a = np.diag([3.0, 2.0, 1.0])
    w, v = svdpi.eig(from_numpy(xp, a, xp.float32))
    assert w.dtype == xp.float32
    assert v.dtype == xp.float32
    assert_close(w, np.array([3.0, 2.0, 1.0]), rtol=1e-6)


def test_eig_degenerate_and_zero(xp):
    rng = np.random.default_rng(1)
    for spectrum in ([2.0, 2.0, 2.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]):
        w, v = svdpi.eig(from_numpy(xp, spd_with_spectrum(spectrum, rng)))
        assert_close(w, np.array(sorted(spectrum, reverse=True)), atol=1e-12)
        v_np = to_numpy(v)
        assert_close(v_np.T @ v_np, np.eye(3), atol=1e-12)


def test_numpy_outputs_are_contiguous():
    w, v = svdpi.eig(np.diag([1.0, 2.0, 3.0]))
    assert w.flags["C_CONTIGUOUS"]
    assert v.flags["C_CONTIGUOUS"]


def _assert_rejects_non_finite(xp, a, match):
    x = from_numpy(xp, a)
    if is_lazy_array(x):
        # JAX arrays are never read on the host (not even outside jit): the
        # check is skipped and NaN propagates, as through jax.numpy.linalg.eigh.
        w, _ = svdpi.eig(x)
        assert not np.isfinite(to_numpy(w)).all()
        return
    with pytest.raises(ValueError, match=match):
        svdpi.eig(x)


def test_check_finite(xp):
    a = np.eye(3)
    a[1, 2] = np.nan
    _assert_rejects_non_finite(xp, a, "a must contain only finite values")
    a[1, 2] = np.inf
    _assert_rejects_non_finite(xp, a, "check_finite=False")


def test_check_finite_accepts_entries_whose_sum_overflows(xp):
    a = np.diag([8e307, 7e307, 6e307])
    w, _ = svdpi.eig(from_numpy(xp, a))
    assert_close(w, np.array([8e307, 7e307, 6e307]), rtol=1e-12)


def test_check_finite_rejects_opposite_infinities(xp):
    a = np.eye(3)
    a[0, 0], a[1, 1] = np.inf, -np.inf
    _assert_rejects_non_finite(xp, a, "a must contain only finite values")


def test_check_finite_on_an_empty_batch(xp):
    w, v = svdpi.eig(from_numpy(xp, np.zeros((0, 3, 3))))
    assert tuple(w.shape) == (0, 3)
    assert tuple(v.shape) == (0, 3, 3)


EMPTY_SHAPES = [(0, 0), (2, 0, 0), (0, 3, 3), (0, 0, 0), (2, 0, 4, 4)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_empty_matrices_and_batches_give_empty_results(xp, shape):
    """Like numpy.linalg.eigh / torch.linalg.eigh, whose OpInfo samples include n = 0."""
    a = xp.zeros(shape, dtype=xp.float64)
    w, v = svdpi.eig(a)
    assert tuple(w.shape) == shape[:-1]
    assert tuple(v.shape) == shape
    assert w.dtype == v.dtype == xp.float64
    g_w = xp.zeros(shape[:-1], dtype=xp.float64)
    g_v = xp.zeros(shape, dtype=xp.float64)
    for method in ("pi", "taylor", "analytic"):
        grad = svdpi.eig_vjp(w, v, g_w, g_v, method=method)
        assert tuple(grad.shape) == shape
        assert tuple(svdpi.eig_vjp(w, v, None, g_v, method=method).shape) == shape
        dw, dv = svdpi.eig_jvp(w, v, a, method=method)
        assert tuple(dw.shape) == shape[:-1]
        assert tuple(dv.shape) == shape


# torch.func.jvp loads torch's forward-AD decompositions, which call the deprecated
# torch.jit.script (a warning from inside torch, once per process).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_torch_eig_on_empty_input_matches_torch_linalg_eigh(shape):
    torch = pytest.importorskip("torch")
    import svdpi.torch

    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    w, v = svdpi.torch.eig(a)
    expected_w, expected_v = torch.linalg.eigh(a.detach())
    assert w.shape == expected_w.shape
    assert v.shape == expected_v.shape
    (w.sum() + v.sum()).backward()
    assert a.grad.shape == a.shape
    tangent = torch.zeros(shape, dtype=torch.float64)
    _, (dw, dv) = torch.func.jvp(lambda m: tuple(svdpi.torch.eig(m)), (a.detach(),), (tangent,))
    assert dw.shape == expected_w.shape
    assert dv.shape == expected_v.shape
