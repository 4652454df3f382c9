"""The examples in the docstrings of the installed package run and give what they show.

Every docstring example of the public modules (the core, ``svdpi.torch`` and
``svdpi.jax``; ``svdpi.cupy`` where CuPy and a GPU are available) is one test, run with the
standard library's :mod:`doctest` on the *installed* modules, so no source
folder goes on ``sys.path``. The CuPy solver policy is pure Python: its
examples run everywhere, from the installed file loaded on its own.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import svdpi

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules(package_name: str) -> list:
    package = importlib.import_module(package_name)
    modules = [package]
    for info in pkgutil.iter_modules(package.__path__, package_name + "."):
        modules.append(importlib.import_module(info.name))
    return modules


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or CuPy without a driver or device
        return False


def _cupy_solver_policy():
    """``svdpi.cupy._solver_policy`` loaded without ``svdpi.cupy`` (which imports CuPy)."""
    package = importlib.util.find_spec("svdpi.cupy")  # locates it, imports nothing of it
    path = Path(package.submodule_search_locations[0]) / "_solver_policy.py"
    spec = importlib.util.spec_from_file_location("svdpi_cupy_solver_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_modules() -> list:
    modules = [m for m in _modules("svdpi") if m.__name__.count(".") == 1 or m is svdpi]
    modules = [m for m in modules if m.__name__ not in ("svdpi.torch", "svdpi.cupy", "svdpi.jax")]
    with contextlib.suppress(ImportError):  # PyTorch not installed
        modules += _modules("svdpi.torch")
    with contextlib.suppress(ImportError):  # JAX not installed
        modules += _modules("svdpi.jax")
    if _cuda_available():
        modules += _modules("svdpi.cupy")
    else:
        modules.append(_cupy_solver_policy())
    return modules


def _doctests() -> list:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for module in _public_modules():
        for test in finder.find(module):
            # Re-exported objects are found once per module that imports them.
            if test.examples:
                tests.setdefault((test.filename, test.lineno), test)
    return sorted(tests.values(), key=lambda t: t.name)


DOCTESTS = _doctests()


# torch.func.jvp loads torch's forward-AD decompositions, which call the
# deprecated torch.jit.script (a warning from inside torch, not from svdpi).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    output = []
    with contextlib.ExitStack() as stack:
        if test.name.startswith("svdpi.jax"):
            # svdpi.jax's examples show JAX's default float32, whatever ran before.
            import jax

            stack.enter_context(jax.enable_x64(False))
        result = runner.run(test, out=output.append, clear_globs=True)
    assert result.failed == 0, "".join(output)


def _public_callables(module) -> list[tuple[str, object]]:
    return [(f"{module.__name__}.{name}", getattr(module, name)) for name in module.__all__]


def _all_public() -> list[tuple[str, object]]:
    # svdpi.functions is a public module of its own: its names, not the module.
    found = _public_callables(svdpi) + _public_callables(svdpi.functions)
    with contextlib.suppress(ImportError):  # PyTorch not installed
        found += _public_callables(importlib.import_module("svdpi.torch"))
    with contextlib.suppress(ImportError):  # JAX not installed
        found += _public_callables(importlib.import_module("svdpi.jax"))
    # Result types (EigResult, a NamedTuple) document fields, not usage; modules and
    # constants (svdpi.functions.DOMAINS) are not called.
    return [
        (n, o)
        for n, o in found
        if callable(o) and not (isinstance(o, type) and issubclass(o, tuple))
    ]


@pytest.mark.parametrize(("name", "obj"), _all_public(), ids=[n for n, _ in _all_public()])
def test_every_public_function_has_a_runnable_example(name, obj):
    docstring = obj.__doc__ or ""
    assert "Examples\n" in docstring, f"{name} has no Examples section"
    assert ">>>" in docstring, f"{name} has no runnable example"
    collected = [t for t in DOCTESTS if t.name.endswith("." + obj.__name__)]
    assert collected, f"{name}'s example is not collected by test_docstring_example"
