"""The lab in a real browser: headless Chromium (Debian's `chromium` package) driven by
Playwright, against the lab's server running in this process on a free port.

Nothing is downloaded: Playwright is pointed at /usr/bin/chromium (never `playwright
install`), and the page loads nothing but the lab's own files. The tests skip, saying
why, when Chromium or Playwright is missing; .ci/run installs both.

The screenshot in README and docs/lab.md is made here:

    TWINNET_LAB_SCREENSHOT=results/lab.png MNIST_DIR=../shared/mnist \
        python -m pytest tests/test_lab_browser.py
"""
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import needs_mnist
from lab_support import STROKES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
AGREE = 1e-5  # float32 twins: largest |NumPy - Keras| probability
WAIT_MS = 30_000

pytestmark = [
    needs_mnist,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian: "
                       "apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def lab_url(quick_lab_models):
    from werkzeug.serving import make_server

    from comparison.lab.server import QuietRequests, create_app

    server = make_server("127.0.0.1", 0, create_app(quick_lab_models), threaded=True,
                         request_handler=QuietRequests)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is "
                                   "not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tab:
    """One page of the lab, collecting console errors and uncaught exceptions."""

    def __init__(self, context, url):
        self.page = context.new_page()
        self.errors = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.goto(url)
        self.page.wait_for_function("window.lab.ready", timeout=WAIT_MS)

    def answers(self) -> int:
        return self.page.evaluate("window.lab.answers")

    def settled(self, after: int):
        """The answer to the page's latest state, once more than `after` answers came."""
        self.page.wait_for_function(
            f"window.lab.answers > {after} && !window.lab.inFlight && !window.lab.again",
            timeout=WAIT_MS)
        return self.page.evaluate("window.lab.last")

    def draw(self, digit: int):
        """Draw the digit's strokes with the mouse; returns the settled answer."""
        before = self.answers()
        pad = self.page.locator("#pad").bounding_box()
        for line in STROKES[digit]:
            x, y = line[0]
            self.page.mouse.move(pad["x"] + x, pad["y"] + y)
            self.page.mouse.down()
            for x, y in line[1:]:
                self.page.mouse.move(pad["x"] + x, pad["y"] + y, steps=12)
            self.page.mouse.up()
        return self.settled(before)


def probabilities(reply, side):
    return np.array(reply["twins"][side]["probabilities"])


def test_drawn_digits_sliders_and_maps(browser, lab_url, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 980}, accept_downloads=True)
    tab = Tab(context, lab_url)
    assert "quick convnet" in tab.page.inner_text("#model")  # says which model, and why
    for digit in (1, 7):
        tab.page.click("#clear")
        reply = tab.draw(digit)
        for side in ("numpy", "keras"):
            assert reply["twins"][side]["digit"] == digit
            assert tab.page.inner_text(f"#{side}-digit") == str(digit)
        assert np.abs(probabilities(reply, "numpy") - probabilities(reply, "keras")).max() <= AGREE

    before = tab.answers()
    tab.page.fill("#rotate", "60")  # a range input: sets it and fires "input"
    turned = tab.settled(before)
    assert turned["transform"]["rotate"] == 60
    assert np.abs(probabilities(turned, "numpy") - probabilities(reply, "numpy")).max() > 1e-3
    assert np.abs(probabilities(turned, "numpy") - probabilities(turned, "keras")).max() <= AGREE

    before = tab.answers()
    tab.page.click("#reset")
    tab.page.select_option("#method", "integrated_gradients")
    explained = tab.settled(before)
    assert explained["method"] == "integrated_gradients" and explained["map_difference"] < 1e-4

    with tab.page.expect_download() as download:
        tab.page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    from PIL import Image
    with Image.open(saved) as png:
        assert png.size == (28, 28)
        np.testing.assert_allclose(np.asarray(png.convert("L")) / 255.0,
                                   np.array(explained["steps"]["input"]), atol=0.5 / 255 + 1e-9)

    tab.page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
    if os.environ.get("TWINNET_LAB_SCREENSHOT"):
        tab.page.screenshot(path=os.environ["TWINNET_LAB_SCREENSHOT"], full_page=True)
    assert tab.errors == []
    context.close()


def test_random_test_digit_button(browser, lab_url):
    context = browser.new_context()
    tab = Tab(context, lab_url)
    before = tab.answers()
    tab.page.click("#random")
    reply = tab.settled(before)
    assert "MNIST test digit #" in tab.page.inner_text("#message")  # and its label
    assert np.abs(probabilities(reply, "numpy") - probabilities(reply, "keras")).max() <= AGREE
    assert tab.errors == []
    context.close()


def test_two_tabs_draw_at_once(browser, lab_url):
    """Two pages of one browser, strokes interleaved: each gets its own digit back."""
    context = browser.new_context()
    one, seven = Tab(context, lab_url), Tab(context, lab_url)
    before = {tab: tab.answers() for tab in (one, seven)}
    for tab, digit in ((one, 1), (seven, 7)):
        pad = tab.page.locator("#pad").bounding_box()
        tab.page.mouse.move(pad["x"] + STROKES[digit][0][0][0], pad["y"] + STROKES[digit][0][0][1])
        tab.page.mouse.down()
    for step in range(1, 3):  # alternate: a piece of the 1, a piece of the 7, ...
        for tab, digit in ((one, 1), (seven, 7)):
            line = STROKES[digit][0]
            if step < len(line):
                pad = tab.page.locator("#pad").bounding_box()
                tab.page.mouse.move(pad["x"] + line[step][0], pad["y"] + line[step][1], steps=12)
    for tab in (one, seven):
        tab.page.mouse.up()
    assert one.settled(before[one])["twins"]["numpy"]["digit"] == 1
    assert seven.settled(before[seven])["twins"]["keras"]["digit"] == 7
    assert one.errors == seven.errors == []
    context.close()
