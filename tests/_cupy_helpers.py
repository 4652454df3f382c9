"""What the CuPy adapter's tests share: its pure-Python modules, spectra, compiled kernels.

``svdpi.cupy`` refuses to import without CuPy; its kernel-source generator and
solver policy need no CuPy and are loaded from their files, so that the
formula the GPU runs is tested on any machine.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from svdpi._coefficients import coefficient_matrix

METHODS = ("pi", "taylor", "analytic")


def load_pure_module(name):
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


kernel_source = load_pure_module("_kernel_source")
solver_policy = load_pure_module("_solver_policy")


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


def core_coefficients(w, method, num_iters):
    import array_api_compat.numpy as xp

    with np.errstate(divide="ignore"):  # "analytic" is infinite for ties, on purpose
        return coefficient_matrix(w, method=method, num_iters=num_iters, xp=xp)


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


@functools.cache
def compile_host_kernels():
    """The generated kernels compiled for the host once per process (skips without a compiler)."""
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler to run the generated kernel source on the CPU")
    directory = Path(tempfile.mkdtemp(prefix="svdpi-kernels-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
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

    return HostKernels(binary)


class HostKernels:
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
