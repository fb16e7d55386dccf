"""The site's Sphinx extension (docs/conf.py loads it).

Docstrings as written. The project's docstrings are plain text for a reader at a terminal
(aligned columns, `code` in backticks, shapes like (N, 28, 28, 1)), not reStructuredText:
the API pages show each one as a preformatted block, exactly as `help()` would, instead of
letting reStructuredText misread `*_forward` or an indented table.

MathJax from a local copy. Sphinx loads MathJax from a CDN unless told otherwise; the site
must work offline, so the pages load MathJax 3 from the site's _static/mathjax/, copied
from the PyPI package sphinx-mathjax-offline (MathJax's own es5 build, fonts included; its
folder name has dashes, so it is found, not imported).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from sphinx.errors import ExtensionError

MATHJAX_PACKAGE = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "tex-chtml.js"  # MathJax 3: TeX input, HTML output, fonts beside it


def docstring_as_text(app, what, name, obj, options, lines: list[str]) -> None:
    """autodoc-process-docstring: the docstring's lines as one block of plain text."""
    if not any(line.strip() for line in lines):
        return
    lines[:] = [".. code-block:: text", ""] + [f"    {line}" if line.strip() else ""
                                               for line in lines] + [""]


def mathjax_folder() -> Path:
    """The folder holding MathJax 3's es5 build (tex-chtml.js, output/chtml/fonts, ...)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    folder = Path(spec.origin).parent / "static" / "mathjax" if spec and spec.origin else None
    if folder is None or not (folder / MATHJAX_ENTRY).is_file():
        raise ExtensionError(f"no local MathJax: the package {MATHJAX_PACKAGE} is missing "
                             "(pip install -e '.[dev]')")
    return folder


def use_local_mathjax(app) -> None:
    """builder-inited: the HTML pages load MathJax from _static/mathjax/."""
    if app.builder.format != "html":
        return
    app.config.html_static_path.append(str(mathjax_folder().parent))
    app.config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"


def setup(app):
    app.connect("autodoc-process-docstring", docstring_as_text)
    app.connect("builder-inited", use_local_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
