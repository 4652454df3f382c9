"""Bad input gets a TypeError or ValueError that names the argument."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import from_numpy, to_numpy

import svdpi


@pytest.fixture
def pair(xp):
    w, v = svdpi.eig(from_numpy(xp, np.diag([3.0, 2.0, 1.0])))
    return xp, w, v


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3,), r"a must have shape \(\.\.\., n, n\)"),
        ((2, 3), "a must be square"),
    ],
)
def test_eig_rejects_bad_shapes(xp, shape, match):
    with pytest.raises(ValueError, match=match):
        svdpi.eig(xp.zeros(shape, dtype=xp.float64))


@pytest.mark.parametrize(
    ("dtype_name", "error", "match"),
    [
        ("int64", TypeError, "a must have a floating dtype"),
        ("bool", TypeError, "a must have a floating dtype"),
        ("float16", TypeError, "half precision is not supported, upcast to float32"),
    ],
)
def test_eig_rejects_bad_dtypes(xp, dtype_name, error, match):
    dtype = getattr(xp, dtype_name, None)
    if dtype is None:
        pytest.skip(f"{xp.__name__} has no {dtype_name}")
    with pytest.raises(error, match=match):
        svdpi.eig(xp.zeros((2, 2), dtype=dtype))


def test_bfloat16_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="half precision"):
        svdpi.eig(torch.eye(2, dtype=torch.bfloat16))


def test_vjp_rejects_bad_cotangents(pair):
    xp, w, v = pair
    with pytest.raises(ValueError, match=r"grad_eigenvalues must have shape \(3,\)"):
        svdpi.eig_vjp(w, v, xp.zeros((2,), dtype=xp.float64), None)
    with pytest.raises(ValueError, match=r"grad_eigenvectors must have shape \(3, 3\)"):
        svdpi.eig_vjp(w, v, None, xp.zeros((2, 3, 3), dtype=xp.float64))
    with pytest.raises(TypeError, match="grad_eigenvectors must have dtype"):
        svdpi.eig_vjp(w, v, None, xp.zeros((3, 3), dtype=xp.float32))
    with pytest.raises(TypeError, match="grad_eigenvalues must have a real floating dtype"):
        svdpi.eig_vjp(w, v, xp.zeros((3,), dtype=xp.int64), None)


def test_vjp_rejects_mismatched_eigenpairs(pair):
    xp, w, v = pair
    with pytest.raises(ValueError, match="eigenvalues must have shape"):
        svdpi.eig_vjp(w[:2], v, None, None)
    with pytest.raises(ValueError, match="eigenvectors must be square"):
        svdpi.eig_vjp(w, v[:, :2], None, None)
    with pytest.raises(TypeError, match="must have the same dtype"):
        svdpi.eig_vjp(xp.astype(w, xp.float32), v, None, None)


def test_jvp_rejects_bad_tangent(pair):
    xp, w, v = pair
    with pytest.raises(ValueError, match=r"tangent_a must have shape \(3, 3\)"):
        svdpi.eig_jvp(w, v, xp.zeros((1, 3, 3), dtype=xp.float64))


@pytest.mark.parametrize("function", ["vjp", "jvp"])
def test_method_and_num_iters_are_checked(pair, function):
    _xp, w, v = pair

    def call(**kwargs):
        if function == "vjp":
            return svdpi.eig_vjp(w, v, None, v, **kwargs)
        return svdpi.eig_jvp(w, v, v, **kwargs)

    with pytest.raises(ValueError, match="method must be one of 'pi', 'taylor', 'analytic'"):
        call(method="svd")
    with pytest.raises(ValueError, match="num_iters must be >= 1, got 0"):
        call(num_iters=0)
    for bad in (2.5, "19", True, None):
        with pytest.raises(TypeError, match="num_iters must be an integer"):
            call(num_iters=bad)
    call(num_iters=np.int64(3))  # NumPy integers are integers


def test_whitening_arguments_are_checked(pair):
    xp, w, v = pair
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        svdpi.zca_whitening_matrix(w, v, mask=w)
    with pytest.raises(ValueError, match="mask must have the shape of eigenvalues"):
        svdpi.zca_whitening_matrix(w, v, mask=xp.ones((2,), dtype=xp.bool))
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 3\], got 4"):
        svdpi.pca_projector(v, n_components=4)
    with pytest.raises(TypeError, match="n_components must be an integer"):
        svdpi.pca_projector(v, n_components=True)
    with pytest.raises(ValueError, match="grad_whitening must have shape"):
        svdpi.zca_whitening_matrix_vjp(w, v, w)
    with pytest.raises(ValueError, match="max_energy must be a finite number > 0 and <= 1"):
        svdpi.truncation_mask(w, max_energy=1.5)
    with pytest.raises(ValueError, match="energy_rule must be"):
        svdpi.truncation_mask(w, max_energy=0.5, energy_rule="paper")


def _truncated_whitening_callers():
    """Every entry point that takes the truncation options up front, as (name, call)."""
    callers = [
        (
            "truncation_mask",
            lambda **options: svdpi.truncation_mask(np.ones(3), **options),
        )
    ]
    try:
        import svdpi.torch
    except ImportError:
        pass
    else:
        callers.append(("ZCAWhitening", lambda **options: svdpi.torch.ZCAWhitening(4, **options)))
    try:
        import jax.numpy as jnp

        import svdpi.jax
    except ImportError:
        pass
    else:
        x = jnp.ones((8, 4)).cumsum(0)
        callers.append(("zca_whitening", lambda **options: svdpi.jax.zca_whitening(x, **options)))
    return callers


@pytest.mark.parametrize(("name", "call"), _truncated_whitening_callers())
def test_truncation_options_get_the_same_errors_everywhere(name, call):
    # The same words everywhere: the core (Truncation), the PyTorch layer, svdpi.jax.
    with pytest.raises(
        ValueError, match=r"max_energy must be a finite number > 0 and <= 1, got 1\.5"
    ):
        call(max_energy=1.5)
    with pytest.raises(ValueError, match="energy_rule must be 'preceding' or 'inclusive'"):
        call(max_energy=0.5, energy_rule="paper")


def test_a_none_tangent_means_zero(pair):
    """Issue 18: eig_jvp(w, v, None) raised AttributeError; None means zero, as for cotangents."""
    _xp, w, v = pair
    dw, dv = svdpi.eig_jvp(w, v, None)
    assert tuple(dw.shape) == (3,)
    assert tuple(dv.shape) == (3, 3)
    assert not np.any(to_numpy(dw))
    assert not np.any(to_numpy(dv))


@pytest.mark.parametrize("p", [10**400, -(10**400)])
def test_an_exponent_too_large_for_a_float_is_refused_by_name(p):
    """Issue 18: p = 10**400 raised a raw OverflowError."""
    w, v = svdpi.eig(np.eye(2))
    with pytest.raises(ValueError, match="p must be finite, got an integer too large"):
        svdpi.matrix_power(w, v, p)
    with pytest.raises(ValueError, match="p must be finite"):
        svdpi.functions.Power(p)


def test_num_iters_too_large_for_a_float_is_refused_by_name(pair):
    _, w, v = pair
    with pytest.raises(ValueError, match=r"num_iters must be at most 2\*\*63 - 1"):
        svdpi.eig_vjp(w, v, None, v, num_iters=10**400)
    svdpi.eig_vjp(w, v, None, v, num_iters=2**63 - 1)  # the largest accepted


def test_a_cotangent_on_another_device_is_refused():
    """Issue 18: a meta cotangent with CPU eigenpairs gave a CPU tensor of uninitialised memory."""
    torch = pytest.importorskip("torch")
    w, v = svdpi.eig(torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)))
    meta = torch.empty(3, 3, dtype=torch.float64, device="meta")
    calls = {
        "grad_eigenvectors": lambda: svdpi.eig_vjp(w, v, None, meta),
        "grad_eigenvalues": lambda: svdpi.eig_vjp(w, v, meta[0], None),
        "tangent_a": lambda: svdpi.eig_jvp(w, v, meta),
        "grad": lambda: svdpi.matrix_power_vjp(w, v, 0.5, meta),
        "grad_whitening": lambda: svdpi.zca_whitening_matrix_vjp(w, v, meta),
        "grad_projector": lambda: svdpi.pca_projector_vjp(w, v, meta),
        "tangent": lambda: svdpi.spectral_map_hvp(w, v, svdpi.functions.Log(), v, meta),
        "mask": lambda: svdpi.matrix_log(
            w, v, mask=torch.ones(3, dtype=torch.bool, device="meta")
        ),
        "eigenvalues": lambda: svdpi.matrix_log(w.to("meta"), v),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name} is on device meta"):
            call()


def test_a_cotangent_of_another_library_is_refused_by_name():
    torch = pytest.importorskip("torch")
    w, v = svdpi.eig(torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)))
    g = np.ones((3, 3))
    with pytest.raises(TypeError, match="grad_eigenvectors is an array of numpy"):
        svdpi.eig_vjp(w, v, None, g)
    with pytest.raises(TypeError, match="grad is an array of numpy"):
        svdpi.matrix_power_vjp(w, v, 0.5, g)
    with pytest.raises(TypeError, match="tangent_a is an array of numpy"):
        svdpi.eig_jvp(w, v, g)
    with pytest.raises(TypeError, match="eigenvalues is an array of numpy"):
        svdpi.matrix_log(np.ones(3), v)
    # With the namespace given, the check still names the argument.
    import array_api_compat.torch as xp_torch

    with pytest.raises(TypeError, match="grad is an array of numpy"):
        svdpi.matrix_log_vjp(w, v, g, xp=xp_torch)
    with pytest.raises(TypeError, match="grad_eigenvectors must be an array, got list"):
        svdpi.eig_vjp(w, v, None, [[0.0] * 3] * 3)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"min_eigenvalue": float("nan")}, ValueError, "min_eigenvalue must be a finite number"),
        ({"min_eigenvalue": float("inf")}, ValueError, "min_eigenvalue must be a finite number"),
        ({"max_energy": float("nan")}, ValueError, "max_energy must be a finite number > 0"),
        ({"max_energy": "0.5"}, TypeError, "max_energy must be a real number"),
        ({"min_eigenvalue": "1e-5"}, TypeError, "min_eigenvalue must be a real number"),
        ({"min_eigenvalue": True}, TypeError, "min_eigenvalue must be a real number"),
        ({"max_energy": np.array(0.5)}, TypeError, "max_energy must be a real number"),
        (
            {"max_energy": 0.0},
            ValueError,
            "max_energy must be a finite number > 0 and <= 1, got 0.0",
        ),
        ({"energy_rule": None}, ValueError, "energy_rule must be 'preceding' or 'inclusive'"),
    ],
)
def test_truncation_options_are_checked(options, error, match):
    """Issue 18: NaN options were accepted (dropping every pair), '0.5' raised a raw TypeError."""
    with pytest.raises(error, match=match):
        svdpi.truncation_mask(np.ones(3), **options)
    with pytest.raises(error, match=match):
        svdpi.Truncation(**options)


def test_truncation_of_0d_eigenvalues_is_refused(xp):
    """Issue 18: 0-d eigenvalues gave a mask of shape (1,); a spectrum needs an axis."""
    with pytest.raises(ValueError, match="eigenvalues must have shape"):
        svdpi.truncation_mask(xp.asarray(1.0, dtype=xp.float64), max_energy=0.5)
