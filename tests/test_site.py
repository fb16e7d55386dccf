"""The course site (coursesite/, docs/): the pages the build generates, the README that
points at it, and, marked `site`, the built site itself in headless Chromium.

The `site` tests read the site that `python -m coursesite` built into build/site (after
the default suite, which leaves the executed tutorials behind, .ci/run builds it and runs
`python -m pytest -m site`). They fail, not skip, when it is missing: a site check that
checked nothing has failed. Screenshots of two pages for results/:

    TWINNET_SITE_SCREENSHOTS=results python -m pytest -m site tests/test_site.py
"""
import functools
import http.server
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from coursesite import notebooks, pages

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)


# --- README, the front page ----------------------------------------------------------------


def test_readme_is_a_front_page_with_the_ci_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    tests = [line.strip() for line in ci.splitlines() if line.startswith("python -m pytest")]
    assert tests and tests[0] == "python -m pytest -n auto"  # README's test command, as CI runs it
    first_screen = "\n".join(readme.splitlines()[:45])
    assert f"MNIST_DIR=../shared/mnist {tests[0]}" in first_screen
    assert ('pip install -e ".[dev]" && MNIST_DIR=../shared/mnist python compare.py'
            in first_screen)
    assert "python -m coursesite" in first_screen


def test_readme_names_every_tutorial_chapter():
    rows = re.findall(r"^\| (\d\d|appendix)\b", (ROOT / "README.md").read_text(), re.MULTILINE)
    for path in notebooks.tutorials():
        assert path.name[:2] in rows or path.name.startswith("appendix"), path.name
    assert len(rows) == len(set(rows))


def test_readme_links_lead_to_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?:)[^)#]+)", readme)
    assert links and [link for link in links if not (ROOT / link).exists()] == []


# --- the generated pages and the executed copies -------------------------------------------


def test_links_of_a_moved_notebook_still_point_at_their_files():
    text = "see [profile](../comparison/profile.py), [web](https://x.org/a) and [here](#top)"
    moved = pages.rebase_links(text, ROOT / "tutorials", ROOT / "docs" / "tutorials")
    assert moved == ("see [profile](../../comparison/profile.py), [web](https://x.org/a) "
                     "and [here](#top)")


def test_every_layer_kind_gets_a_page_of_code_from_the_source_files():
    from scratch.registry import KINDS

    for kind in KINDS.values():
        page = pages.twin_page(kind)
        includes = re.findall(r"```\{literalinclude\} (\S+)\n:language: python\n:(\w+): (\S+)",
                              page)
        for path, option, value in includes:  # every include names a real file and object
            source = (ROOT / "docs" / "twins" / path).resolve()
            assert source.is_file(), path
            if option == "pyobject":
                assert re.search(rf"^(def|class) {value}\b", source.read_text(), re.MULTILINE)
        objects = {value for _, option, value in includes if option == "pyobject"}
        assert {f"{kind.name}_forward", f"{kind.name}_backward"} <= objects
        first, last = pages.registry_entry_lines(kind.name)
        entry = (ROOT / "scratch" / "registry.py").read_text().splitlines()[first - 1:last]
        assert entry[0].strip() == "LayerKind(" and f'"{kind.name}"' in entry[1]
        assert f"\n{pages.keras_call(kind)}\n" in page
        assert page.count(":sync: numpy\n") == 1 and page.count(":sync: keras\n") == 1


def test_the_keras_twin_line_builds_the_registry_layer():
    from scratch.registry import KINDS

    assert pages.keras_call(KINDS["conv2d"]) == (
        "keras.layers.Conv2D(filters=4, kernel_size=3, strides=1, padding='valid', "
        "activation='relu')")
    assert pages.keras_call(KINDS["residual"]).startswith("keras_impl.blocks.ResidualBlock(")


def test_api_pages_cover_every_module_of_both_twins():
    modules = pages.api_modules()
    assert {"scratch.layers", "scratch.course_models", "keras_impl.model", "keras_impl.train"} \
        <= set(modules)
    assert not [m for m in modules if m.startswith(("comparison", "plumbing"))]


def test_an_executed_copy_is_current_only_for_the_notebook_it_was_made_from(tmp_path):
    source = tmp_path / "07_demo.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, source)
    executed = nbformat.read(source, as_version=4)
    executed.metadata[notebooks.STAMP] = notebooks.source_hash(source)
    copies = tmp_path / "executed"
    saved = notebooks.save_executed(source, executed, copies)
    assert notebooks.executed_copy(source, copies) == saved == copies / "07_demo.ipynb"
    nb.cells.append(nbformat.v4.new_markdown_cell("an edit"))
    nbformat.write(nb, source)
    assert notebooks.executed_copy(source, copies) is None
    assert notebooks.executed_copy(tmp_path / "08_never_run.ipynb", copies) is None


def test_the_build_refuses_to_start_without_mnist(tmp_path, monkeypatch, capsys):
    from coursesite import build

    monkeypatch.delenv("MNIST_DIR", raising=False)
    with pytest.raises(SystemExit) as stop:
        build.main(["--fresh", "--out", str(tmp_path / "site")])
    assert stop.value.code == 2
    assert "MNIST_DIR is not set: " in capsys.readouterr().err
    assert not (tmp_path / "site" / "index.html").exists()


def test_the_bench_table_lives_in_the_performance_page():
    from comparison import benchreadme

    assert benchreadme.readme_file(str(ROOT / "docs" / "performance.md"))


# --- the built site ------------------------------------------------------------------------


class Assets(HTMLParser):
    """Every URL a page loads: scripts, stylesheets, fonts, images, frames."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "embed") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


@pytest.fixture(scope="module")
def site():
    index = SITE / "index.html"
    assert index.is_file(), f"{index} is missing: build the site first (python -m coursesite)"
    return SITE


@pytest.mark.site
def test_the_site_loads_nothing_from_the_internet(site):
    remote = []
    for page in site.rglob("*.html"):
        parser = Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        remote += [f"{page.relative_to(site)}: {url}" for url in parser.urls if REMOTE.match(url)]
    for sheet in site.rglob("*.css"):
        for url in re.findall(r"(?:url\(|@import)\s*['\"]?([^'\")\s]+)", sheet.read_text("utf-8")):
            if REMOTE.match(url):
                remote.append(f"{sheet.relative_to(site)}: {url}")
    assert remote == []
    tutorial = (site / "tutorials" / "03_mlp_from_scratch.html").read_text(encoding="utf-8")
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/[^"]+\.js', tutorial)


@pytest.mark.site
def test_every_tutorial_and_layer_kind_has_a_page(site):
    from scratch.registry import KINDS

    for path in notebooks.tutorials():
        assert (site / "tutorials" / f"{path.stem}.html").is_file(), path.name
    twins = {p.stem for p in (site / "twins").glob("*.html")}
    assert twins == set(KINDS)
    api = (site / "api" / "scratch.layers.html").read_text(encoding="utf-8")
    for name in ("conv2d_forward", "conv2d_backward"):  # autodoc ran, docstrings shown
        assert f'id="scratch.layers.{name}"' in api
    assert "activations NHWC" in api


@pytest.fixture(scope="module")
def site_url(site):
    handler = functools.partial(QuietFiles, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url):
    """A page at `url` in a fresh context, with the console errors it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.goto(url, wait_until="load")
    return page, errors


def screenshot(page, name, show=None):
    """The window's view of `page`, scrolled to the locator `show`, into
    $TWINNET_SITE_SCREENSHOTS/name when that folder is set."""
    folder = os.environ.get("TWINNET_SITE_SCREENSHOTS")
    if folder:
        if show is not None:
            page.evaluate("element => element.scrollIntoView({block: 'center'})",
                          show.element_handle())
        page.wait_for_timeout(500)  # the theme's scroll handlers settle
        page.screenshot(path=str(Path(folder) / name))


@pytest.mark.site
def test_tutorial_4_shows_its_plots(browser, site_url):
    page, errors = open_page(browser, site_url + "tutorials/04_cnn_from_scratch.html")
    assert "CNN from scratch" in page.title()
    images = page.locator("div.cell_output img")
    assert images.count() >= 1
    # drawn: the PNG the notebook made, decoded by the browser
    sizes = page.evaluate("""() => Array.from(document.querySelectorAll('div.cell_output img'))
        .map(img => [img.complete, img.naturalWidth, img.naturalHeight])""")
    assert all(done and width > 100 and height > 50 for done, width, height in sizes), sizes
    page.wait_for_function("document.querySelectorAll('mjx-container').length > 0",
                           timeout=WAIT_MS)  # MathJax, from the site's own copy, set the formulas
    screenshot(page, "site-tutorial-04.png", show=images.nth(1))
    assert errors == []


@pytest.mark.site
def test_a_tab_switches_numpy_to_keras_on_every_tab_set(browser, site_url):
    page, errors = open_page(browser, site_url + "course-models.html")
    sets = page.locator("div.sd-tab-set")
    assert sets.count() == 3  # fc128, tiny, convnet

    def visible_code(index):
        return sets.nth(index).locator("div.sd-tab-content:visible").inner_text()

    assert "def backward(self, dlogits)" in visible_code(0)  # NumPy first
    assert "keras.layers" not in visible_code(0)
    sets.nth(0).locator("label", has_text="Keras").click()
    for index in range(3):  # synchronised: one click switches them all
        code = visible_code(index)
        assert "keras.layers.Conv2D" in code or "keras.layers.Dense" in code
        assert "def backward(self, dlogits)" not in code
    assert "class ConvNet(keras.Model)" in visible_code(2)

    twin, twin_errors = open_page(browser, site_url + "twins/conv2d.html")
    assert "def conv2d_forward" in twin.locator("div.sd-tab-content:visible").inner_text()
    twin.locator("label", has_text="Keras").first.click()
    shown = twin.locator("div.sd-tab-content:visible").inner_text()
    assert "keras.layers.Conv2D(" in shown and "def conv2d_forward" not in shown
    screenshot(twin, "site-twins-conv2d.png")
    assert errors == [] and twin_errors == []
