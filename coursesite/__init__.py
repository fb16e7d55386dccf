"""The course site: every tutorial executed once in fast mode, rendered with its outputs
beside the project's pages, the twins' code side by side and the API reference.

    python -m coursesite                     # build/site/index.html (see docs/site.md)

    notebooks   execute a tutorial in fast mode; the executed copies in build/executed/,
                which tests/test_tutorials.py fills and the build reuses
    twins       the generated side-by-side pages of every layer kind and the API pages
    build       the command line: execute what is missing, generate, run Sphinx
    sphinx_ext  the Sphinx extension: the `twin-source` directive, docstrings as text

Sphinx's own configuration is docs/conf.py; docs/ is the site's source.
"""
