"""The documentation: it builds with warnings as errors, and what it shows runs.

* the Sphinx build (``-W --keep-going -n``, as ``make docs``) into a temporary
  folder, so CI fails on a broken page, reference or docstring;
* every public name is on an API page;
* the Getting-started snippets run, and the NumPy backward written there by
  hand equals PyTorch's autograd on the same data;
* the theory page's numerical check of the closed form.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import svdpi

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _code_blocks(page: str, language: str = "python") -> list[str]:
    """The ``.. code-block:: <language>`` blocks of a reST page, dedented."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        indent = len(line) - len(line.lstrip()) + 3
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) < indent:
                break
            body.append(following[indent:])
        blocks.append("\n".join(body).strip() + "\n")
    return blocks


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "pydata_sphinx_theme", "numpydoc", "matplotlib"):
        pytest.importorskip(module)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("SVDPI_DOCS_ONLINE", None)  # CI has no network: intersphinx stays off
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    html = tmp_path / "html"
    for page in ("index", "getting_started", "user_guide", "theory", "examples", "benchmarks"):
        assert (html / f"{page}.html").is_file(), page
    # The build-time plot and the API pages of all three modules exist.
    assert list((html / "_images").glob("plot_coefficient*.png"))
    generated = {p.stem for p in (html / "api" / "generated").glob("*.html")}
    assert {"svdpi.eig", "svdpi.torch.eig", "svdpi.cupy.coefficient_matrix"} <= generated
    # The CuPy docstrings rendered (mocked CuPy), not an empty page.
    cupy_page = (html / "api" / "generated" / "svdpi.cupy.coefficient_matrix.html").read_text()
    assert "Parameters" in cupy_page or "Returns" in cupy_page


def _public_names(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    return [f"{module_name}.{name}" for name in module.__all__]


@pytest.mark.parametrize(
    "qualified",
    [*_public_names("svdpi"), *_public_names("svdpi.torch"), *_public_names("svdpi.jax")],
)
def test_every_public_name_is_on_an_api_page(qualified):
    module, name = qualified.rsplit(".", 1)
    page = {"svdpi": "svdpi.rst", "svdpi.torch": "torch.rst", "svdpi.jax": "jax.rst"}[module]
    text = (DOCS / "api" / page).read_text(encoding="utf-8")
    assert re.search(rf"^\s+{re.escape(name)}\s*$", text, flags=re.MULTILINE), (
        f"{qualified} is missing from docs/api/{page}"
    )


def test_cupy_page_lists_the_cupy_module_names():
    # svdpi.cupy cannot be imported without CuPy; read its __all__ from the source.
    source = (ROOT / "backends" / "cupy" / "__init__.py").read_text(encoding="utf-8")
    names = re.findall(r'^\s+"(\w+)",$', source.split("__all__", 1)[1], flags=re.MULTILINE)
    assert names
    text = (DOCS / "api" / "cupy.rst").read_text(encoding="utf-8")
    functions = [n for n in names if not n.isupper() and n != "EigResult"]
    missing = [n for n in functions if not re.search(rf"^\s+{n}\s*$", text, flags=re.MULTILINE)]
    assert not missing, f"missing from docs/api/cupy.rst: {missing}"


def test_getting_started_numpy_backward_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    numpy_snippet, cupy_snippet, torch_snippet = _code_blocks("getting_started.rst")
    assert "import cupy" in cupy_snippet
    scope: dict = {}
    exec(compile(numpy_snippet, "getting_started.rst[numpy]", "exec"), scope)
    x, c, g_x, loss = scope["x"], scope["c"], scope["g_x"], scope["loss"]

    # The same computation through autograd, from the same data.
    xt = torch.from_numpy(x).requires_grad_(True)
    xc = xt - xt.mean(dim=1, keepdim=True)
    cov = xc @ xc.T / x.shape[1] + 1e-5 * torch.eye(x.shape[0], dtype=torch.float64)
    import svdpi.torch

    w, v = svdpi.torch.eig(cov)
    whitening = v @ torch.diag(w.rsqrt()) @ v.T
    loss_t = (whitening @ xc * torch.from_numpy(c)).sum()
    loss_t.backward()
    np.testing.assert_allclose(loss, loss_t.item(), rtol=1e-10)
    np.testing.assert_allclose(g_x, xt.grad.numpy(), rtol=1e-8, atol=1e-10)

    # The torch snippet runs as written and gives a finite gradient.
    scope = {}
    exec(compile(torch_snippet, "getting_started.rst[torch]", "exec"), scope)
    assert torch.isfinite(scope["x"].grad).all()


def test_theory_numerical_check_of_the_closed_form():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "check_closed_form", DOCS / "scripts" / "check_closed_form.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for num_iters in (1, 5, 19, 50):
        assert module.max_relative_difference(num_iters=num_iters) < 1e-12, num_iters


def test_docs_never_put_backends_on_sys_path():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "sys.path" not in conf.replace("``sys.path``", "")
    assert svdpi.__file__.endswith(os.path.join("svdpi", "__init__.py"))
