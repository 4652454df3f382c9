"""Shared fixtures: one ``xp`` fixture runs a test on every available array library."""

from __future__ import annotations

import importlib

import pytest

# (fixture id, module to import, needs a CUDA device)
BACKENDS = [
    ("numpy", "array_api_compat.numpy", False),
    ("array_api_strict", "array_api_strict", False),
    ("torch", "array_api_compat.torch", False),
    ("jax", "jax.numpy", False),
    ("cupy", "array_api_compat.cupy", True),
]


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.fixture(params=[pytest.param(b, id=b[0]) for b in BACKENDS])
def xp(request):
    """The array namespace under test (array-api-compat's wrapper where one exists).

    JAX runs in float64 (``jax_enable_x64``) for the duration of the test
    only, through JAX's thread-local context manager: a test elsewhere that
    checks JAX's float32 default sees it whatever ran before, in any order.
    """
    name, module, needs_gpu = request.param
    if needs_gpu:
        pytest.importorskip("cupy", reason="CuPy is not installed")
        if not _cuda_available():
            pytest.skip("no CUDA device available")
    pytest.importorskip(
        module.split(".")[0] if name in ("numpy", "jax") else module.split(".")[-1]
    )
    namespace = importlib.import_module(module)
    if name != "jax":
        yield namespace
        return
    import jax

    with jax.enable_x64(True):
        yield namespace
