"""The CuPy adapter on a GPU (``-m gpu``; skipped with a reason without CuPy or a CUDA device):
CuPy arrays in and out, fast paths equal to the generic code, no host synchronisation in the
VJPs, and DLPack parity with PyTorch on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

import svdpi
from svdpi import _dispatch
from svdpi._coefficients import coefficient_matrix

from ._cupy_helpers import (
    METHODS,
    SPECTRA,
)
from ._helpers import assert_close, random_spd, spd_with_spectrum

# --- GPU ------------------------------------------------------------------------------------


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver: CUDARuntimeError
        pytest.skip(f"no CUDA device available ({error})")
    if count < 1:
        pytest.skip("no CUDA device available")
    return cupy


@pytest.fixture
def cp():
    return _cupy_or_skip()


@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    return torch


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_core_functions_return_cupy_arrays(cp, dtype):
    rng = np.random.default_rng(10)
    a = cp.asarray(random_spd(6, rng, batch=(3,)), dtype=dtype)
    w, v = svdpi.eig(a)
    grad = cp.asarray(rng.standard_normal((3, 6, 6)), dtype=dtype)
    mask = svdpi.truncation_mask(w, max_energy=0.99)
    outputs = [
        w,
        v,
        mask,
        svdpi.eig_vjp(w, v, w * 0 + 1, grad),
        *svdpi.eig_jvp(w, v, grad),
        svdpi.zca_whitening_matrix(w, v, mask=mask),
        svdpi.zca_whitening_matrix_vjp(w, v, grad, mask=mask),
        svdpi.pca_projector(v, n_components=2),
        svdpi.pca_projector_vjp(w, v, grad, n_components=2),
    ]
    for output in outputs:
        assert isinstance(output, cp.ndarray)
        assert output.device == a.device
        if output is not mask:
            assert output.dtype == a.dtype


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
def test_gpu_fused_coefficients_equal_the_generic_ones(cp, method, dtype):
    import array_api_compat.cupy as xp

    import svdpi.cupy

    for spectrum in SPECTRA.values():
        if dtype == "float32" and np.max(np.abs(spectrum)) < 1e-30:
            continue  # below float32's range
        w = cp.asarray(spectrum, dtype=dtype)
        expected = coefficient_matrix(w, method=method, num_iters=19, xp=xp)
        actual = svdpi.cupy.coefficient_matrix(w, method=method, num_iters=19)
        assert actual.dtype == w.dtype
        expected, actual = cp.asnumpy(expected), cp.asnumpy(actual)
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isfinite(actual), finite)
        scale = np.max(np.abs(expected[finite]), initial=0.0)
        rtol = 1e-12 if dtype == "float64" else 2e-6
        np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=rtol * scale)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
def test_gpu_fast_path_equals_generic_path(cp, method, dtype):
    rng = np.random.default_rng(11)
    spectra = np.array([[5.0, 3.0, 3.0, 1.0, 0.5], [2.0, 1.5, 1.0, 0.5, 0.25]])
    if method == "analytic":  # infinite for the tie, in both paths: keep it separated
        spectra[0, 2] = 2.0
    a = cp.asarray(spd_with_spectrum(spectra, rng), dtype=dtype)
    w, v = svdpi.eig(a)
    gw = cp.asarray(rng.standard_normal((2, 5)), dtype=dtype)
    gv = cp.asarray(rng.standard_normal((2, 5, 5)), dtype=dtype)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    import array_api_compat.cupy as xp

    # The fast path is there to compare (svdpi's "svdpi.native" entry point loads it).
    assert _dispatch.native(xp, "coefficient_product") is not None
    calls = {
        "eig_vjp": lambda: svdpi.eig_vjp(w, v, gw, gv, method=method),
        "eig_jvp": lambda: svdpi.eig_jvp(w, v, gv, method=method)[1],
        "zca_vjp": lambda: svdpi.zca_whitening_matrix_vjp(w, v, gv, method=method),
    }
    for name, call in calls.items():
        fast = call()
        with _dispatch.native_paths(False):
            generic = call()
        assert_close(fast, generic, rtol=rtol, err_msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 40), (5, 4), (3, 33), (20, 40)])
def test_gpu_every_solver_gives_the_eigenpairs(cp, shape):
    import svdpi.cupy

    batch, n = shape
    rng = np.random.default_rng(12)
    a_host = random_spd(n, rng, batch=(batch,))
    a = cp.asarray(a_host)
    w_ref = np.linalg.eigvalsh(a_host)
    for solver in svdpi.cupy.SOLVERS:
        if solver == "syevd" and batch != 1:
            with pytest.raises(ValueError, match="one matrix"):
                svdpi.cupy.solve_eigh(a, solver)
            continue
        w, v = svdpi.cupy.solve_eigh(a, solver)
        assert_close(w, w_ref, rtol=1e-10, err_msg=solver)
        recon = cp.asnumpy((v * w[..., None, :]) @ cp.swapaxes(v, -1, -2))
        assert_close(recon, a_host, rtol=1e-10, err_msg=solver)


@pytest.mark.gpu
def test_gpu_vjps_do_not_synchronise(cp):
    cupyx = pytest.importorskip("cupyx")
    allow_synchronize = getattr(cupyx, "allow_synchronize", None)
    if allow_synchronize is None:
        pytest.skip("this CuPy has no cupyx.allow_synchronize")
    rng = np.random.default_rng(13)
    a = cp.asarray(random_spd(8, rng, batch=(4,)), dtype="float32")
    w, v = svdpi.eig(a)
    g = cp.asarray(rng.standard_normal((4, 8, 8)), dtype="float32")
    mask = svdpi.truncation_mask(w, min_eigenvalue=1e-3)
    with allow_synchronize(False):  # raises DeviceSynchronized on any host sync
        svdpi.eig_vjp(w, v, w, g)
        svdpi.eig_jvp(w, v, g)
        svdpi.zca_whitening_matrix_vjp(w, v, g, mask=mask)
        svdpi.pca_projector_vjp(w, v, g, n_components=3)
    cp.cuda.Device().synchronize()


@pytest.mark.gpu
def test_gpu_dlpack_parity_with_torch(cp, torch_cuda):
    """One buffer seen by CuPy and PyTorch gives the same eigenpairs and gradients."""
    import svdpi.torch

    torch = torch_cuda
    rng = np.random.default_rng(14)
    a_cupy = cp.asarray(random_spd(6, rng, batch=(4,)))
    a_torch = torch.from_dlpack(a_cupy)
    assert a_torch.data_ptr() == a_cupy.data.ptr  # zero copy
    assert a_torch.device.type == "cuda"

    w_c, v_c = svdpi.eig(a_cupy)
    w_t, v_t = svdpi.torch.eig(a_torch.clone().requires_grad_())
    assert_close(w_c, w_t, rtol=1e-12)
    # Eigenvectors are defined up to sign: compare the projectors v_j v_jᵀ.
    proj_c = cp.asnumpy(v_c[..., :, None, :] * v_c[..., None, :, :])
    proj_t = (v_t[..., :, None, :] * v_t[..., None, :, :]).detach().cpu().numpy()
    assert_close(proj_c, proj_t, rtol=1e-10)

    # A sign-invariant loss: L = Σ c ∘ v∘v + Σ d ∘ λ.
    c = rng.standard_normal((4, 6, 6))
    d = rng.standard_normal((4, 6))
    for method in METHODS:
        a_leaf = torch.from_dlpack(a_cupy).clone().requires_grad_()
        w_t, v_t = svdpi.torch.eig(a_leaf, method=method)
        c_t, d_t = torch.as_tensor(c, device="cuda"), torch.as_tensor(d, device="cuda")
        ((c_t * v_t * v_t).sum() + (d_t * w_t).sum()).backward()
        g_cupy = svdpi.eig_vjp(w_c, v_c, cp.asarray(d), 2 * cp.asarray(c) * v_c, method=method)
        assert_close(g_cupy, a_leaf.grad, rtol=1e-10, err_msg=method)

    # The same (w, v, cotangents) through DLPack: the fused CuPy kernel and the
    # generic code on torch tensors agree to round-off.
    gv = cp.asarray(rng.standard_normal((4, 6, 6)))
    g_fast = svdpi.eig_vjp(w_c, v_c, None, gv)
    g_torch = svdpi.eig_vjp(
        torch.from_dlpack(cp.ascontiguousarray(w_c)),
        torch.from_dlpack(cp.ascontiguousarray(v_c)),
        None,
        torch.from_dlpack(gv),
    )
    assert isinstance(g_torch, torch.Tensor)
    assert_close(g_fast, g_torch, rtol=1e-12)
    back = cp.from_dlpack(g_torch)
    assert back.data.ptr == g_torch.data_ptr()


@pytest.mark.gpu
def test_gpu_fused_kernel_validates(cp):
    import svdpi.cupy

    with pytest.raises(TypeError, match=r"cupy\.ndarray"):
        svdpi.cupy.coefficient_matrix(np.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        svdpi.cupy.coefficient_matrix(cp.ones(3, dtype="float16"))
    with pytest.raises(ValueError, match="method must be one of"):
        svdpi.cupy.coefficient_matrix(cp.ones(3), method="svd")
    with pytest.raises(ValueError, match="num_iters must be >= 1"):
        svdpi.cupy.coefficient_matrix(cp.ones(3), num_iters=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_empty_input_gives_empty_results(cp, dtype):
    """n = 0 and empty batches: empty results, as cupy.linalg.eigh and the core give them."""
    import svdpi.cupy

    for shape in [(0, 0), (3, 0, 0), (0, 4, 4), (2, 0, 3, 3)]:
        a = cp.zeros(shape, dtype=dtype)
        w, v = svdpi.eig(a)
        assert w.shape == shape[:-1]
        assert v.shape == shape
        grad = cp.ones(shape, dtype=dtype)
        for result in (
            svdpi.eig_vjp(w, v, None, grad),
            svdpi.eig_jvp(w, v, grad)[1],
            svdpi.zca_whitening_matrix_vjp(w, v, grad),
            svdpi.cupy.coefficient_matrix(w),
        ):
            assert isinstance(result, cp.ndarray)
            assert result.shape == shape
            assert result.dtype == a.dtype


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
def test_gpu_cupy_generates_the_source_the_nvrtc_test_compiles(cp, method, dtype):
    """tests/test_cupy_nvrtc.py compiles, on CI, the very text CuPy generates here.

    CuPy keeps the source it generated for each dtype (``cached_codes``):
    equal, up to whitespace, to ``tests/_cupy_nvrtc.elementwise_code``.
    """
    import difflib

    from svdpi.cupy import _native

    from ._cupy_helpers import kernel_source
    from ._cupy_nvrtc import elementwise_code, normalize_whitespace

    w = cp.asarray([3.0, 2.0, 1.0], dtype=dtype)
    b = cp.ones((3, 3), dtype=dtype)
    _native.coefficient_matrix(w, method=method)
    for symmetrize in (False, True):
        _native.coefficient_product(w, b, method=method, num_iters=19, symmetrize=symmetrize)
    for mode in kernel_source.MODES:
        kernel = _native._kernel(method, mode)
        codes = [code for types, code in kernel.cached_codes.items() if cp.dtype(dtype) in types]
        assert len(codes) == 1, (mode, list(kernel.cached_codes))
        ours = elementwise_code(kernel_source.kernel_spec(method, mode), dtype)
        if normalize_whitespace(codes[0]) != normalize_whitespace(ours):
            diff = difflib.unified_diff(
                ours.splitlines(), codes[0].splitlines(), "tests/_cupy_nvrtc", "CuPy", lineterm=""
            )
            pytest.fail(f"{mode}: CuPy generated other source:\n" + "\n".join(diff))
