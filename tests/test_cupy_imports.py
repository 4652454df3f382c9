"""svdpi.cupy's import hygiene: ``import svdpi`` never imports CuPy; CuPy arrays reach it."""

from __future__ import annotations

from ._cupy_helpers import (
    run_python,
)


def test_import_svdpi_never_imports_cupy():
    result = run_python(
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
    result = run_python(
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
    result = run_python(
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
