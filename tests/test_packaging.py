"""Packaging: the core never imports a framework; editable and wheel installs both work."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)


def test_importing_svdpi_imports_no_framework():
    code = (
        "import sys, svdpi\n"
        "loaded = [m for m in ('torch', 'cupy', 'jax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr


def test_core_sources_import_only_the_array_api():
    forbidden = (
        "import torch",
        "import cupy",
        "import jax",
        "from torch",
        "from cupy",
        "from jax",
    )
    for path in (ROOT / "src" / "svdpi").rglob("*.py"):
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path.name} contains {needle!r}"


def test_svdpi_cupy_without_cupy_raises_a_clear_import_error():
    code = (
        "import sys\n"
        "sys.modules['cupy'] = None  # as if CuPy were not installed\n"
        "try:\n"
        "    import svdpi.cupy\n"
        "except ImportError as error:\n"
        "    assert 'CuPy' in str(error) and 'pip install' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('svdpi.cupy imported without CuPy')\n"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr


def test_editable_install_maps_the_adapters():
    """From a checkout, svdpi comes from src/ and svdpi.torch from backends/torch/."""
    pytest.importorskip("torch")
    import svdpi.torch

    if Path(svdpi.__file__).resolve().parents[2] != ROOT:
        pytest.skip("svdpi is not installed in editable mode from this checkout")
    assert Path(svdpi.__file__).resolve() == ROOT / "src" / "svdpi" / "__init__.py"
    assert Path(svdpi.torch.__file__).resolve() == ROOT / "backends" / "torch" / "__init__.py"
    # ... and the real PyTorch is still the one `import torch` finds.
    import torch

    assert "backends" not in Path(torch.__file__).parts


def test_wheel_installs_into_a_fresh_venv(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("torch")
    dist = tmp_path / "dist"
    result = _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("svdpi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "svdpi/__init__.py",
        "svdpi/py.typed",  # PEP 561: the annotations are meant to be used
        "svdpi/torch/__init__.py",
        "svdpi/cupy/__init__.py",
        "svdpi/jax/__init__.py",
    ):
        assert expected in names
    import svdpi

    # The version is written once (svdpi.__version__) and reaches the metadata.
    assert wheel.name.startswith(f"svdpi-{svdpi.__version__}-")
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    # Where the core finds each adapter's fast paths (svdpi._dispatch).
    assert "[svdpi.native]" in text
    assert "cupy = svdpi.cupy" in text
    assert "torch = svdpi.torch" in text
    assert not any(name.startswith(("backends/", "tests/", "src/")) for name in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    zipfile.ZipFile(wheel).extractall(site)  # what pip does for a pure-Python wheel
    # Dependencies (array-api-compat, torch) from this environment, after the wheel's svdpi.
    deps = [p for p in sys.path if p.endswith("site-packages")] + [
        sysconfig.get_paths()["purelib"]
    ]
    (site / "zz_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    code = (
        "import svdpi, svdpi.torch, torch, numpy as np\n"
        "assert 'site-packages' in svdpi.__file__, svdpi.__file__\n"
        "assert svdpi.torch.__file__.startswith(svdpi.__file__.rsplit('__init__', 1)[0])\n"
        "w, v = svdpi.torch.eig(torch.eye(3, dtype=torch.float64))\n"
        "assert np.allclose(svdpi.eig(np.eye(2))[0], 1.0)\n"
        "try:\n"
        "    import svdpi.cupy\n"
        "except ImportError as error:\n"
        "    assert 'CuPy' in str(error)\n"
        "try:\n"
        "    import jax.numpy as jnp\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    import svdpi.jax\n"
        "    assert svdpi.jax.__file__.startswith(svdpi.__file__.rsplit('__init__', 1)[0])\n"
        "    assert float(svdpi.jax.eig(jnp.eye(2)).eigenvalues[0]) == 1.0\n"
    )
    result = _run([str(python), "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
