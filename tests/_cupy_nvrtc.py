"""NVRTC, CUDA's runtime compiler, on a machine without a GPU; a wrapper like CuPy's kernels'.

CuPy compiles a ``cupy.ElementwiseKernel`` with NVRTC the first time it is
called, so a kernel whose source does not compile would fail only on a GPU.
NVRTC itself needs none: the CUDA build of PyTorch installs it
(``nvidia-cuda-nvrtc``, through ``cuda-toolkit[nvrtc]``) with its Python
bindings (``cuda-bindings``), and the test extra names both.

:func:`elementwise_code` writes the CUDA source CuPy generates around a
kernel's ``operation`` and ``preamble`` (written from reading CuPy's
``cupy/_core/_kernel.pyx``: the type placeholders' typedefs before the
preamble, one ``extern "C" __global__`` function whose parameters are the
kernel's, ``CArray`` for arrays, ``CIndexer _ind`` last, the grid-stride
``CUPY_FOR`` loop over ``i``, and a reference ``_raw_out[_ind.get()]`` for
each non-raw array). :data:`CUPY_HEADER` stands in for CuPy's headers with
what such a kernel can touch: ``CUPY_FOR``, ``CArray``'s element access and
``CIndexer``. A GPU test (``tests/test_cupy_gpu.py``) checks that CuPy
generates this very text for svdpi's kernels.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

# cuda.pathfinder finds NVIDIA's libraries in site.getsitepackages(). A venv
# that reaches its packages through a .pth line (the team's light worktree
# venvs) is not searched there: the libraries are then loaded by path from
# sys.path, which the dynamic loader's "already loaded" check then finds.
_WHEEL_LIBRARIES = (
    ("nvidia/cu13/lib", ("libnvrtc-builtins.so.13.*", "libnvrtc.so.13")),
    ("nvidia/cuda_nvrtc/lib", ("libnvrtc-builtins.so.12.*", "libnvrtc.so.12")),
)

#: Architectures the generated kernels must compile for: PTX for Ampere (A100,
#: what CuPy emits where its NVRTC is older than the card) and machine code for
#: Hopper (H100 / H200: CuPy builds a cubin for the card when its NVRTC knows it).
TARGETS = ("compute_80", "sm_90")

# CuPy's C names for the dtype names a kernel's parameter list may use
# (cupy/_core/_scalar.pyx).
C_TYPES = {
    "float64": "double",
    "float32": "float",
    "float16": "float16",
    "int64": "long long",
    "int32": "int",
    "int16": "short",
    "int8": "signed char",
    "uint64": "unsigned long long",
    "uint32": "unsigned int",
    "uint16": "unsigned short",
    "uint8": "unsigned char",
    "bool": "bool",
}

CUPY_HEADER = r"""
// Stand-in for CuPy's headers (cupy/carray.cuh): what an elementwise kernel
// body can use. Written for this test; the layout of the data members is not
// CuPy's concern here, only the interface the generated code calls.
#define CUPY_FOR(i, n) \
    for (ptrdiff_t i = static_cast<ptrdiff_t>(blockIdx.x) * blockDim.x + threadIdx.x; \
         i < (n); i += static_cast<ptrdiff_t>(blockDim.x) * gridDim.x)

template <typename T, int _ndim, bool _c_contiguous = false, bool _use_32bit_indexing = false>
class CArray {
  public:
    static const int ndim = _ndim;

  private:
    T* data_;
    ptrdiff_t size_;
    ptrdiff_t shape_[_ndim];
    ptrdiff_t strides_[_ndim];

  public:
    __device__ ptrdiff_t size() const { return size_; }
    __device__ const ptrdiff_t* shape() const { return shape_; }
    __device__ const ptrdiff_t* strides() const { return strides_; }

    // Flat (C-order) element access: what a raw parameter's p[i] calls.
    __device__ const T& operator[](ptrdiff_t flat) const {
        if (_c_contiguous) {
            return data_[flat];
        }
        ptrdiff_t offset = 0;
        for (int dim = _ndim - 1; dim > 0; --dim) {
            offset += strides_[dim] * (flat % shape_[dim]);
            flat /= shape_[dim];
        }
        offset += strides_[0] * flat;
        return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + offset);
    }
    __device__ T& operator[](ptrdiff_t flat) {
        return const_cast<T&>(static_cast<const CArray&>(*this)[flat]);
    }

    // Multi-index access: what a non-raw parameter's reference calls with _ind.get().
    template <typename Int>
    __device__ const T& operator[](const Int (&index)[_ndim]) const {
        ptrdiff_t offset = 0;
        for (int dim = 0; dim < _ndim; ++dim) {
            offset += strides_[dim] * static_cast<ptrdiff_t>(index[dim]);
        }
        return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + offset);
    }
    template <typename Int>
    __device__ T& operator[](const Int (&index)[_ndim]) {
        return const_cast<T&>(static_cast<const CArray&>(*this)[index]);
    }
};

template <int _ndim, bool _use_32bit_indexing = false>
class CIndexer {
  public:
    static const int ndim = _ndim;
    typedef ptrdiff_t index_t[_ndim];

  private:
    ptrdiff_t size_;
    ptrdiff_t shape_[_ndim];
    index_t index_;

  public:
    __device__ ptrdiff_t size() const { return size_; }
    __device__ const index_t& get() const { return index_; }
    __device__ void set(ptrdiff_t flat) {
        for (int dim = _ndim - 1; dim > 0; --dim) {
            index_[dim] = flat % shape_[dim];
            flat /= shape_[dim];
        }
        index_[0] = flat;
    }
};
"""


class Parameter(NamedTuple):
    """One entry of an ``ElementwiseKernel``'s ``in_params`` / ``out_params``."""

    raw: bool
    type_name: str
    name: str
    is_const: bool


def parse_parameters(text: str, *, is_const: bool) -> list[Parameter]:
    """``"raw T w, int64 n"`` as CuPy reads it: ``[raw] type name``, comma-separated."""
    parameters = []
    for item in text.split(","):
        words = item.split()
        raw = words[:1] == ["raw"]
        if raw:
            words = words[1:]
        if len(words) != 2 or not re.fullmatch(r"[A-Za-z_]\w*", words[1]):
            raise ValueError(f"not a kernel parameter: {item.strip()!r}")
        parameters.append(Parameter(raw, words[0], words[1], is_const))
    return parameters


def elementwise_code(spec: Any, dtype: str, *, index_32_bits: bool = True) -> str:
    """The source CuPy generates for ``ElementwiseKernel(*spec)`` called as svdpi calls it.

    ``spec`` has ``in_params``, ``out_params``, ``operation``, ``name`` and
    ``preamble`` (a :class:`svdpi.cupy._kernel_source.KernelSpec`);
    ``dtype`` is what the type placeholders (one-letter types, ``T``) become.
    As svdpi launches its kernels: every array is flat and C-contiguous, a
    raw input is an array, a non-raw input a scalar, every output an array;
    ``index_32_bits`` is CuPy's choice for arrays below 2**31 bytes.
    Without :data:`CUPY_HEADER`, which CuPy prepends as ``#include`` lines.
    """
    c_type = C_TYPES[dtype]
    parameters = parse_parameters(spec.in_params, is_const=True)
    parameters += parse_parameters(spec.out_params, is_const=False)
    placeholders = sorted({p.type_name for p in parameters if p.type_name not in C_TYPES})
    flags = f"1, 1, {int(index_32_bits)}"  # ndim, c_contiguous, index_32_bits

    def c_name(type_name: str) -> str:
        return c_type if type_name in placeholders else C_TYPES[type_name]

    declarations, references = [], []
    for p in parameters:
        const = "const " if p.is_const else ""
        is_array = p.raw or not p.is_const
        if not is_array:
            declarations.append(f"{const}{c_name(p.type_name)} {p.name}")
        elif p.raw:
            declarations.append(f"{const}CArray<{c_name(p.type_name)}, {flags}> {p.name}")
        else:
            declarations.append(f"{const}CArray<{c_name(p.type_name)}, {flags}> _raw_{p.name}")
            references.append(f"{const}{p.type_name} &{p.name} = _raw_{p.name}[_ind.get()];")
    declarations.append(f"CIndexer<1, {int(index_32_bits)}> _ind")
    typedefs = "".join(f"typedef {c_type} {name};\n" for name in placeholders)
    operation = "\n".join([*references, spec.operation])
    return (
        f"\n{typedefs}\n{spec.preamble}\n"
        f'extern "C" __global__ void {spec.name}({", ".join(declarations)}) {{\n'
        "  ;\n"
        "  #pragma unroll 1\n"
        "  CUPY_FOR(i, _ind.size()) {\n"
        "    _ind.set(i);\n"
        f"    {operation};\n"
        "  }\n"
        "  ;\n"
        "}\n"
    )


def elementwise_source(spec: Any, dtype: str, *, index_32_bits: bool = True) -> str:
    """:func:`elementwise_code` after :data:`CUPY_HEADER`: a whole compilation unit."""
    return CUPY_HEADER + elementwise_code(spec, dtype, index_32_bits=index_32_bits)


def normalize_whitespace(code: str) -> str:
    """``code`` with each run of whitespace made one space (for comparing generated text)."""
    return " ".join(code.split())


# --- NVRTC ---------------------------------------------------------------------------


class CompileError(AssertionError):
    """NVRTC rejected the source, or compiled it with a warning."""


class Compiled(NamedTuple):
    code: bytes  # PTX text for compute_XX, a cubin for sm_XX
    log: str


class Nvrtc:
    """The NVRTC library through ``cuda.bindings.nvrtc``."""

    def __init__(self, module: Any):
        self.module = module
        major, minor = self._call("nvrtcVersion")
        self.version = (major, minor)
        (archs,) = self._call("nvrtcGetSupportedArchs")
        self.supported_archs = tuple(int(arch) for arch in archs)

    def _call(self, function: str, *args: Any) -> tuple:
        result = getattr(self.module, function)(*args)
        status, rest = result[0], result[1:]
        if status != self.module.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"{function}: {status!r}")
        return rest

    def supports(self, target: str) -> bool:
        return int(target.split("_")[1]) in self.supported_archs

    def compile(self, source: str, *, target: str, name: str = "kernel.cu") -> Compiled:
        """Compile ``source`` for ``target`` (``compute_XX``: PTX, ``sm_XX``: a cubin).

        With the options CuPy passes (C++17, flush-to-zero). Raises
        :class:`CompileError` with NVRTC's log if the compilation fails or the
        log is not empty: NVRTC reports warnings only there.
        """
        nvrtc = self.module
        (program,) = self._call("nvrtcCreateProgram", source.encode(), name.encode(), 0, [], [])
        try:
            options = [b"--std=c++17", b"-ftz=true", f"-arch={target}".encode()]
            (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
            (size,) = self._call("nvrtcGetProgramLogSize", program)
            # NVRTC writes into the buffers it is given: bytearrays, never
            # bytes. A one-byte bytes object is CPython's shared one, and an
            # empty log (size 1, its NUL) overwrote it process-wide: every later
            # torch.load in the process failed ("record size ... does not match").
            log = bytearray(size)
            self._call("nvrtcGetProgramLog", program, log)
            log_text = bytes(log).rstrip(b"\x00").decode(errors="replace").strip()
            if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
                raise CompileError(f"NVRTC failed ({status!r}) for {target}:\n{log_text}")
            if log_text:
                raise CompileError(f"NVRTC warned for {target}:\n{log_text}")
            if target.startswith("sm_"):
                (size,) = self._call("nvrtcGetCUBINSize", program)
                code = bytearray(size)
                self._call("nvrtcGetCUBIN", program, code)
            else:
                (size,) = self._call("nvrtcGetPTXSize", program)
                code = bytearray(size)
                self._call("nvrtcGetPTX", program, code)
            return Compiled(bytes(code).rstrip(b"\x00"), log_text)
        finally:
            nvrtc.nvrtcDestroyProgram(program)


def _preload_wheel_libraries() -> list[str]:
    loaded = []
    for folder in sys.path:
        for subdirectory, patterns in _WHEEL_LIBRARIES:
            directory = Path(folder or ".") / subdirectory
            if not directory.is_dir():
                continue
            found = [next(iter(sorted(directory.glob(pattern))), None) for pattern in patterns]
            if all(found):
                for path in found:  # the builtins first: libnvrtc opens them by name
                    ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
                    loaded.append(str(path))
                return loaded
    return loaded


@functools.cache
def load_nvrtc() -> tuple[Nvrtc | None, str]:
    """``(Nvrtc, "")``, or ``(None, why not)`` where NVRTC or its bindings are absent."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as error:
        return None, (
            f"cuda-bindings is not installed ({error}); it comes with the CUDA build of "
            "PyTorch and the test extra (pip install -e '.[test]')"
        )
    try:
        return Nvrtc(nvrtc), ""
    except Exception as first:  # cuda.pathfinder's DynamicLibNotFoundError, and kin
        if not _preload_wheel_libraries():
            return None, f"the NVRTC library was not found ({type(first).__name__}: {first})"
    try:
        return Nvrtc(nvrtc), ""
    except Exception as error:
        return None, f"the NVRTC library failed to load ({type(error).__name__}: {error})"
