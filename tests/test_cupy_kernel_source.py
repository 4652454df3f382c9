"""The generated CUDA source: its text, the kernel specs, the formula subset.

And the source itself compiled for the host and run against the core.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._cupy_helpers import (
    METHODS,
    SPECTRA,
    compile_host_kernels,
    core_coefficients,
    kernel_source,
)
from ._helpers import assert_close

# --- the generated CUDA source ------------------------------------------------------


def test_generated_source_has_the_formula():
    pi = kernel_source.cuda_preamble("pi")
    assert "template <typename Real>\n__device__ void svdpi_coefficient_parts_pi(" in pi
    for fragment in (
        "log1p(",
        "expm1(",
        "fabs((lr - lc))",
        "svdpi_maximum<Real>(lam_row, lam_floor)",
        "const Real terms = num_iters;",  # T terms on both sides ...
        "const Real extra = ((power_minus_one + Real(1)) / big);",  # ... and r^T above
        # r = 1: no 0/0, and exactly `terms`
        "const Real equal = ((ratio_minus_one == Real(0)) ? Real(Real(1)) : Real(Real(0)));",
        "((power_minus_one / (ratio_minus_one - equal)) + (equal * terms))",
        "*antisymmetric_out = antisymmetric;",
        "*extra_out = extra;",
    ):
        assert fragment in pi, fragment
    taylor = kernel_source.cuda_preamble("taylor")
    assert "const Real terms = (num_iters + Real(1));" in taylor
    assert "const Real extra = Real(0);" in taylor
    analytic = kernel_source.cuda_preamble("analytic")
    assert "(lam_row - lam_col)" in analytic
    assert "log1p" not in analytic.split("svdpi_coefficient_parts_analytic")[1]


@pytest.mark.parametrize("method", METHODS)
def test_kernel_specs(method):
    coefficients = kernel_source.kernel_spec(method, "coefficients")
    product = kernel_source.kernel_spec(method, "product")
    symmetric = kernel_source.kernel_spec(method, "symmetric_product")
    assert coefficients.name == f"svdpi_coefficients_{method}"
    assert "raw T b" not in coefficients.in_params
    assert "raw T b" in product.in_params
    assert product.out_params == symmetric.out_params == "T out"
    call = f"svdpi_coefficient_parts_{method}<T>"
    parts = "floor_k, eps, num_iters, &antisymmetric, &extra);"
    assert f"{call}(lam_p, lam_q, p, q, {parts}" in coefficients.operation
    # A^T: the product reads A[q, p] for the entry (p, q).
    assert f"{call}(lam_q, lam_p, q, p, {parts}" in product.operation
    assert "out = ((q < p) ? antisymmetric + extra : antisymmetric) * b[i];" in product.operation
    # The symmetrised product never subtracts one coefficient from another.
    assert f"{call}(lam_p, lam_q, p, q, {parts}" in symmetric.operation
    assert "b[k * nn + q * n + p]" in symmetric.operation
    assert "(antisymmetric * (b_qp - b[i]) + extra * b_below) * T(0.5)" in symmetric.operation
    assert "b[" not in coefficients.operation


def test_kernel_spec_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        kernel_source.kernel_spec("svd", "product")
    with pytest.raises(ValueError, match="mode must be one of"):
        kernel_source.kernel_spec("pi", "transpose")


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("antisymmetric = lam_row.real", "expression not allowed"),
        ("antisymmetric = sqrt(lam_row)", "call not allowed"),
        ("antisymmetric = where(row < col, 1)", "takes 3 arguments"),
        ("antisymmetric = later + 1\nlater = 1", "used before it is assigned"),
        ("antisymmetric = lam_row ** 2", "operator not allowed"),
        ("antisymmetric = 0 < row < col", "single comparisons"),
        ("x, y = 1, 2\nantisymmetric = 1", "only 'name = expression'"),
        ("x = 1", "must end by assigning 'antisymmetric', then 'extra'"),
        ("extra = 0\nantisymmetric = 1", "must end by assigning 'antisymmetric', then 'extra'"),
        ("antisymmetric = True", "only int and float constants"),
    ],
)
def test_formula_subset_is_enforced(monkeypatch, formula, message):
    monkeypatch.setitem(kernel_source.FORMULAS, "pi", formula)
    with pytest.raises(ValueError, match=message):
        kernel_source.parse_formula("pi")


# --- the generated C, compiled for the host --------------------------------------------


@pytest.fixture(scope="module")
def host_kernels():
    return compile_host_kernels()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_generated_kernels_compiled_for_the_host_equal_the_core(host_kernels, method, dtype):
    rng = np.random.default_rng(3)
    if method == "analytic":  # 1 / (λ_p − λ_q): ties would give inf − inf in the products
        w = np.stack([SPECTRA["random"], SPECTRA["random"] * 1e-3, np.geomspace(5, 1e-4, 6)])
    else:
        w = np.stack([SPECTRA["random"], SPECTRA["ties"], np.r_[SPECTRA["negative"], 0.0, 0.0]])
    w = w.astype(dtype)
    b = rng.standard_normal((3, 6, 6)).astype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    a = core_coefficients(w, method, 19)
    at_b = np.swapaxes(a, -1, -2) * b
    expected = {
        "coefficients": a,
        "product": at_b,
        "symmetric_product": (at_b + np.swapaxes(at_b, -1, -2)) * dtype(0.5),
    }
    for mode in kernel_source.MODES:
        actual = host_kernels(method, mode, w, b if mode != "coefficients" else None, 19)
        finite = np.isfinite(expected[mode])
        np.testing.assert_array_equal(np.isfinite(actual), finite, err_msg=mode)
        scale = np.max(np.abs(expected[mode][finite]))
        np.testing.assert_allclose(
            actual[finite], expected[mode][finite], rtol=0, atol=rtol * scale, err_msg=mode
        )


@pytest.mark.parametrize("num_iters", [10**6, 2**23, 2**24, 2**53])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_kernels_are_exact_for_equal_eigenvalues_at_any_num_iters(
    host_kernels, num_iters, dtype
):
    import array_api_compat.numpy as xp

    from svdpi._coefficients import coefficient_product

    w = np.array([[3.0, 1.0, 1.0]], dtype=dtype)
    b = np.ones((1, 3, 3), dtype=dtype)
    for mode, symmetrize in (("product", False), ("symmetric_product", True)):
        expected = coefficient_product(
            w, b, method="pi", num_iters=num_iters, symmetrize=symmetrize, xp=xp
        )
        actual = host_kernels("pi", mode, w, b, num_iters)
        assert_close(actual, expected, rtol=4 * np.finfo(dtype).eps, err_msg=mode)
    assert actual[0, 1, 2] == 0.5
