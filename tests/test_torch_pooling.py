"""svdpi.torch.CovariancePooling against a literal per-sample loop with torch.linalg.eigh."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import svdpi.torch  # noqa: E402

from ._helpers import assert_close  # noqa: E402


def _features(shape, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    # Channels mixed by a random matrix: a covariance with a spread-out spectrum.
    mixing = torch.randn(shape[1], shape[1], generator=generator, dtype=dtype)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    return torch.einsum("dc,nc...->nd...", mixing, x)


def _loop_reference(x, p, eps, normalize_trace, triu=True):
    """MPN-COV / iSQRT-COV written per sample: covariance, eigh, power, upper triangle."""
    outputs = []
    for sample in x:
        features = sample.reshape(sample.shape[0], -1)
        m = features.shape[1]
        centred = features - features.mean(dim=1, keepdim=True)
        cov = centred @ centred.T / m + eps * torch.eye(features.shape[0], dtype=x.dtype)
        scale = torch.trace(cov) if normalize_trace else torch.ones((), dtype=x.dtype)
        w, v = torch.linalg.eigh(cov / scale)
        result = (v * (w**p)) @ v.T * scale**p
        if triu:
            rows, cols = torch.triu_indices(*result.shape)
            result = result[rows, cols]
        outputs.append(result)
    return torch.stack(outputs)


@pytest.mark.parametrize("p", [0.5, 1.0, -0.5, 0.3])
@pytest.mark.parametrize("normalize_trace", [False, True])
@pytest.mark.parametrize("method", ["exact", "analytic"])
def test_matches_the_per_sample_loop(p, normalize_trace, method):
    x = _features((3, 5, 4, 6), seed=0)
    g = torch.randn(3, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pool = svdpi.torch.CovariancePooling(
        p, eps=1e-3, normalize_trace=normalize_trace, method=method
    )
    x1 = x.clone().requires_grad_(True)
    out = pool(x1)
    x2 = x.clone().requires_grad_(True)
    expected = _loop_reference(x2, p, 1e-3, normalize_trace)
    assert out.shape == (3, 15)
    assert_close(out, expected, rtol=1e-11)
    (grad,) = torch.autograd.grad(out, x1, g)
    (expected_grad,) = torch.autograd.grad(expected, x2, g)
    # Separated spectra: autograd through eigh is the exact gradient.
    assert_close(grad, expected_grad, rtol=1e-9)


def test_matrix_output_and_triu_order():
    x = _features((2, 4, 3, 3), seed=2)
    matrix = svdpi.torch.CovariancePooling(output="matrix")(x)
    vector = svdpi.torch.CovariancePooling()(x)
    assert matrix.shape == (2, 4, 4)
    assert_close(matrix, matrix.mT, rtol=1e-14)
    # Row by row: (0,0), (0,1), ..., (0,3), (1,1), ...
    assert_close(vector[:, :4], matrix[:, 0, :], rtol=0)
    assert_close(vector[:, 4:7], matrix[:, 1, 1:], rtol=0)
    assert_close(vector[:, -1], matrix[:, 3, 3], rtol=0)


@pytest.mark.parametrize("normalize_trace", [False, True])
def test_square_root_squared_is_the_covariance(normalize_trace):
    x = _features((4, 6, 5, 5), seed=3)
    pool = svdpi.torch.CovariancePooling(
        eps=1e-4, normalize_trace=normalize_trace, output="matrix"
    )
    root = pool(x)
    assert_close(root @ root, pool.covariance(x), rtol=1e-12)


def test_float32_channels_last_and_fewer_positions_than_channels():
    x = _features((2, 16, 3, 3), seed=4, dtype=torch.float32)
    pool = svdpi.torch.CovariancePooling(eps=1e-3, output="matrix")
    out = pool(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.float32
    assert_close(out, pool(x.double()), rtol=1e-4)
    x.requires_grad_(True)
    pool(x).sum().backward()
    assert torch.isfinite(x.grad).all()  # rank-9 covariance of 16 channels, kept finite by eps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_autocast_pool_in_float32(dtype):
    x = _features((2, 6, 4, 4), seed=5, dtype=torch.float32)
    pool = svdpi.torch.CovariancePooling(eps=1e-3, method="exact")
    expected = pool(x.to(dtype).float())
    out = pool(x.to(dtype))
    assert out.dtype == dtype
    assert_close(out.float(), expected.to(dtype).float(), rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = torch.nn.functional.conv2d(x, torch.eye(6)[:, :, None, None])
        assert features.dtype == torch.bfloat16
        pooled = pool(features)
    assert pooled.dtype == torch.bfloat16
    assert torch.isfinite(pooled.float()).all()


@pytest.mark.parametrize("method", ["exact", "pi", "taylor"])
def test_finite_gradient_with_duplicated_channels(method):
    # Channels 3 and 4 copy channel 0: the covariance has the eigenvalue eps
    # twice. Every method's gradient is finite; "exact" is the derivative.
    base = _features((2, 3, 4, 4), seed=6)
    x = torch.cat([base, base[:, :1], base[:, :1]], dim=1)
    g = torch.randn(2, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    pool = svdpi.torch.CovariancePooling(eps=1e-3, method=method)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(pool(xg), xg, g)
    assert torch.isfinite(grad).all()
    if method == "exact":
        direction = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(8))
        h = 1e-6
        fd = ((pool(x + h * direction) - pool(x - h * direction)) * g).sum() / (2 * h)
        assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_the_default_method_is_exact():
    # Since 0.3 the pooling's gradient is the derivative of Σ^p (0.2: "pi"),
    # which differs from "pi" where eigenvalue ratios are near 1 (here
    # 0.95: 19 power-iteration steps leave 0.95^19 ≈ 0.38 of the error).
    generator = torch.Generator().manual_seed(9)
    positions = torch.linalg.qr(torch.randn(16, 5, dtype=torch.float64, generator=generator))[0]
    positions = positions[:, 1:] - positions[:, 1:].mean(dim=0)  # centred columns
    q = torch.linalg.qr(positions)[0]  # orthonormal, orthogonal to the constant
    rotation = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=generator))[0]
    spectrum = torch.tensor([1.0, 0.95, 0.9, 0.85], dtype=torch.float64)
    x = (rotation * spectrum.sqrt()) @ q.T * 4.0  # covariance R diag(spectrum) Rᵀ
    x = x.reshape(1, 4, 4, 4)
    g = torch.randn(1, 10, dtype=torch.float64, generator=generator)
    gradients = {}
    for method in (None, "exact", "pi"):
        options = {} if method is None else {"method": method}
        pool = svdpi.torch.CovariancePooling(**options)
        xg = x.clone().requires_grad_(True)
        (gradients[method],) = torch.autograd.grad(pool(xg), xg, g)
    assert svdpi.torch.CovariancePooling().method == "exact"
    assert torch.equal(gradients[None], gradients["exact"])
    difference = (gradients["pi"] - gradients[None]).norm() / gradients[None].norm()
    assert difference > 0.1, float(difference)  # measured 0.18


def test_empty_batch():
    x = torch.zeros(0, 5, 4, 4, requires_grad=True)
    out = svdpi.torch.CovariancePooling()(x)
    assert out.shape == (0, 15)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert svdpi.torch.CovariancePooling(output="matrix")(x).shape == (0, 5, 5)


def test_meta_device():
    x = torch.empty(2, 5, 3, 3, device="meta")
    out = svdpi.torch.CovariancePooling(normalize_trace=True)(x)
    assert out.device.type == "meta"
    assert out.shape == (2, 15)


def test_compile_fullgraph_in_a_fresh_process():
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", FutureWarning)
        import torch
        import svdpi.torch

        pool = svdpi.torch.CovariancePooling(normalize_trace=True, method="exact")
        x = torch.randn(3, 6, 5, 5, generator=torch.Generator().manual_seed(0))
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        compiled = torch.compile(pool, fullgraph=True, backend="aot_eager")
        out = compiled(x1)
        out.square().sum().backward()
        pool(x2).square().sum().backward()
        torch.testing.assert_close(out, pool(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
        print("compiled ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled ok" in result.stdout


def test_bad_input_and_arguments():
    pool = svdpi.torch.CovariancePooling()
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor"):
        pool([[1.0]])
    with pytest.raises(TypeError, match="input must have a floating dtype"):
        pool(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one spatial dimension"):
        pool(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no spatial positions"):
        pool(torch.zeros(2, 3, 0, 4))
    with pytest.raises(ValueError, match="p must be finite"):
        svdpi.torch.CovariancePooling(float("nan"))
    with pytest.raises(ValueError, match="eps must be"):
        svdpi.torch.CovariancePooling(eps=-1.0)
    with pytest.raises(ValueError, match="method"):
        svdpi.torch.CovariancePooling(method="newton")
    with pytest.raises(ValueError, match="output must be"):
        svdpi.torch.CovariancePooling(output="vector")
    with pytest.raises((TypeError, ValueError), match="num_iters"):
        svdpi.torch.CovariancePooling(num_iters=0)


def test_repr_lists_the_options():
    text = repr(svdpi.torch.CovariancePooling(method="exact", normalize_trace=True))
    assert "method='exact'" in text
    assert "normalize_trace=True" in text


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("eps", "1e-5", TypeError),
        ("eps", True, TypeError),
        ("eps", None, TypeError),
        ("eps", torch.tensor(1e-5), TypeError),
        ("eps", NAN, ValueError),
        ("eps", INF, ValueError),
        ("eps", 10**400, ValueError),  # beyond the float range: a raw OverflowError in 0.2
        ("normalize_trace", "yes", TypeError),
        ("normalize_trace", 1, TypeError),
        ("normalize_trace", None, TypeError),
        ("normalize_trace", NAN, TypeError),
        ("check_finite", 0, TypeError),
        ("p", "0.5", TypeError),
        ("p", True, TypeError),
        ("p", INF, ValueError),
        ("method", None, ValueError),
        ("num_iters", 2.0, TypeError),
        ("output", ["triu"], ValueError),
    ],
    ids=repr,
)
def test_bad_options_raise_naming_the_option(option, value, error):
    with pytest.raises(error, match=option):
        svdpi.torch.CovariancePooling(**{option: value})


def test_good_options_of_every_numeric_kind_are_accepted():
    import numpy as np

    pool = svdpi.torch.CovariancePooling(
        np.float32(0.5), eps=0, normalize_trace=np.bool_(True), num_iters=np.int64(5)
    )
    assert (pool.p, pool.eps, pool.normalize_trace, pool.num_iters) == (0.5, 0.0, True, 5)
    assert type(pool.eps) is float
    assert type(pool.normalize_trace) is bool
    assert "check_finite=True" in repr(pool)


@pytest.mark.parametrize("p", [0.5, 1.0, -0.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_trace_is_not_normalised(p, dtype):
    # A constant sample with eps = 0 has a zero covariance: Σ / tr Σ is 0 / 0.
    # 0.2 raised "pass check_finite=False" (a flag the layer did not have); the
    # sample is pooled as without normalize_trace, the others as before.
    x = _features((3, 4, 3, 3), seed=9, dtype=dtype)
    x[1] = 2.5
    normalised = svdpi.torch.CovariancePooling(p, eps=0.0, normalize_trace=True, output="matrix")
    plain = svdpi.torch.CovariancePooling(p, eps=0.0, output="matrix")
    out = normalised(x)
    expected = plain(x)
    assert not torch.isnan(out).any()
    assert_close(out[1], expected[1], rtol=0)
    if p > 0:
        assert torch.equal(out[1], torch.zeros_like(out[1]))
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    assert_close(out[[0, 2]], expected[[0, 2]], rtol=rtol)


@pytest.mark.parametrize("p", [1.0, 2.0, 0.5, 0.25, -0.5])
@pytest.mark.parametrize("method", ["pi", "exact", "taylor"])
def test_zero_trace_leaves_the_other_samples_gradients_alone(method, p):
    x = _features((3, 4, 3, 3), seed=10)
    x[1] = 2.5
    g = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    pool = svdpi.torch.CovariancePooling(p, eps=0.0, normalize_trace=True, method=method)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(pool(xg), xg, g)
    if 0 < p < 1:
        # λ^p has an infinite slope at 0: no derivative at the zero covariance,
        # NaN in every entry of that sample, as through torch.linalg.eigh.
        assert torch.isnan(grad[1]).all()
    elif p < 0 and method == "pi":
        # "pi"'s own formula at the zero matrix is ±inf off the diagonal
        # (f(floor) / floor), times the covariance's zero derivative: NaN.
        assert torch.isnan(grad[1]).any()
    else:
        # p >= 1: the pooled matrix is a polynomial in the covariance, quadratic
        # in the centred features, whose derivative vanishes at a constant
        # sample; p < 0 ("exact", "taylor"): the floored function is constant
        # near the zero matrix.
        assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    for k in (0, 2):
        xk = x[k : k + 1].clone().requires_grad_(True)
        (alone,) = torch.autograd.grad(pool(xk), xk, g[k : k + 1])
        assert torch.isfinite(grad[k]).all()
        assert_close(grad[k], alone[0], rtol=1e-12)


@pytest.mark.parametrize("normalize_trace", [False, True])
def test_overflowing_covariance_of_a_finite_input_is_named(normalize_trace):
    pool = svdpi.torch.CovariancePooling(normalize_trace=normalize_trace)
    x = _features((2, 3, 4, 4), seed=12, dtype=torch.float32)
    x[0, 1, 2, 2] = 1e20
    with pytest.raises(ValueError, match="input is finite") as info:
        pool(x)
    message = str(info.value)
    assert "CovariancePooling" in message
    assert "overflowed float32" in message
    assert "check_finite" not in message  # 0.2 pointed to a flag the layer did not have
    assert torch.isfinite(pool(x.double())).all()


def test_trace_overflowing_while_the_covariance_is_finite_is_named():
    # Every variance 1e38 (finite in float32), the sum of the four is not.
    x = torch.zeros(1, 4, 2, 1)
    x[0, :, 0, 0] = 1e19
    x[0, :, 1, 0] = -1e19
    cov = svdpi.torch.CovariancePooling(eps=0.0).covariance(x)
    assert torch.isfinite(cov).all()
    with pytest.raises(ValueError, match="covariance's trace overflowed float32"):
        svdpi.torch.CovariancePooling(eps=0.0, normalize_trace=True)(x)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_input_is_named_and_check_finite_skips_the_check(bad, monkeypatch):
    x = _features((2, 3, 4, 4), seed=13)
    x[1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="CovariancePooling: the input has NaN or infinite"):
        svdpi.torch.CovariancePooling()(x)
    # check_finite=False reads nothing on the host: NaN out (or LAPACK refuses).

    def no_host_read(*args, **kwargs):
        raise AssertionError("the layer read the covariance on the host")

    monkeypatch.setattr(torch, "isfinite", no_host_read)
    try:
        out = svdpi.torch.CovariancePooling(check_finite=False)(x)
    except torch.linalg.LinAlgError:
        return
    assert torch.isnan(out[1]).all()


def test_one_finiteness_check_per_forward(monkeypatch):
    calls = []
    isfinite = torch.isfinite

    def counting(t):
        calls.append(tuple(t.shape))
        return isfinite(t)

    monkeypatch.setattr(torch, "isfinite", counting)
    svdpi.torch.CovariancePooling(normalize_trace=True)(_features((2, 3, 4, 4), seed=14))
    # The covariances and the traces, combined into one flag on the device.
    assert calls == [(2, 3, 3), (2, 1, 1)]
