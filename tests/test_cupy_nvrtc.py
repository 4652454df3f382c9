"""Every CUDA kernel svdpi.cupy generates compiles under NVRTC, with no warning, without a GPU.

CuPy compiles svdpi's fused kernels with NVRTC at their first call, on the
user's GPU. Here each (method, mode, dtype) variant is compiled the same way
for Ampere PTX and Hopper machine code, inside the source CuPy's
ElementwiseKernel generates around it (``tests/_cupy_nvrtc.py``). Skipped
with the reason where NVRTC or its Python bindings are absent, unless
``SVDPI_REQUIRE_NVRTC=1`` (set by CI's ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from ._cupy_helpers import METHODS, kernel_source
from ._cupy_nvrtc import (
    TARGETS,
    CompileError,
    elementwise_code,
    elementwise_source,
    load_nvrtc,
    parse_parameters,
)

DTYPES = ("float32", "float64")


@pytest.fixture(scope="module")
def nvrtc():
    compiler, reason = load_nvrtc()
    if compiler is None:
        if os.environ.get("SVDPI_REQUIRE_NVRTC") == "1":
            pytest.fail(f"SVDPI_REQUIRE_NVRTC=1 but NVRTC is unavailable: {reason}")
        pytest.skip(f"NVRTC unavailable: {reason}")
    return compiler


def _compile(nvrtc, spec, dtype, target, **kwargs):
    if not nvrtc.supports(target):
        pytest.skip(f"this NVRTC {nvrtc.version} cannot target {target}")
    return nvrtc.compile(elementwise_source(spec, dtype, **kwargs), target=target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", kernel_source.MODES)
@pytest.mark.parametrize("method", METHODS)
def test_generated_kernel_compiles_without_warnings(nvrtc, method, mode, dtype, target):
    spec = kernel_source.kernel_spec(method, mode)
    compiled = _compile(nvrtc, spec, dtype, target)  # raises on an error or a warning
    assert compiled.log == ""
    assert compiled.code
    if target.startswith("compute_"):
        ptx = compiled.code.decode()
        # extern "C": CuPy looks the kernel up by its unmangled name.
        assert f".entry {spec.name}(" in ptx
        if dtype == "float32":
            # No double-precision arithmetic in the float32 kernel (a double
            # constant or a double overload of log1p / expm1 would promote):
            # FP64 runs at 1/32 to 1/64 of FP32 speed on most GPUs.
            assert ".f64" not in ptx, f"{spec.name} computes in double for float32 input"


def test_compiling_leaves_the_process_intact(nvrtc):
    """NVRTC writes its log and code into our buffers, never into shared Python objects.

    The harness once passed ``b" " * size``: for an empty log (size 1) that is
    CPython's cached one-byte object, which NVRTC overwrote with NUL, and every
    later ``torch.load`` in the process failed.
    """
    spec = kernel_source.kernel_spec(METHODS[0], kernel_source.MODES[0])
    compiled = _compile(nvrtc, spec, "float32", TARGETS[0])
    assert compiled.log == ""
    assert bytes([32])[0] == 32
    assert b" ".join([b"a", b"b"]) == bytes([97, 32, 98])


@pytest.mark.parametrize("method", METHODS)
def test_generated_kernels_compile_with_64_bit_indexing(nvrtc, method):
    # CuPy instantiates CArray / CIndexer with 64-bit indexing for arrays of 2**31 bytes or more.
    for mode in kernel_source.MODES:
        spec = kernel_source.kernel_spec(method, mode)
        for dtype in DTYPES:
            _compile(nvrtc, spec, dtype, TARGETS[0], index_32_bits=False)


# --- the check can fail -----------------------------------------------------------------


def test_a_kernel_that_does_not_compile_fails(nvrtc):
    spec = kernel_source.kernel_spec("pi", "product")
    broken = spec._replace(operation=spec.operation.replace("* b[i];", "* b[i] +;"))
    with pytest.raises(CompileError, match=r"(?s)NVRTC failed.*error"):
        _compile(nvrtc, broken, "float64", TARGETS[0])
    undeclared = spec._replace(operation=spec.operation.replace("b[i]", "b_missing[i]"))
    with pytest.raises(CompileError, match="b_missing"):
        _compile(nvrtc, undeclared, "float32", TARGETS[-1])


def test_a_kernel_that_compiles_with_a_warning_fails(nvrtc):
    spec = kernel_source.kernel_spec("taylor", "coefficients")
    warned = spec._replace(operation=spec.operation + "\nconst int svdpi_unused = 0;")
    with pytest.raises(CompileError, match=r"(?s)NVRTC warned.*svdpi_unused"):
        _compile(nvrtc, warned, "float64", TARGETS[0])


def test_a_float32_kernel_computing_in_double_fails(nvrtc):
    # The float32 check above must see a double constant sneaking into the formula.
    spec = kernel_source.kernel_spec("pi", "coefficients")
    promoted = spec._replace(preamble=spec.preamble.replace("Real(1)) / big", "1.0) / big"))
    assert promoted.preamble != spec.preamble
    ptx = _compile(nvrtc, promoted, "float32", TARGETS[0]).code.decode()
    assert ".f64" in ptx


# --- the wrapper ------------------------------------------------------------------------


def test_wrapper_is_laid_out_as_cupy_lays_out_an_elementwise_kernel():
    spec = kernel_source.kernel_spec("pi", "symmetric_product")
    code = elementwise_code(spec, "float32")
    head, _, kernel = code.partition('extern "C" __global__ void svdpi_symmetric_product_pi(')
    # The typedefs of the type placeholders come before the preamble.
    assert head.index("typedef float T;") < head.index("svdpi_coefficient_parts_pi")
    signature = kernel.split(") {", 1)[0]
    assert re.split(r", (?![^<]*>)", signature) == [
        "const CArray<float, 1, 1, 1> w",
        "const CArray<float, 1, 1, 1> lam_floor",
        "const CArray<float, 1, 1, 1> b",
        "const long long n",
        "const float eps",
        "const float num_iters",
        "CArray<float, 1, 1, 1> _raw_out",
        "CIndexer<1, 1> _ind",
    ]
    body = kernel.split(") {", 1)[1]
    assert body.index("CUPY_FOR(i, _ind.size())") < body.index("_ind.set(i);")
    assert body.index("T &out = _raw_out[_ind.get()];") < body.index(spec.operation)
    assert "CIndexer<1, 0> _ind" in elementwise_code(spec, "float64", index_32_bits=False)


@pytest.mark.parametrize("text", ["raw T", "T a b c", "T 1x", "T w,"])
def test_parameter_parsing_rejects_malformed_parameters(text):
    with pytest.raises(ValueError, match="not a kernel parameter"):
        parse_parameters(text, is_const=True)


def test_without_nvrtc_the_test_skips_with_a_reason():
    # cuda.bindings blocked in a fresh process: the loader explains instead of failing.
    code = f"""
        import sys
        sys.modules["cuda.bindings"] = None
        sys.modules["cuda.bindings.nvrtc"] = None
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from _cupy_nvrtc import load_nvrtc
        compiler, reason = load_nvrtc()
        print(compiler is None, reason)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True cuda-bindings is not installed"), result.stdout
    assert "pip install" in result.stdout
