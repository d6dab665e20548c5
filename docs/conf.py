"""Sphinx configuration of the unrolled documentation site.

Build: ``python3 -m sphinx -W --keep-going -b html docs docs/_build/html`` from the
repository root (``pip install -e ".[docs]"`` first). The gallery runs ``examples/*.py``
with the small sizes in ``_ext/unrolled_docs.py``; ``UNROLLED_DOCS_FULL=1`` runs them at
their defaults, ``-D plot_gallery=0`` does not run them at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # document this tree, not an installed copy

import unrolled_docs  # noqa: E402

import unrolled  # noqa: E402

project = "unrolled"
author = "The unrolled developers"
copyright = "The unrolled developers"
version = release = unrolled.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "unrolled_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_templates", "auto_examples/*.ipynb"]
templates_path = ["_templates"]

# Markdown pages (the measured pages are plain Markdown, shared with the repository view).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# API reference from the docstrings (Google-style "Args:" sections).
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # not torch.nn.Module's docstrings on every forward()
autodoc_mock_imports = unrolled_docs.missing_optional_modules()
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# The gallery: examples/*.py, each run once with small sizes, its figures captured.
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": unrolled_docs.runnable_examples_pattern(),
    "ignore_pattern": r"__init__\.py",
    "reset_argv": "unrolled_docs.gallery_argv",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "show_signature": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "abort_on_example_error": True,
    "write_computation_times": False,
    "capture_repr": (),  # printed output only, not the value of a cell's last line
}

html_theme = "furo"
html_title = f"unrolled {release}"
html_show_sphinx = False
html_show_sourcelink = False
html_static_path: list[str] = []
html_last_updated_fmt = None
