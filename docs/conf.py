"""Sphinx's configuration of the course site. Build it with `python -m coursesite` (see
site.md): that command executes the tutorials, writes the generated pages and runs Sphinx
with warnings as errors."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import plumbing.quiet  # noqa: E402,F401  (autodoc imports TensorFlow: without its start-up lines)

project = "twinnet"
author = "the twinnet authors"
copyright = "the twinnet authors"

extensions = [
    "myst_nb",              # Markdown pages and executed notebooks (MyST-Parser inside)
    "sphinx_design",        # tabs: NumPy and Keras side by side
    "sphinx.ext.autodoc",   # the API reference from the docstrings
    "coursesite.sphinx_ext",  # docstrings as written, MathJax from a local copy
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # docs/ pages start their headings at level 1 or 2

# The tutorials are executed once, before Sphinx (tests/test_tutorials.py or the build
# command); Sphinx renders the executed copies as they are.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "sphinx_book_theme"
html_title = "twinnet"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and get a 404
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # the sidebar shows the open section's pages only: with 89 pages, the whole tree on
    # every page made up a third of the build's time
    "collapse_navbar": True,
    "max_navbar_depth": 2,
}
html_show_sourcelink = False
html_copy_source = False
html_context = {"default_mode": "auto"}  # light or dark as the reader's system prefers
