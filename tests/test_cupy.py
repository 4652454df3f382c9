"""The CuPy adapter: what can be checked on a CPU, and the GPU tests.

CPU: import hygiene, the dispatch decision, the fused kernel's formula (run
with NumPy through the same statements the CUDA source is generated from, and
the generated C compiled with the host C++ compiler), the eigensolver policy,
argument validation. GPU (``-m gpu``, skipped with a reason without CuPy or a
CUDA device): CuPy arrays in and out, fast paths equal to the generic code,
no host synchronisation in the VJPs, and DLPack parity with PyTorch on CUDA.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import svdpi
from svdpi import _dispatch
from svdpi._coefficients import coefficient_matrix

from ._helpers import assert_close, random_spd, spd_with_spectrum

METHODS = ("pi", "taylor", "analytic")


def _load_pure_module(name):
    """A pure-Python module of svdpi.cupy, loaded without running the package's ``__init__``.

    ``svdpi.cupy`` itself refuses to import without CuPy; its kernel-source
    generator and solver policy need no CuPy and are tested everywhere.
    """
    spec = importlib.util.find_spec("svdpi.cupy")  # imports svdpi, not svdpi.cupy
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_svdpi_cupy_{name}_under_test", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


kernel_source = _load_pure_module("_kernel_source")
solver_policy = _load_pure_module("_solver_policy")


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- import hygiene ------------------------------------------------------------


def test_import_svdpi_never_imports_cupy():
    result = _run_python(
        """
        import sys
        import numpy as np
        import svdpi
        w, v = svdpi.eig(np.diag([3.0, 2.0, 1.0]))
        svdpi.eig_vjp(w, v, None, np.ones((3, 3)))
        svdpi.zca_whitening_matrix_vjp(w, v, np.ones((3, 3)))
        print("cupy" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_import_svdpi_cupy_without_cupy_explains():
    result = _run_python(
        """
        import sys
        sys.modules["cupy"] = None  # what an absent CuPy looks like to `import cupy`
        try:
            import svdpi.cupy
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("imported svdpi.cupy without CuPy")
        """
    )
    assert result.returncode == 0, result.stderr + result.stdout
    message = result.stdout
    assert "svdpi.cupy needs CuPy" in message
    assert "pip install" in message
    assert "works without it" in message  # points to the core


def test_cupy_arrays_are_routed_to_svdpi_cupy():
    # A namespace named like CuPy's is routed to svdpi.cupy._native; with CuPy
    # blocked, that import fails with the adapter's message, proving the route.
    result = _run_python(
        """
        import sys, types
        sys.modules["cupy"] = None
        from svdpi._dispatch import native
        fake_cupy = types.ModuleType("cupy")  # a namespace named like CuPy's
        try:
            native(fake_cupy, "coefficient_product")
        except ImportError as error:
            print("routed:", "svdpi.cupy needs CuPy" in str(error))
        import array_api_compat.numpy as xp
        print("numpy:", native(xp, "coefficient_product"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["routed: True", "numpy: None"]


# --- the kernel's formula, evaluated with NumPy -----------------------------------

SPECTRA = {
    "random": np.array([4.1, 2.7, 2.2, 0.9, 0.35, 0.05]),
    "ties": np.array([3.0, 2.0, 2.0, 2.0, 1.0, 1.0]),
    "zeros": np.array([2.0, 1.0, 0.0, 0.0]),
    "negative": np.array([1.5, 0.5, -1e-9, -0.25]),
    "all_zero": np.zeros(3),
    "all_equal": np.full(4, 0.7),
    "tiny": np.array([1e-300, 1e-301, 1e-305]),
    "wide": np.array([1e8, 1.0, 1e-8]),
}


def _core_coefficients(w, method, num_iters):
    import array_api_compat.numpy as xp

    with np.errstate(divide="ignore"):  # "analytic" is infinite for ties, on purpose
        return coefficient_matrix(w, method=method, num_iters=num_iters, xp=xp)


@pytest.mark.parametrize("num_iters", [1, 5, 19])
@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("method", METHODS)
def test_kernel_formula_equals_core_float64(method, spectrum, num_iters):
    w = SPECTRA[spectrum]
    expected = _core_coefficients(w, method, num_iters)
    actual = kernel_source.coefficient_matrix_numpy(w, method=method, num_iters=num_iters)
    assert actual.dtype == np.float64
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])  # the same infinities
    scale = np.max(np.abs(expected[finite]), initial=0.0)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_kernel_formula_equals_core_float32_batched(method):
    rng = np.random.default_rng(0)
    w = np.sort(rng.random((3, 5)), axis=-1)[..., ::-1].astype(np.float32)
    w[1, 2] = w[1, 1]  # a tie
    w[2, -1] = 0.0  # a zero
    expected = _core_coefficients(w, method, 9)
    actual = kernel_source.coefficient_matrix_numpy(w, method=method, num_iters=9)
    assert actual.dtype == np.float32
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-6)


@pytest.mark.parametrize("symmetrize", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_reference_product_equals_generic(method, symmetrize):
    rng = np.random.default_rng(1)
    w, _ = svdpi.eig(random_spd(5, rng, batch=(2,)))
    b = rng.standard_normal((2, 5, 5))
    a = _core_coefficients(w, method, 19)
    expected = np.swapaxes(a, -1, -2) * b
    if symmetrize:
        expected = (expected + np.swapaxes(expected, -1, -2)) * 0.5
    actual = kernel_source.coefficient_product_numpy(
        w, b, method=method, num_iters=19, symmetrize=symmetrize
    )
    assert_close(actual, expected, rtol=1e-14)


def test_the_reference_twin_as_a_provider_gives_the_core_gradients(monkeypatch):
    # The NumPy twin of the kernels, plugged into the core's hook, must give
    # the generic eig_vjp / eig_jvp: the interface of the fast path is right.
    rng = np.random.default_rng(2)
    w, v = svdpi.eig(spd_with_spectrum([3.0, 2.0, 2.0, 0.5], rng, batch=(3,)))
    gw, gv, t = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((3, 4, 4)),
        rng.standard_normal((3, 4, 4)),
    )
    expected_vjp = svdpi.eig_vjp(w, v, gw, gv)
    expected_jvp = svdpi.eig_jvp(w, v, t)
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    _dispatch.register("numpy", coefficient_product=kernel_source.coefficient_product_numpy)
    assert _dispatch.native(np, "coefficient_product") is not None
    assert_close(svdpi.eig_vjp(w, v, gw, gv), expected_vjp, rtol=1e-13)
    for actual, expected in zip(svdpi.eig_jvp(w, v, t), expected_jvp, strict=True):
        assert_close(actual, expected, rtol=1e-13)


# --- the generated CUDA source ------------------------------------------------------


def test_generated_source_has_the_formula():
    pi = kernel_source.cuda_preamble("pi")
    assert "template <typename Real>\n__device__ Real svdpi_coefficient_pi(" in pi
    for fragment in (
        "log1p(",
        "expm1(",
        "fabs((lr - lc))",
        "svdpi_maximum<Real>(lam_row, lam_floor)",
        "svdpi_minimum<Real>(",  # the cap of log r at -eps²
        "(-(eps * eps))",
        "const Real upper = ((row < col) ? Real(Real(1)) : Real(Real(0)));",
        "const Real terms = (upper + num_iters);",  # T + 1 terms above the diagonal, T below
        "return coefficient;",
    ):
        assert fragment in pi, fragment
    taylor = kernel_source.cuda_preamble("taylor")
    assert "const Real terms = (num_iters + Real(1));" in taylor
    analytic = kernel_source.cuda_preamble("analytic")
    assert "(lam_row - lam_col)" in analytic
    assert "log1p" not in analytic.split("svdpi_coefficient_analytic")[1]


@pytest.mark.parametrize("method", METHODS)
def test_kernel_specs(method):
    coefficients = kernel_source.kernel_spec(method, "coefficients")
    product = kernel_source.kernel_spec(method, "product")
    symmetric = kernel_source.kernel_spec(method, "symmetric_product")
    assert coefficients.name == f"svdpi_coefficients_{method}"
    assert "raw T b" not in coefficients.in_params
    assert "raw T b" in product.in_params
    assert product.out_params == symmetric.out_params == "T out"
    call = f"svdpi_coefficient_{method}<T>"
    # A^T: the product reads A[q, p] for the entry (p, q).
    assert (
        f"out = {call}(lam_q, lam_p, q, p, floor_k, eps, num_iters) * b[i];" in product.operation
    )
    assert "b[k * nn + q * n + p]" in symmetric.operation
    assert "T(0.5)" in symmetric.operation
    assert "b[" not in coefficients.operation


def test_kernel_spec_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        kernel_source.kernel_spec("svd", "product")
    with pytest.raises(ValueError, match="mode must be one of"):
        kernel_source.kernel_spec("pi", "transpose")


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("coefficient = lam_row.real", "expression not allowed"),
        ("coefficient = sqrt(lam_row)", "call not allowed"),
        ("coefficient = where(row < col, 1)", "takes 3 arguments"),
        ("coefficient = later + 1\nlater = 1", "used before it is assigned"),
        ("coefficient = lam_row ** 2", "operator not allowed"),
        ("coefficient = 0 < row < col", "single comparisons"),
        ("x, y = 1, 2\ncoefficient = 1", "only 'name = expression'"),
        ("x = 1", "must end by assigning 'coefficient'"),
        ("coefficient = True", "only int and float constants"),
    ],
)
def test_formula_subset_is_enforced(monkeypatch, formula, message):
    monkeypatch.setitem(kernel_source.FORMULAS, "pi", formula)
    with pytest.raises(ValueError, match=message):
        kernel_source.parse_formula("pi")


# --- the generated C, compiled for the host --------------------------------------------


def _host_program():
    """C++ that runs every kernel's *exact* generated source in a loop over ``i``."""
    parts = [
        "#include <cmath>",
        "#include <cstddef>",
        "#include <cstdio>",
        "#include <cstring>",
        "#include <limits>",
        "#include <vector>",
        "#define __device__",  # the device functions become host functions
        "typedef float T;",  # as CuPy declares its type placeholders, before the preamble
        "using std::expm1;",
        "using std::log1p;",
        kernel_source.CUDA_HELPERS,
    ]
    dispatch = []
    for method in METHODS:
        parts.append(kernel_source.cuda_device_function(method))
        for mode in kernel_source.MODES:
            spec = kernel_source.kernel_spec(method, mode)
            body = textwrap.indent(spec.operation, "        ")
            parts.append(
                f"template <typename T>\nstatic void {spec.name}(const T* w, const T* lam_floor,"
                " const T* b, long long n, T eps, T num_iters, T* out_array, ptrdiff_t size) {\n"
                "    (void)b;\n"
                "    for (ptrdiff_t i = 0; i < size; ++i) {\n"
                "        T& out = out_array[i];\n"
                f"{body}\n    }}\n}}\n"
            )
            dispatch.append(
                f'    if (!strcmp(name, "{spec.name}")) {{'
                f" {spec.name}<T>(w, f, b, n, e, t, o, size); return 0; }}"
            )
    dispatch_body = "\n".join(dispatch)
    parts.append(
        "template <typename T>\n"
        "static int run(const char* name, long long batch, long long n, double iters,"
        " FILE* in, FILE* out) {\n"
        "    const ptrdiff_t size = batch * n * n;\n"
        "    std::vector<T> wv(batch * n), fv(batch), bv(size), ov(size);\n"
        "    if (fread(wv.data(), sizeof(T), wv.size(), in) != wv.size()) return 2;\n"
        "    if (fread(fv.data(), sizeof(T), fv.size(), in) != fv.size()) return 2;\n"
        "    if (fread(bv.data(), sizeof(T), bv.size(), in) != bv.size()) return 2;\n"
        "    const T* w = wv.data(); const T* f = fv.data(); const T* b = bv.data();\n"
        "    T* o = ov.data(); const T t = T(iters);\n"
        "    const T e = std::numeric_limits<T>::epsilon();\n"
        "    int status = 1;\n"
        "    [&]() {\n"
        + dispatch_body.replace("return 0;", "status = 0; return;")
        + "\n    }();\n"
        "    fwrite(ov.data(), sizeof(T), ov.size(), out);\n"
        "    return status;\n}\n"
        "int main(int argc, char** argv) {\n"
        "    if (argc != 6) return 3;\n"
        "    const long long batch = atoll(argv[3]), n = atoll(argv[4]);\n"
        "    const double iters = atof(argv[5]);\n"
        "    if (argv[2][0] == 'f') return run<float>(argv[1], batch, n, iters, stdin, stdout);\n"
        "    return run<double>(argv[1], batch, n, iters, stdin, stdout);\n}\n"
    )
    return "\n".join(parts)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler to run the generated kernel source on the CPU")
    directory = tmp_path_factory.mktemp("kernels")
    source = directory / "kernels.cpp"
    source.write_text("#include <cstdlib>\n" + _host_program())
    binary = directory / "kernels"
    compiled = subprocess.run(
        [compiler, "-std=c++17", "-O1", "-Wall", "-Werror", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr

    return _HostKernels(binary)


class _HostKernels:
    """Runs the generated kernels, compiled for the host, on NumPy arrays."""

    def __init__(self, binary):
        self.binary = binary

    def run_raw(self, name, w_flat, floor_flat, b_flat, n, num_iters):
        """One kernel on flat operands, exactly as the CUDA launch passes them."""
        dtype = w_flat.dtype
        payload = w_flat.tobytes() + floor_flat.tobytes() + b_flat.tobytes()
        char = "f" if dtype == np.float32 else "d"
        result = subprocess.run(
            [str(self.binary), name, char, str(floor_flat.size), str(n), str(num_iters)],
            input=payload,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (name, result.returncode)
        return np.frombuffer(result.stdout, dtype=dtype)

    def __call__(self, method, mode, w, b, num_iters):
        import array_api_compat.numpy as xp

        from svdpi._coefficients import eigenvalue_floor

        w = np.ascontiguousarray(w)
        n = w.shape[-1]
        floor = np.ascontiguousarray(eigenvalue_floor(w, xp))
        if b is None:
            b = np.zeros((*w.shape, n), dtype=w.dtype)
        out = self.run_raw(
            f"svdpi_{mode}_{method}",
            w.reshape(-1),
            floor.reshape(-1),
            np.ascontiguousarray(b).reshape(-1),
            n,
            num_iters,
        )
        return out.reshape(*w.shape, n)


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
    a = _core_coefficients(w, method, 19)
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


# --- svdpi.cupy._native on a stand-in CuPy --------------------------------------------------
#
# The launch code (operand order, flattening, contiguity, scalar dtypes, the
# solver loop) is plumbing that only a GPU would otherwise exercise. Here
# `cupy` is a NumPy-backed stand-in whose ElementwiseKernel runs the kernel's
# generated source compiled for the host, so svdpi.cupy._native runs as written.


class _FakeElementwiseKernel:
    def __init__(self, host, in_params, out_params, operation, name, preamble=""):
        self.host = host
        self.in_names = [p.split()[-1] for p in in_params.split(",")]
        self.out_names = [p.split()[-1] for p in out_params.split(",")]
        self.name = name
        self.spec = (in_params, out_params, operation, preamble)
        _FakeElementwiseKernel.launches.append(name)

    def __call__(self, *args):
        assert len(args) == len(self.in_names) + len(self.out_names), (self.name, len(args))
        named = dict(zip(self.in_names + self.out_names, args, strict=True))
        w, floor, out = named["w"], named["lam_floor"], named["out"]
        dtype = w.dtype
        for key in ("w", "lam_floor", "b", "out"):  # flat, C-contiguous operands
            if key in named:
                assert named[key].ndim == 1, key
                assert named[key].flags.c_contiguous, key
                assert named[key].dtype == dtype, key
        # Scalars of the array dtype, so the kernel's T comes from the arrays.
        assert type(named["eps"]) is dtype.type
        assert named["eps"] == np.finfo(dtype).eps
        assert type(named["num_iters"]) is dtype.type
        assert isinstance(named["n"], int)
        n = named["n"]
        assert out.size == floor.size * n * n
        b = named.get("b", np.zeros(out.size, dtype=dtype))
        out[...] = self.host.run_raw(self.name, w, floor, b, n, int(named["num_iters"]))


_FakeElementwiseKernel.launches = []


@pytest.fixture
def fake_cupy_native(monkeypatch, host_kernels):
    """svdpi.cupy._native imported against the stand-in CuPy; cleaned up afterwards."""
    import array_api_compat.numpy as xp_numpy

    fake = types.ModuleType("cupy")
    fake.ndarray = np.ndarray
    fake.float16, fake.float32, fake.float64 = np.float16, np.float32, np.float64
    fake.ascontiguousarray = np.ascontiguousarray
    fake.empty = np.empty
    fake.linalg = types.SimpleNamespace(eigh=np.linalg.eigh)

    def kernel(*args, **kwargs):
        return _FakeElementwiseKernel(host_kernels, *args, **kwargs)

    fake.ElementwiseKernel = kernel
    before = {name for name in sys.modules if name.startswith("svdpi.cupy")}
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", xp_numpy)
    _FakeElementwiseKernel.launches.clear()
    native = importlib.import_module("svdpi.cupy._native")
    native._kernel.cache_clear()
    yield native
    native._kernel.cache_clear()
    for name in [name for name in sys.modules if name.startswith("svdpi.cupy")]:
        if name not in before:
            del sys.modules[name]
    if "svdpi.cupy" not in before and hasattr(svdpi, "cupy"):
        delattr(svdpi, "cupy")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_native_launch_on_stand_in_cupy_equals_the_core(fake_cupy_native, method, dtype):
    rng = np.random.default_rng(20)
    spectra = [[4.0, 2.0, 2.0, 1.0, 0.0], [3.0, 2.5, 1.0, 0.5, -1e-3]]
    if method == "analytic":  # separated, for finite products
        spectra = [[4.0, 2.0, 1.5, 1.0, 0.1], [3.0, 2.5, 1.0, 0.5, 0.25]]
    w = np.array([spectra, spectra[::-1]], dtype=dtype)  # batch (2, 2)
    w = np.flip(np.flip(w, -1), -1)  # a non-contiguous view, as svdpi.eig returns
    b = np.swapaxes(rng.standard_normal((2, 2, 5, 5)).astype(dtype), -1, -2)  # not C-contiguous
    a = _core_coefficients(np.ascontiguousarray(w), method, 7)
    at_b = np.swapaxes(a, -1, -2) * b
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    expected = {
        False: at_b,
        True: (at_b + np.swapaxes(at_b, -1, -2)) * dtype(0.5),
    }
    for symmetrize in (False, True):
        actual = fake_cupy_native.coefficient_product(
            w, b, method=method, num_iters=7, symmetrize=symmetrize
        )
        assert actual.shape == (2, 2, 5, 5)
        assert actual.dtype == dtype
        assert_close(actual, expected[symmetrize], rtol=rtol, err_msg=str(symmetrize))
    assert_close(fake_cupy_native.coefficient_matrix(w, method=method, num_iters=7), a, rtol=rtol)
    # One compiled kernel per (method, mode), reused across calls and dtypes.
    fake_cupy_native.coefficient_product(w, b, method=method, num_iters=3, symmetrize=True)
    assert sorted(_FakeElementwiseKernel.launches) == sorted(
        f"svdpi_{mode}_{method}" for mode in kernel_source.MODES
    )


def test_core_gradients_through_the_stand_in_cupy_provider(fake_cupy_native, monkeypatch):
    # The core's hook routed to svdpi.cupy._native (NumPy arrays standing in
    # for CuPy's): eig_vjp / eig_jvp / zca VJP equal the generic path.
    rng = np.random.default_rng(21)
    w, v = svdpi.eig(spd_with_spectrum([3.0, 2.0, 2.0, 0.5], rng, batch=(3,)))
    gw, gv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4, 4))
    calls = {
        "eig_vjp": lambda: svdpi.eig_vjp(w, v, gw, gv),
        "eig_jvp": lambda: svdpi.eig_jvp(w, v, gv)[1],
        "zca_vjp": lambda: svdpi.zca_whitening_matrix_vjp(w, v, gv),
    }
    expected = {name: call() for name, call in calls.items()}
    monkeypatch.setattr(_dispatch, "_providers", dict(_dispatch._providers))
    native = fake_cupy_native
    _dispatch.register("numpy", eigh=native.eigh, coefficient_product=native.coefficient_product)
    for name, call in calls.items():
        assert_close(call(), expected[name], rtol=1e-12, err_msg=name)
    assert _FakeElementwiseKernel.launches  # the kernels did run


@pytest.mark.parametrize("batch_shape", [(), (1,), (3,), (2, 2)])
def test_native_solvers_on_stand_in_cupy(fake_cupy_native, batch_shape):
    rng = np.random.default_rng(22)
    a = random_spd(5, rng, batch=batch_shape)
    w_ref = np.linalg.eigvalsh(a)
    batch_size = int(np.prod(batch_shape))
    for solver in solver_policy.SOLVERS:
        if solver == "syevd" and batch_size != 1:
            with pytest.raises(ValueError, match="one matrix"):
                fake_cupy_native.solve_eigh(a, solver)
            continue
        w, v = fake_cupy_native.solve_eigh(a, solver)
        assert w.shape == (*batch_shape, 5)
        assert v.shape == (*batch_shape, 5, 5)
        assert_close(w, w_ref, rtol=1e-12, err_msg=solver)
        assert_close((v * w[..., None, :]) @ np.swapaxes(v, -1, -2), a, rtol=1e-12)
    w, _ = fake_cupy_native.eigh(a)  # through the policy
    assert_close(w, w_ref, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown solver"):
        fake_cupy_native.solve_eigh(a, "qr")


def test_native_coefficient_matrix_validates(fake_cupy_native):
    with pytest.raises(TypeError, match=r"cupy\.ndarray"):
        fake_cupy_native.coefficient_matrix([1.0, 2.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        fake_cupy_native.coefficient_matrix(np.ones(3, dtype=np.float16))
    with pytest.raises(ValueError, match="n >= 1"):
        fake_cupy_native.coefficient_matrix(np.ones((2, 0)))
    with pytest.raises(ValueError, match="method must be one of"):
        fake_cupy_native.coefficient_matrix(np.ones(3), method="svd")


# --- the eigensolver policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "n", "solver"),
    [
        (0, 8, "syevd"),
        (1, 4, "syevd"),
        (1, 512, "syevd"),
        (512, 4, "syevj_batched"),
        (512, 32, "syevj_batched"),
        (2, 32, "syevj_batched"),
        (64, 64, "syevj_batched"),
        (4, 256, "syevd_loop"),
    ],
)
def test_solver_policy_on_the_benchmark_shapes(batch_size, n, solver):
    assert solver_policy.choose_eigh_solver(batch_size, n) == solver


def test_solver_policy_thresholds_are_the_named_constants(monkeypatch):
    limit_n = solver_policy.SYEVJ_BATCHED_MAX_N
    limit_batch = solver_policy.SYEVD_LOOP_MAX_BATCH
    choose = solver_policy.choose_eigh_solver
    assert choose(2, limit_n) == "syevj_batched"
    assert choose(2, limit_n + 1) == "syevd_loop"
    assert choose(limit_batch, limit_n + 1) == "syevd_loop"
    assert choose(limit_batch + 1, limit_n + 1) == "syevj_batched"
    monkeypatch.setattr(solver_policy, "SYEVJ_BATCHED_MAX_N", 8)
    assert choose(2, 16) == "syevd_loop"  # read at call time: tunable
    assert set(solver_policy.SOLVERS) == {"syevd", "syevj_batched", "syevd_loop"}


@pytest.mark.parametrize(
    ("batch_size", "n", "error", "message"),
    [
        (-1, 4, ValueError, "batch_size must be >= 0"),
        (2, 0, ValueError, "n must be >= 1"),
        (2.0, 4, TypeError, "batch_size must be an integer"),
        (2, True, TypeError, "n must be an integer"),
    ],
)
def test_solver_policy_validates(batch_size, n, error, message):
    with pytest.raises(error, match=message):
        solver_policy.choose_eigh_solver(batch_size, n)


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
