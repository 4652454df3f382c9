"""Second derivatives of svdpi.torch's spectral maps (method="exact"), against oracles.

The oracle of a Hessian-vector product is independent of svdpi's formula:
for ``L(a) = <Ḡ, F(sym a)>`` the double backward along ``H`` has entries
``∂²/∂s∂u L(A + s·E_ij + u·H)``, evaluated in 80-digit mpmath from the
eigendecomposition of the perturbed matrices (``mpmath.eigsy``) by a
four-point mixed difference with step ``1e-20`` (truncation error about
``1e-40``, round-off about ``1e-40``). The matrices are exact in binary:
``Q diag(λ) Qᵀ`` with ``Q = I − ½·𝟙𝟙ᵀ`` (entries ±½, orthogonal), so a
triple tie in the test is a triple tie of the float64 input, not a
rounded one. torch's ``eigh`` splits it by round-off (about 1e-16), which is
what svdpi's second divided differences must absorb.
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdpi.torch  # noqa: E402
from svdpi.functions import Clamp, Custom, Exp, Log, Power, Softplus  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _tanh_derivative(x):
    return 1 - torch.tanh(x) ** 2


def _tanh_second_derivative(x):
    t = torch.tanh(x)
    return -2 * t * (1 - t**2)


TANH = Custom(torch.tanh, _tanh_derivative, _tanh_second_derivative)

# name -> (svdpi function, the same on mpmath numbers)
FUNCTIONS = {
    "sqrt": (Power(0.5), mpmath.sqrt),
    "inv_sqrt": (Power(-0.5), lambda x: 1 / mpmath.sqrt(x)),
    "power 3": (Power(3.0), lambda x: x**3),
    "log": (Log(), mpmath.log),
    "exp": (Exp(), mpmath.exp),
    "softplus": (Softplus(), lambda x: mpmath.log1p(mpmath.exp(x))),
    # The kink (1.5) is at no eigenvalue: F is smooth at these matrices.
    "clamp": (Clamp(1.5), lambda x: max(x, mpmath.mpf(1.5))),
    "custom tanh": (TANH, mpmath.tanh),
}
SPECTRA = {
    "triple tie": (3.0, 1.0, 1.0, 1.0),
    "near tie": (2.0, 1.0 + 2.0**-33, 1.0, 0.5),  # a relative gap of 1.2e-10
}
STEP = mpmath.mpf("1e-20")


def _reflection(n):
    return np.eye(n) - 0.5 * np.ones((n, n))  # I − 2uuᵀ, u = 𝟙/2 (n = 4): entries ±1/2


def _matrix(spectrum):
    """``Q diag(λ) Qᵀ``, exact in float64 (dyadic entries)."""
    q = _reflection(len(spectrum))
    return (q * np.array(spectrum)) @ q.T


def _cotangents(n, seed):
    # Symmetric, with entries of few bits (exact in binary, any precision).
    rng = np.random.default_rng(seed)
    g = np.round(rng.standard_normal((n, n)) * 64) / 64
    h = np.round(rng.standard_normal((n, n)) * 64) / 64
    return g + g.T, h  # H need not be symmetric: only its symmetric part acts


def _mp_function_of(a, scalar):
    """``F(sym a)`` in mpmath."""
    a = (a + a.T) / 2
    values, vectors = mpmath.eigsy(a)
    n = a.rows
    diagonal = mpmath.diag([scalar(values[k]) for k in range(n)])
    return vectors * diagonal * vectors.T


@functools.cache
def _oracle(name, spectrum, seed):
    """The double backward of ``<Ḡ, F(a)>`` along ``H``, entry by entry, in 80 digits."""
    _, scalar = FUNCTIONS[name]
    a = _matrix(spectrum)
    g, h = _cotangents(len(spectrum), seed)
    n = len(spectrum)
    with mpmath.workdps(80):
        a_mp, g_mp, h_mp = (mpmath.matrix(x.tolist()) for x in (a, g, h))

        def loss(s, i, j, u):
            e = mpmath.zeros(n, n)
            e[i, j] = 1
            f = _mp_function_of(a_mp + s * e + u * h_mp, scalar)
            return mpmath.fsum(g_mp[p, q] * f[p, q] for p in range(n) for q in range(n))

        result = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                mixed = (
                    loss(STEP, i, j, STEP)
                    - loss(STEP, i, j, -STEP)
                    - loss(-STEP, i, j, STEP)
                    + loss(-STEP, i, j, -STEP)
                ) / (4 * STEP**2)
                result[i, j] = float(mixed)
    return result


def _double_backward(fn, a, g, h):
    x = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.spectral_map(x, fn), x, g, create_graph=True)
    (hvp,) = torch.autograd.grad(grad, x, h)
    return hvp


def _relative(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("spectrum", SPECTRA)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_double_backward_equals_the_mpmath_hessian(name, spectrum):
    fn, _ = FUNCTIONS[name]
    a = torch.from_numpy(_matrix(SPECTRA[spectrum]))
    g, h = (torch.from_numpy(x) for x in _cotangents(a.shape[-1], 0))
    hvp = _double_backward(fn, a, g, h).numpy()
    expected = _oracle(name, SPECTRA[spectrum], 0)
    assert _relative(hvp, expected) < 1e-11, (hvp, expected)  # issue 15: 1e-9


@pytest.mark.parametrize("name", ["inv_sqrt", "log", "exp", "custom tanh"])
def test_hessian_transforms_agree_with_double_backward(name):
    # torch.func.hessian (jacfwd of jacrev), jacrev of jacrev and double
    # backward: three routes through the same derivative nodes (forward mode
    # of the VJP node, its backward, and backward with create_graph).
    fn, _ = FUNCTIONS[name]
    a = torch.from_numpy(_matrix(SPECTRA["triple tie"]))
    g, _ = (torch.from_numpy(x) for x in _cotangents(4, 1))

    def loss(m):
        return (g * svdpi.torch.spectral_map(m, fn)).sum()

    hessian = torch.func.hessian(loss)(a)
    assert hessian.shape == (4, 4, 4, 4)
    reverse = torch.func.jacrev(torch.func.jacrev(loss))(a)
    forward = torch.func.jacfwd(torch.func.jacfwd(loss))(a)
    torch.testing.assert_close(reverse, hessian, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward, hessian, rtol=1e-12, atol=1e-12)
    for i, j in [(0, 0), (1, 2), (3, 1)]:
        direction = torch.zeros(4, 4, dtype=a.dtype)
        direction[i, j] = 1.0
        by_backward = _double_backward(fn, a, g, direction)
        torch.testing.assert_close(hessian[:, :, i, j], by_backward, rtol=1e-12, atol=1e-12)
    # The Hessian of a loss of a function of sym(a) is symmetric as a 16 × 16 matrix.
    flat = hessian.reshape(16, 16)
    torch.testing.assert_close(flat, flat.T, rtol=1e-12, atol=1e-12)


def test_hessian_of_a_nonlinear_loss_equals_the_mpmath_oracle_route():
    # loss = ||F(a)||²: the double backward uses both second-order terms, the
    # Hessian-vector product and the VJP of the cotangent (which depends on a).
    fn = Log()
    a = torch.from_numpy(_matrix(SPECTRA["triple tie"]))
    _, h = (torch.from_numpy(x) for x in _cotangents(4, 2))

    def loss(m):
        return (svdpi.torch.spectral_map(m, fn) ** 2).sum()

    x = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x, create_graph=True)
    (hvp,) = torch.autograd.grad(grad, x, h)
    # d²/dsdu of ||F(A + sE + uH)||² = 2<DF[E], DF[H]> + 2<F, D²F[E, H]>: the
    # first term from the first derivatives, the second is the Hessian above
    # with Ḡ = 2F.
    value = svdpi.torch.spectral_map(a, fn)
    second = _double_backward(fn, a, 2 * value, h)
    jvp_h = torch.func.jvp(lambda m: svdpi.torch.spectral_map(m, fn), (a,), (h,))[1]
    x = a.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(svdpi.torch.spectral_map(x, fn), x, 2 * jvp_h)
    torch.testing.assert_close(hvp, first + second, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["sqrt", "exp", "custom tanh"])
def test_gradgradcheck_at_a_tie(name):
    fn, _ = FUNCTIONS[name]
    a = torch.from_numpy(_matrix(SPECTRA["triple tie"])).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: svdpi.torch.spectral_map(m, fn), (a,))
    assert torch.autograd.gradgradcheck(lambda m: svdpi.torch.spectral_map(m, fn), (a,))


def test_second_derivatives_are_finite_and_basis_free_at_an_exact_tie():
    # At a = 2I every basis is an eigenbasis: the Hessian is f''(2) (E H + H E) / 2
    # symmetrised, whatever eigh returns; autograd through eigh is NaN there.
    a = 2.0 * torch.eye(3, dtype=torch.float64)
    g = torch.eye(3, dtype=torch.float64)
    h = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    hvp = _double_backward(Log(), a, g, h)
    # d²/dsdu tr log(2I + sE + uH) = −tr(E H) / 4 (f'' = −1/x²), for symmetric parts.
    sym = (h + h.mT) / 2
    torch.testing.assert_close(hvp, -sym / 4, rtol=1e-14, atol=1e-15)


def test_third_derivatives_raise_naming_the_function():
    a = torch.from_numpy(_matrix(SPECTRA["near tie"])).requires_grad_(True)
    (grad,) = torch.autograd.grad(svdpi.torch.sqrtm(a).sum(), a, create_graph=True)
    (second,) = torch.autograd.grad((grad**2).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match=r"svdpi\.torch\.sqrtm .*differentiable twice"):
        second.sum().backward()
    with pytest.raises(RuntimeError, match=r"svdpi\.torch\.spectral_map .*differentiable twice"):
        torch.func.jacfwd(torch.func.hessian(lambda m: svdpi.torch.spectral_map(m, Exp()).sum()))(
            a.detach()
        )


def test_vmap_of_the_hessian():
    batch = torch.stack(
        [torch.from_numpy(_matrix(s)) for s in (SPECTRA["triple tie"], SPECTRA["near tie"])]
    )

    def loss(m):
        return svdpi.torch.spectral_map(m, Exp()).sum()

    per_matrix = torch.func.vmap(torch.func.hessian(loss))(batch)
    for k in range(2):
        torch.testing.assert_close(per_matrix[k], torch.func.hessian(loss)(batch[k]))


def test_the_chain_rule_methods_raise_naming_the_function():
    a = torch.from_numpy(_matrix(SPECTRA["near tie"])).requires_grad_(True)
    (grad,) = torch.autograd.grad(
        svdpi.torch.spectral_map(a, Exp(), method="taylor").sum(), a, create_graph=True
    )
    message = r"svdpi\.torch\.spectral_map with method='taylor' is differentiable once"
    with pytest.raises(RuntimeError, match=message):
        grad.sum().backward()


# -- the layers with method="exact": gradient penalties ------------------------------------


def _eigh_map(matrix, scalar, keep=None):
    w, v = torch.linalg.eigh(matrix)
    w, v = w.flip(-1), v.flip(-1)  # descending, as svdpi
    weights = scalar(w) if keep is None else scalar(w) * keep
    return (v * weights[..., None, :]) @ v.mT


def _reference_layer(kind, x, num_groups, eps, weight, bias, n_components=None):
    """The training-mode layer with autograd through torch.linalg.eigh (separated spectra)."""
    n, c = x.shape[:2]
    d = c // num_groups
    xg = x.reshape(n, num_groups, d, -1)
    mean = xg.mean(dim=(0, 3), keepdim=True)
    centred = xg - mean
    flat = centred.permute(1, 2, 0, 3).reshape(num_groups, d, -1)
    cov = flat @ flat.mT / flat.shape[-1]
    eye = torch.eye(d, dtype=x.dtype)
    if kind == "zca":
        matrix = _eigh_map(cov + eps * eye, torch.rsqrt)
    else:
        inv_std = torch.rsqrt(torch.diagonal(cov, dim1=-2, dim2=-1) + eps)
        correlation = cov * inv_std[:, :, None] * inv_std[:, None, :]
        keep = (torch.arange(d) < n_components).to(x.dtype)
        projector = _eigh_map(correlation + eps * eye, torch.ones_like, keep)
        matrix = projector * inv_std[:, None, :]
    y = torch.matmul(matrix, centred)
    y = y * weight.reshape(1, num_groups, d, 1) + bias.reshape(1, num_groups, d, 1)
    return y.reshape(x.shape)


def _penalty(forward, x, parameters):
    """A gradient penalty: ||∂ <y³, 1> / ∂x||², differentiated to ``x`` and the parameters."""
    x = x.clone().requires_grad_(True)
    y = forward(x)
    (grad_x,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
    return torch.autograd.grad((grad_x**2).sum(), [x, *parameters])


@pytest.mark.parametrize("kind", ["zca", "pca"])
@pytest.mark.parametrize("num_groups", [1, 2])
def test_layers_with_the_exact_method_support_double_backward(kind, num_groups):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(24, 6, 5, generator=generator, dtype=torch.float64)
    x = x * torch.linspace(0.5, 2.0, 6, dtype=torch.float64)[:, None]  # separated spectra
    options = {"n_components": 2} if kind == "pca" else {}
    cls = svdpi.torch.ZCAWhitening if kind == "zca" else svdpi.torch.PCADenoising
    layer = cls(6, num_groups=num_groups, method="exact", dtype=torch.float64, **options)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5, generator=generator)
        layer.bias.uniform_(-0.5, 0.5, generator=generator)
    got = _penalty(layer, x, [layer.weight, layer.bias])

    def reference(inputs):
        return _reference_layer(
            kind, inputs, num_groups, layer.eps, layer.weight, layer.bias, **options
        )

    expected = _penalty(reference, x, [layer.weight, layer.bias])
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_zca_layer_gradgradcheck_at_a_repeated_eigenvalue():
    # Samples ±e_i: mean 0 and covariance I / 3, a triple eigenvalue.
    layer = svdpi.torch.ZCAWhitening(3, method="exact", eps=0.0, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    x = torch.cat([eye, -eye]).reshape(6, 3, 1).requires_grad_(True)
    assert torch.autograd.gradgradcheck(layer, (x,))


def test_covariance_pooling_supports_double_backward():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64).requires_grad_(True)
    pool = svdpi.torch.CovariancePooling(method="exact")
    assert torch.autograd.gradgradcheck(pool, (x,))


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: svdpi.torch.ZCAWhitening(3, dtype=torch.float64), "ZCAWhitening"),
        (lambda: svdpi.torch.PCADenoising(3, n_components=2, dtype=torch.float64), "PCADenoising"),
        (
            lambda: svdpi.torch.SyncZCAWhitening(3, method="taylor", dtype=torch.float64),
            "SyncZCAWhitening",
        ),
        (lambda: svdpi.torch.CovariancePooling(method="pi"), "CovariancePooling"),
    ],
)
def test_the_layers_chain_rule_methods_raise_naming_the_layer(make, name):
    layer = make()
    x = torch.randn(8, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=rf"^{name} with method='\w+' is differentiable once"):
        grad.sum().backward()
