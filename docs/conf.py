"""Sphinx configuration of the ebook2audio_dask documentation.

Why Sphinx: Dask, distributed and dask-jobqueue all document themselves with
Sphinx and numpydoc-style docstrings, and so does this package, so the API
reference is generated from the docstrings with autodoc + numpydoc.  The
``ebook2audio`` command line is a click group, which sphinx-click renders
from the code itself, so the CLI reference cannot drift from ``--help``.  The
narrative pages stay Markdown, read by MyST.  The theme is pydata-sphinx-theme,
the one Dask and the PyData projects use.

Build (warnings are errors, as in CI, see ``tests/test_docs.py``)::

    python -m sphinx -W --keep-going -b html docs /tmp/docs-html

The build needs no network: no intersphinx, no remote images, no theme
options that fetch anything.
"""

from __future__ import annotations

import os
import re
import sys

# Import the package from this checkout even when it is not installed.
sys.path.insert(0, os.path.abspath(".."))

import ebook2audio_dask

project = "ebook2audio_dask"
author = "ebook2audio_dask contributors"
copyright = "ebook2audio_dask contributors"
release = ebook2audio_dask.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx_click",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]

# -- MyST (Markdown) -----------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors for "page.md#section" links between pages.
myst_heading_anchors = 3

# -- autodoc + numpydoc ----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections give the types
# The optional engines (piper, torch, coqui) are never imported by the pages
# documented here; dask-jobqueue is imported lazily inside functions.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"ebook2audio_dask {release}"
html_theme_options = {
    # Nothing fetched at build or view time: no icon links, no version switcher,
    # no analytics, no edit-on-GitHub buttons.
    "icon_links": [],
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_edit_page_button": False,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list[str] = []
html_show_sourcelink = False


# -- sphinx-click ---------------------------------------------------------------------
# Click help texts are plain text for ``--help``, but sphinx-click reads them as
# reStructuredText, where ``WORD__`` is an anonymous hyperlink reference (the
# group's help names ``DASK_EBOOK2AUDIO__...`` variables).  Escape such
# underscores so the text renders as it reads in a terminal.
_ANON_REF = re.compile(r"(?<=\w)__(?=[^\w`]|$)")


def _escape_click_text(app, ctx, lines):
    lines[:] = [_ANON_REF.sub(r"\\_\\_", line) for line in lines]


def setup(app):
    for event in ("description", "options", "arguments", "envvars", "epilog"):
        app.connect(f"sphinx-click-process-{event}", _escape_click_text)
