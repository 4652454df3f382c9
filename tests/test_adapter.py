"""svdpi.adapter is the whole contract between the core and the adapters (issue 15, item 7).

The adapters under backends/ import from ``svdpi`` (the public API, its
public modules such as ``svdpi.functions``) and ``svdpi.adapter`` only, never
from a private module ``svdpi._*``; the contract module documents every name
it exports and imports no array library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import svdpi
import svdpi.adapter

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ROOT / "backends"
ALLOWED = {"svdpi", "svdpi.adapter", "svdpi.functions"}


def _svdpi_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of each import of an svdpi module in ``path`` (not relative ones)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "svdpi":
                found.append((node.lineno, node.module))
                # ``from svdpi import _eig`` reaches a private module too.
                found += [
                    (node.lineno, f"{node.module}.{alias.name}")
                    for alias in node.names
                    if node.module == "svdpi" and alias.name.startswith("_")
                ]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "svdpi"]
    return found


def _adapter_files() -> list[Path]:
    return sorted(BACKENDS.rglob("*.py"))


def test_there_are_adapters_to_check():
    names = {p.relative_to(BACKENDS).parts[0] for p in _adapter_files()}
    assert {"torch", "jax", "cupy"} <= names


@pytest.mark.parametrize("path", _adapter_files(), ids=lambda p: str(p.relative_to(BACKENDS)))
def test_adapters_import_only_the_public_api_and_the_contract(path):
    adapter = f"svdpi.{path.relative_to(BACKENDS).parts[0]}"
    bad = [
        f"line {line}: {module}"
        for line, module in _svdpi_imports(path)
        if module not in ALLOWED and not module.startswith(adapter)
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports outside svdpi / svdpi.adapter: {bad}"


def test_the_import_check_sees_a_private_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import svdpi\nfrom svdpi._eig import eig\nfrom svdpi import _gradient\n"
        "from svdpi.adapter import register\n",
        encoding="utf-8",
    )
    modules = [m for _, m in _svdpi_imports(sample)]
    assert [m for m in modules if m not in ALLOWED] == ["svdpi._eig", "svdpi._gradient"]


@pytest.mark.parametrize("name", svdpi.adapter.__all__)
def test_every_name_of_the_contract_exists_and_is_documented(name):
    assert hasattr(svdpi.adapter, name)
    assert name in svdpi.adapter.__doc__, f"svdpi.adapter's docstring does not describe {name}"


def test_the_contract_shares_the_cores_objects():
    # One implementation: what adapters get is what the public API uses.
    assert svdpi.adapter.Truncation is svdpi.Truncation
    from svdpi import _dispatch

    assert svdpi.adapter.register is _dispatch.register
    assert svdpi.adapter.DECLINED is _dispatch.DECLINED


def test_importing_the_contract_imports_no_array_library():
    code = (
        "import sys, svdpi.adapter\n"
        "loaded = [m for m in ('torch', 'jax', 'cupy') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
