"""The documentation: it builds with warnings as errors, and what it shows runs.

* the Sphinx build (``-W --keep-going -n``, as ``make docs``) into a temporary
  folder, so CI fails on a broken page, reference or docstring (numpydoc
  validates the docstrings during the build);
* the built pages load no script or style sheet from the network, and the
  maths is typeset by the bundled MathJax (checked in a headless Chromium
  where one is installed);
* the benchmark page's tables (Markdown through MyST) and its figure, and the
  script that draws the figure from the recorded benchmark files;
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
import shutil
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


@pytest.fixture(scope="module")
def built_html(tmp_path_factory):
    """The HTML build of the docs, as ``make docs`` runs it; fails on any warning."""
    extensions = ("pydata_sphinx_theme", "numpydoc", "matplotlib", "myst_parser")
    for module in ("sphinx", *extensions, "sphinx-mathjax-offline"):
        pytest.importorskip(module)
    tmp_path = tmp_path_factory.mktemp("docs")
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
    return tmp_path / "html"


@pytest.mark.slow
def test_docs_build_without_warnings(built_html):
    html = built_html
    for page in ("index", "getting_started", "user_guide", "theory", "examples", "benchmarks"):
        assert (html / f"{page}.html").is_file(), page
    # The build-time plot and the API pages of all three modules exist.
    assert list((html / "_images").glob("plot_coefficient*.png"))
    generated = {p.stem for p in (html / "api" / "generated").glob("*.html")}
    assert {"svdpi.eig", "svdpi.torch.eig", "svdpi.cupy.coefficient_matrix"} <= generated
    # The CuPy docstrings rendered (mocked CuPy), not an empty page.
    cupy_page = (html / "api" / "generated" / "svdpi.cupy.coefficient_matrix.html").read_text()
    assert "Parameters" in cupy_page or "Returns" in cupy_page


# A script or style sheet (or font, image, frame) fetched from another host:
# absolute ``http(s)://`` or protocol-relative ``//`` addresses.
_REMOTE_ASSET = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//[^\"']*[\"']", re.I
)
_REMOTE_CSS_URL = re.compile(r"(?:@import\s+|url\()\s*[\"']?(?:https?:)?//", re.I)


@pytest.mark.slow
def test_built_pages_load_nothing_from_the_network(built_html):
    pages = list(built_html.rglob("*.html"))
    assert len(pages) > 10
    remote = {}
    for page in pages:
        found = _REMOTE_ASSET.findall(page.read_text(encoding="utf-8"))
        # A link to another site (rel="..." other than a style sheet or preload)
        # is a reference for the reader, not something the page loads.
        found = [tag for tag in found if not re.search(r"<link\b", tag, re.I) or _loads(tag)]
        if found:
            remote[str(page.relative_to(built_html))] = found
    for sheet in built_html.rglob("*.css"):
        if _REMOTE_CSS_URL.search(sheet.read_text(encoding="utf-8", errors="replace")):
            remote[str(sheet.relative_to(built_html))] = ["url() or @import of another host"]
    assert not remote, remote


def _loads(link_tag: str) -> bool:
    rel = re.search(r"\brel=[\"']([^\"']*)[\"']", link_tag, re.I)
    return rel is None or bool(re.search(r"stylesheet|preload|modulepreload|icon", rel[1], re.I))


def test_remote_asset_patterns_catch_a_cdn_script_and_style():
    # The check above must be able to fail: a page as sphinx.ext.mathjax writes it by default.
    cdn = (
        '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">'
    )
    assert _REMOTE_ASSET.search(cdn)
    assert _REMOTE_ASSET.search('<link rel="stylesheet" href="//fonts.example.org/a.css" />')
    assert _loads('<link rel="stylesheet" href="//fonts.example.org/a.css" />')
    assert _REMOTE_CSS_URL.search("@font-face { src: url(https://fonts.example.org/x.woff2) }")
    assert not _REMOTE_ASSET.search('<script src="_static/mathjax/tex-chtml.js"></script>')


@pytest.mark.slow
def test_maths_is_typeset_by_the_bundled_mathjax(built_html):
    theory = (built_html / "theory.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]*mathjax[^\"]*)\"", theory, re.I)
    assert scripts, "theory.html loads no MathJax"
    for src in scripts:
        assert (built_html / src.split("?")[0]).is_file(), f"{src} is not in the build"
    maths = theory.count('class="math notranslate nohighlight"')
    assert maths > 50

    # Render the page and count what MathJax typeset: one container per formula.
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium to render theory.html")
    rendered = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--dump-dom",
            (built_html / "theory.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    assert rendered.count("<mjx-container") == maths, "MathJax did not typeset every formula"


@pytest.mark.slow
def test_benchmark_page_shows_the_tables_and_the_figure(built_html):
    page = (built_html / "benchmarks.html").read_text(encoding="utf-8")
    # bench_eig.md's two Markdown tables, rendered as HTML tables by MyST.
    assert page.count("<table") >= 2
    assert "svdpi / eigh" in page
    assert "|---|" not in page
    image = re.search(r'<img[^>]*src="([^"]*ratios\.png)"', page)
    assert image, "the ratio figure is not on the benchmark page"
    assert (built_html / image[1]).is_file()


def _plot_benchmarks():
    spec = importlib.util.spec_from_file_location(
        "plot_benchmarks", DOCS / "scripts" / "plot_benchmarks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EIG_MD = """Machine: test.

| batch × n | svdpi fwd+bwd | torch.linalg.eigh fwd+bwd | paper's PI loop | svdpi / eigh |
|---|---|---|---|---|
| 16 × 4 | 300 µs | 150 µs | 15.00 ms | 2.00 |
| 1 × 512 | 40.00 ms | 32.00 ms | not run | 1.25 |

| n | numpy.linalg.eigh |
|---|---|
| 128 | 1.18 ms |
"""

_LAYER_TXT = """Training step, float32
         shape                  layer   d        ms  / BN2d  loop/ZCA
---------------------------------------------------------------------
  128x64x32x32            BatchNorm2d         50.00    1.00
                   ZCAWhitening(G=16)   4     75.00    1.50
                     paper loop(G=16)   4    250.00    5.00      3.33
                       SomeOtherLayer   4     60.00    1.20
                    ZCAWhitening(G=1)  64    125.00    2.50
   16x64x32x32            BatchNorm2d          3.00    1.00
                   ZCAWhitening(G=16)   4      6.00    2.00
"""


def test_benchmark_plot_reads_the_recorded_tables():
    plot = _plot_benchmarks()
    eig = plot.eig_ratios(_EIG_MD)
    assert [r["size"] for r in eig] == ["16 × 4", "1 × 512"]
    assert [r["svdpi"] for r in eig] == [2.0, 1.25]
    assert eig[0]["loop"] == pytest.approx(15e-3 / 150e-6)
    assert eig[1]["loop"] is None
    layer = plot.layer_ratios(_LAYER_TXT)
    assert layer == {
        "128x64x32x32": {"zca": [(4, 1.5), (64, 2.5)], "loop": [(4, 5.0)]},
        "16x64x32x32": {"zca": [(4, 2.0)], "loop": []},
    }
    with pytest.raises(ValueError, match="svdpi / eigh"):
        plot.eig_ratios("| n | numpy.linalg.eigh |\n|---|---|\n| 128 | 1 ms |\n")
    with pytest.raises(ValueError, match="ZCAWhitening"):
        plot.layer_ratios("nothing recorded\n")


def test_benchmark_plot_draws_the_recorded_files(tmp_path):
    pytest.importorskip("matplotlib")
    plot = _plot_benchmarks()
    # Every row of the recorded files is read, not only the first table's head.
    recorded = (DOCS / "_static" / "benchmarks" / "bench_eig.md").read_text(encoding="utf-8")
    eig = plot.eig_ratios(recorded)
    assert len(eig) == len(re.findall(r"^\| \d+ × \d+ \|", recorded, flags=re.MULTILINE))
    output = plot.main(["--output", str(tmp_path / "ratios.png")])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_benchmark_figure_is_drawn_from_the_recorded_files():
    image = pytest.importorskip("PIL.Image")
    plot = _plot_benchmarks()
    recorded = DOCS / "_static" / "benchmarks"
    digest = plot.source_digest(
        (recorded / "bench_eig.md").read_text(encoding="utf-8"),
        (recorded / "bench_zca_layer.txt").read_text(encoding="utf-8"),
    )
    with image.open(recorded / "ratios.png") as figure:
        source = figure.text.get("Source", "")
    assert digest in source, (
        "docs/_static/benchmarks/ratios.png is older than the recorded benchmark files: "
        "regenerate it with `python docs/scripts/plot_benchmarks.py`"
    )


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
