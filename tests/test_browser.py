"""The Space in headless Chromium, as a person uses it, at desktop (1366 x 900) and phone (390 x 844)
size: outputs always belong to the film on screen, the page is built around the films, and
display settings redraw without the model. The real Blocks app on a small random-weight model."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_server import served
from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai import DISCLAIMER
from xray_xai.imaging import InputError, load_image
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import DISPLAY_MAX_SIDE, Pipeline

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*/*.jpeg"))
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT = 60_000


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CountingPipeline(Pipeline):
    """The pipeline, counting the model's runs (``first_pass`` and ``complete``); ``delay``
    seconds of sleep before a first pass make "while it runs" observable."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__(classifier)
        self.calls = 0
        self.delay = 0.0
        self.lock = threading.Lock()

    def first_pass(self, source, options=None):
        with self.lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return super().first_pass(source, options) if options is not None else super().first_pass(source)

    def complete(self, result, options=None, progress=None):
        with self.lock:
            self.calls += 1
        return super().complete(result, options, progress) if options is not None else super().complete(result)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> CountingPipeline:
    card_path = make_tiny_checkpoint(tmp_path_factory.mktemp("browser"), temperature=1.0, arch="resnet18", size=64)
    return CountingPipeline(Classifier.load(card_path))


@pytest.fixture(scope="module")
def app_url(pipeline):
    with served(pipeline) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if _chromium() is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic radiographs of different shapes and random bytes named like a PNG."""
    folder = tmp_path_factory.mktemp("films")
    first, second = folder / "first_film.png", folder / "second_film.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(1), 300, 260, 1)).save(first)
    Image.fromarray(synthetic_radiograph(np.random.default_rng(2), 240, 320, 0)).save(second)
    noise = folder / "x.png"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"first": first, "second": second, "noise": noise}


def _open(browser, url: str, viewport: dict):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT)
    page.goto(url, wait_until="load")
    page.locator("#examples img").first.wait_for()
    return page


def _upload(page, path: Path) -> None:
    """Put ``path`` in the app's single input, replacing whatever is there."""
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _display_size(path: Path) -> list[int]:
    """The size the app shows a film at (its own aspect ratio, longest side at most DISPLAY_MAX_SIDE)."""
    with Image.open(path) as image:
        image.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
        return list(image.size)


def _wait_for_image_size(page, selector: str, size: list[int]) -> None:
    page.wait_for_function(
        "([selector, w, h]) => { const img = document.querySelector(selector); return img && img.complete && img.naturalWidth === w && img.naturalHeight === h; }",
        arg=[selector, *size],
        timeout=TIMEOUT,
    )


def _wait_for_analysis(page, stem: str) -> None:
    """Until the whole analysis of the upload named ``stem`` is shown (its JSON download is named after it)."""
    page.locator(f"#download a[download='{stem}_analysis.json']").wait_for(timeout=TIMEOUT)
    page.wait_for_function(
        "() => document.querySelector('#report textarea').value.includes('DISCLAIMER')", timeout=TIMEOUT
    )


def _results_shown(page) -> dict:
    """What each result panel shows, leaving out Gradio's progress indicator (a timer such as "0.1s")."""
    return page.evaluate(
        """() => {
          const text = (selector) => { const copy = document.querySelector(selector).cloneNode(true);
            copy.querySelectorAll('[data-testid=status-tracker]').forEach((tracker) => tracker.remove());
            return copy.textContent.trim(); };
          return {
            badge: text('#badge'),
            probability: text('#probability'),
            gradcam: document.querySelectorAll('#gradcam img').length,
            occlusion: document.querySelectorAll('#occlusion img').length,
            report: document.querySelector('#report textarea').value,
            similar: document.querySelectorAll('#similar img').length,
            download: document.querySelectorAll('#download a[download]').length,
          };
        }"""
    )


EMPTY = {"badge": "", "probability": "", "gradcam": 0, "occlusion": 0, "report": "", "similar": 0, "download": 0}


def _toast_after(page, action) -> str:
    """The text of the one toast that ``action`` raises; every toast is closed and gone afterwards,
    so a toast still fading out can never be read as the next action's. A second toast may come
    from the same action run twice (a removal's event reading the next file, as it once did on a
    busy page), so the page is given a few seconds to show one before the toasts are counted."""
    from playwright.sync_api import expect

    toasts = page.locator("[data-testid='toast-text']")
    expect(toasts).to_have_count(0, timeout=30_000)
    action()
    expect(toasts.first).to_be_visible(timeout=TIMEOUT)
    page.wait_for_timeout(3_000)
    texts = toasts.all_inner_texts()
    page.evaluate("() => document.querySelectorAll(\"[data-testid='toast-close']\").forEach((b) => b.click())")
    expect(toasts).to_have_count(0, timeout=30_000)
    assert len(texts) == 1, texts
    return texts[0]


def _loader_message(path: Path) -> str:
    with pytest.raises(InputError) as error:
        load_image(path)
    return str(error.value)


def _assert_disclaimer_always_in_view(page) -> None:
    """At the top, after 600 px and at the very bottom, the banner lies inside the viewport; at
    the top it sits above the page's title instead of covering it."""
    viewport = page.viewport_size
    page.evaluate("window.scrollTo(0, 0)")
    banner = page.locator("#disclaimer").bounding_box()
    assert banner["y"] + banner["height"] <= page.locator("h1").bounding_box()["y"]
    for position in ("600", "document.documentElement.scrollHeight"):
        page.evaluate(f"window.scrollTo(0, {position})")
        assert page.evaluate("window.scrollY") > 0
        box = page.locator("#disclaimer").bounding_box()
        assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], (viewport, position, box)
        assert 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"], (viewport, position, box)
        assert DISCLAIMER in page.locator("#disclaimer").inner_text()
    page.evaluate("window.scrollTo(0, 0)")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_first_screen_holds_the_upload_the_examples_and_analyse(app_url, browser, viewport, tmp_path):
    page = _open(browser, app_url, viewport)
    for selector in ("#upload", "#analyse", "#examples"):
        box = page.locator(selector).bounding_box()
        assert 0 <= box["y"] < viewport["height"], (selector, box)
    # Every example is laid out in a grid that wraps inside the page (no hidden side-scroller),
    # and every caption is shown whole.
    thumbnails = page.locator("#examples img")
    assert thumbnails.count() == len(EXAMPLES)
    for i in range(thumbnails.count()):
        box = thumbnails.nth(i).bounding_box()
        assert box["width"] >= 60 and 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"], (i, box)
    cut = page.evaluate(
        "() => [...document.querySelectorAll('#examples .caption-label')].filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText)"
    )
    assert cut == []
    # The heatmaps are large: >= 420 px on the desktop, the whole column on the phone.
    gradcam = page.locator("#gradcam").bounding_box()
    assert gradcam["width"] >= (420 if viewport is DESKTOP else viewport["width"] - 80), gradcam
    page.screenshot(path=str(tmp_path / f"first_screen_{viewport['width']}.png"))
    _assert_disclaimer_always_in_view(page)
    page.close()


def test_outputs_always_belong_to_the_film_on_screen(app_url, browser, films, pipeline):
    page = _open(browser, app_url, DESKTOP)
    # A new upload is analysed by itself, and shows the film as the app reads it.
    _upload(page, films["first"])
    _wait_for_image_size(page, "#preview img", _display_size(films["first"]))
    _wait_for_analysis(page, "first_film")
    _wait_for_image_size(page, "#occlusion img", _display_size(films["first"]))
    shown = _results_shown(page)
    assert shown["badge"] and shown["gradcam"] and shown["occlusion"] and DISCLAIMER in shown["report"]
    assert "Grad-CAM and occlusion" in page.locator("#agreement").inner_text()

    # An unreadable file: the loader's message, and nothing of the earlier film stays on the page.
    assert _toast_after(page, lambda: _upload(page, films["noise"])) == _loader_message(films["noise"])
    page.wait_for_function("() => !document.querySelector('#report textarea').value", timeout=TIMEOUT)
    assert _results_shown(page) == EMPTY
    assert _toast_after(page, page.locator("#analyse").click) == _loader_message(films["noise"])
    assert _results_shown(page) == EMPTY

    # Another film while the model is still busy: every result is cleared at once, before the new ones arrive.
    _upload(page, films["first"])
    _wait_for_analysis(page, "first_film")
    pipeline.delay = 2.0
    try:
        _upload(page, films["second"])
        page.wait_for_function("() => !document.querySelector('#report textarea').value", timeout=TIMEOUT)
        assert _results_shown(page) == EMPTY
        _wait_for_analysis(page, "second_film")
    finally:
        pipeline.delay = 0.0
    _wait_for_image_size(page, "#gradcam img", _display_size(films["second"]))
    _wait_for_image_size(page, "#occlusion img", _display_size(films["second"]))

    # An example only sets the upload, which runs the analysis once, with the settings on screen.
    page.get_by_text("Settings: operating point").click()
    page.get_by_role("radio", name=re.compile("^Screening")).check()
    before = pipeline.calls
    film = EXAMPLES[-1]
    page.locator("#examples img").nth(len(EXAMPLES) - 1).click()
    _wait_for_analysis(page, film.stem)
    assert "Operating point: screening" in page.locator("#report textarea").input_value()
    _wait_for_image_size(page, "#occlusion img", _display_size(film))
    assert pipeline.calls - before == 2  # one first pass, one completion: not run twice

    # Removing the film clears every result and the preview, and runs nothing.
    before = pipeline.calls
    page.locator("#upload button[aria-label='Clear']").click()
    page.wait_for_function("() => !document.querySelector('#preview img')", timeout=TIMEOUT)
    assert _results_shown(page) == EMPTY
    assert pipeline.calls == before
    page.close()


def test_display_settings_redraw_without_the_model(app_url, browser, films, pipeline):
    page = _open(browser, app_url, DESKTOP)
    _upload(page, films["first"])
    _wait_for_analysis(page, "first_film")
    _wait_for_image_size(page, "#occlusion img", _display_size(films["first"]))
    calls = pipeline.calls
    for control in (
        lambda: page.locator("#opacity input[type=range]").fill("0.9"),
        lambda: page.locator("#outline input[type=checkbox]").uncheck(),
        lambda: page.locator("#boxes input[type=checkbox]").uncheck(),
    ):
        before = page.evaluate(
            "() => [document.querySelector('#gradcam img').src, document.querySelector('#occlusion img').src]"
        )
        control()
        page.wait_for_function(
            "([cam, occ]) => { const a = document.querySelector('#gradcam img'), b = document.querySelector('#occlusion img');"
            " return a && b && a.src !== cam && b.src !== occ && a.complete && b.complete; }",
            arg=before,
            timeout=TIMEOUT,
        )
    assert pipeline.calls == calls  # drawn again from the maps already computed
    page.close()


def test_model_tab_refuses_a_report_built_for_other_weights(app_url, browser):
    page = _open(browser, app_url, PHONE)
    # The committed report was built for the shipped weights, not for this tiny test model.
    page.get_by_role("tab", name="Model").click()
    page.locator("#model-report-problem").wait_for(state="visible", timeout=30_000)
    assert "stale" in page.locator("#model-report-problem").inner_text()
    page.close()
