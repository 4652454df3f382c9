"""Sphinx configuration for the svdpi documentation.

Build with ``make docs`` (``python -m sphinx -W --keep-going -n -b html docs
docs/_build/html``). autodoc imports the *installed* svdpi (``pip install -e
.``); nothing is added to ``sys.path``: ``backends/`` holds a folder named
``torch`` that would shadow PyTorch.

Cross-references to NumPy, PyTorch, CuPy and the array API standard use
intersphinx, which downloads their inventories. The build must also work
offline (CI, air-gapped machines), so intersphinx is enabled only when
``SVDPI_DOCS_ONLINE=1`` is set; offline, references into those projects are
rendered as plain names and ignored by the nitpicky (``-n``) check.
"""

from __future__ import annotations

import os

import svdpi

project = "svdpi"
author = "svdpi developers"
copyright = "2026, svdpi developers"
release = svdpi.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]

ONLINE = os.environ.get("SVDPI_DOCS_ONLINE") == "1"
if ONLINE:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "cupy": ("https://docs.cupy.dev/en/stable", None),
        "array-api": ("https://data-apis.org/array-api/latest", None),
    }

# References into other projects that only intersphinx can resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|torch|cupy|cupyx|array_api|array_api_compat|typing|collections)(\..*)?"),
    (r"py:.*", r"(Any|optional|array|None)"),
    # Private modules named in docstrings (not part of the API reference).
    (r"py:.*", r"svdpi(\.\w+)?\._\w+(\..*)?"),
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "_static", "_includes"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

# -- autodoc / autosummary / numpydoc ---------------------------------------
autosummary_generate = True  # pages go to docs/api/generated/ (git-ignored)
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
autodoc_default_options = {"members": False}
# svdpi.cupy raises ImportError without CuPy: document it from a mocked CuPy.
autodoc_mock_imports = ["cupy", "cupyx"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- matplotlib plot directive ------------------------------------------------
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.autolayout": True}

# -- HTML ------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"svdpi {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "auto"}


# -- Markdown tables from the benchmark and study scripts ------------------------
def markdown_to_rst(text: str) -> str:
    """The subset of Markdown the scripts write (headings, paragraphs, pipe tables) as reST."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            rows = [[cell.strip() for cell in row.strip("|").split("|")] for row in block]
            rows = [row for row in rows if not all(set(c) <= set(":- ") for c in row)]
            out += ["", ".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                out.append("   * - " + _inline(row[0]))
                out += ["     - " + _inline(cell) for cell in row[1:]]
            out.append("")
            continue
        if line.startswith("#"):
            out += ["", ".. rubric:: " + _inline(line.lstrip("#").strip()), ""]
        else:
            out.append(_inline(line))
        i += 1
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    import re

    # `code` -> ``code`` (reST's single backticks would be a "title reference").
    text = re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)
    return text if text.strip() else ""


def _setup_markdown_table(app):
    from docutils import nodes
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList

    class MarkdownTables(Directive):
        """``.. markdown-tables:: path`` (relative to the document): include a script's output."""

        required_arguments = 1

        def run(self):
            env = self.state.document.settings.env
            relative, absolute = env.relfn2path(self.arguments[0])
            env.note_dependency(relative)
            try:
                with open(absolute, encoding="utf-8") as handle:
                    rst = markdown_to_rst(handle.read())
            except OSError as error:
                raise self.error(f"markdown-tables: cannot read {relative}: {error}") from error
            container = nodes.container()
            self.state.nested_parse(StringList(rst.splitlines(), absolute), 0, container)
            return container.children

    app.add_directive("markdown-tables", MarkdownTables)


def setup(app):
    _setup_markdown_table(app)
