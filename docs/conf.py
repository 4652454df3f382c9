"""Sphinx configuration for the svdpi documentation.

Build with ``make docs`` (``python -m sphinx -W --keep-going -n -b html docs
docs/_build/html``). autodoc imports the *installed* svdpi (``pip install -e
.``); nothing is added to ``sys.path``: ``backends/`` holds a folder named
``torch`` that would shadow PyTorch.

Cross-references to NumPy, PyTorch, CuPy and the array API standard use
intersphinx, which downloads their inventories. The build must also work
offline (CI, air-gapped machines), so intersphinx is enabled only when
``SVDPI_DOCS_ONLINE=1`` is set; offline, references into those projects are
rendered as plain names and ignored by the nitpicky (``-n``) check. The pages
themselves load nothing from the network either: MathJax is bundled
(``tests/test_docs.py`` checks both).
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
    # MathJax from the installed package, copied into _static/mathjax: the pages
    # render their maths offline and load nothing from a CDN.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    # The benchmark scripts write Markdown tables; pages include them with
    # ``.. include:: file.md`` and ``:parser: myst_parser.sphinx_``.
    "myst_parser",
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

# Validation of every docstring autodoc renders (the API pages): each finding
# is a warning, so ``-W`` fails the build. All checks, except:
numpydoc_validation_checks = {
    "all",
    # An extended summary and a See Also section are useful on some pages, not
    # a defect where a one-line summary and the sections already say it all.
    "ES01",
    "SA01",
}
numpydoc_validation_exclude = {
    # Module constants (svdpi.cupy.SOLVERS, ...): documented by a ``#:`` comment
    # or by their own value; a function's sections do not apply to them.
    r"\.[A-Z][A-Z0-9_]+$",
    # NamedTuple results list their fields under "Attributes"; the checker
    # reads the generated constructor as undocumented parameters.
    r"\.(EigResult|SVDResult|WhiteningStats|GroupedMoments)$",
}
numpydoc_validation_overrides = {
    # The synchronised layers document the parameters they share with the
    # plain layer as one group, "As in :class:`ZCAWhitening`", so the types
    # are written once, on the plain layer's page.
    "PR04": [r"As in :class:`(ZCAWhitening|PCADenoising)`"],
}
