"""The Space end to end: gradio_client against the app launched on localhost, and a browser."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from xray_xai.ui.layout import LAUNCH_OPTIONS, build_demo  # noqa: E402
from tests.tiny import make_tiny_checkpoint, synthetic_radiograph  # noqa: E402
from xray_xai import DISCLAIMER  # noqa: E402
from xray_xai.calibration import OPERATING_POINTS  # noqa: E402
from xray_xai.models.classifier import Classifier  # noqa: E402
from xray_xai.imaging import InputError, load_image  # noqa: E402
from xray_xai.pipeline import DISPLAY_MAX_SIDE, Pipeline  # noqa: E402
from xray_xai.ui.handlers import CAM_CHOICES, OCCLUSION_CHOICES, Handlers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*/*.jpeg"))
ALLOWED_VALUES = {"operating_point": list(OPERATING_POINTS), "cam_method": CAM_CHOICES, "occlusion": OCCLUSION_CHOICES}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    """The real Blocks app on a small random-weight resnet18 at 64 px (fast, offline)."""
    folder = tmp_path_factory.mktemp("app")
    card_path = make_tiny_checkpoint(folder, temperature=1.0, arch="resnet18", size=64)
    return Pipeline(Classifier.load(card_path))


@pytest.fixture(scope="module")
def app_url(pipeline):
    demo = build_demo(Handlers(pipeline))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(1), 300, 260, 1)).save(path)
    return path


def test_predict_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    label, probability, band, uncertainty = client.predict(gradio_client.handle_file(str(radiograph)), "balanced", api_name="/predict")
    assert uncertainty is None  # the tiny test model is a single network
    assert label in {"NORMAL", "PNEUMONIA"}
    assert 0.0 <= probability <= 1.0
    assert band in {"High", "Moderate", "Low"}
    assert (label == "PNEUMONIA") == (probability >= 0.5)


def test_explain_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    label, probability, band, gradcam, occlusion, agreement, report, analysis, uncertainty = client.predict(
        gradio_client.handle_file(str(radiograph)), "screening", "gradcam", "fast", api_name="/explain"
    )
    assert uncertainty is None and analysis["prediction"]["uncertainty"] is None and analysis["prediction"]["band"] == band
    for overlay in (gradcam, occlusion):
        with Image.open(overlay) as image:
            assert image.format == "PNG"
            assert image.size == (260, 300)  # the upload's own size and aspect ratio
    assert agreement["verdict"] in {"agree", "partly agree", "disagree"}
    assert DISCLAIMER in report
    assert analysis["prediction"]["probability"] == pytest.approx(probability)
    assert analysis["prediction"]["operating_point"]["name"] == "screening"
    assert analysis["disclaimer"] == DISCLAIMER


def _unreadable_files(folder: Path) -> list[Path]:
    """Random bytes named like a PNG, and an HEIC photo (which browsers cannot show either)."""
    noise = folder / "x.png"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    heic = folder / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(4096))
    return [noise, heic]


def _loader_message(path: Path) -> str:
    with pytest.raises(InputError) as error:
        load_image(path)
    return str(error.value)


def test_unreadable_upload_gets_the_loaders_own_message(app_url, tmp_path):
    client = gradio_client.Client(app_url, verbose=False)
    for path in _unreadable_files(tmp_path):
        with pytest.raises(gradio_client.exceptions.AppError) as info:
            client.predict(gradio_client.handle_file(str(path)), "balanced", api_name="/predict")
        assert info.value.message == _loader_message(path)
    assert "HEIC" in _loader_message(path)


def test_only_predict_and_explain_are_public_and_settings_are_enums(app_url):
    info = gradio_client.Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == {"/predict", "/explain"}
    parameters = {p["parameter_name"]: p["type"] for p in info["named_endpoints"]["/explain"]["parameters"]}
    assert {name: parameters[name].get("enum") for name in ALLOWED_VALUES} == ALLOWED_VALUES
    predict = {p["parameter_name"]: p["type"] for p in info["named_endpoints"]["/predict"]["parameters"]}
    assert predict["operating_point"]["enum"] == ALLOWED_VALUES["operating_point"]


def test_mcp_server_offers_both_endpoints_with_allowed_values(pipeline):
    import httpx

    demo = build_demo(Handlers(pipeline))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=True)
    try:
        tools = httpx.get(f"http://127.0.0.1:{port}/gradio_api/mcp/schema", timeout=30).json()
    finally:
        demo.close()
    assert {tool["name"] for tool in tools} == {"predict", "explain"}
    assert "not a diagnosis" in next(t for t in tools if t["name"] == "predict")["description"]
    explain = next(t for t in tools if t["name"] == "explain")["inputSchema"]["properties"]
    assert {name: explain[name].get("enum") for name in ALLOWED_VALUES} == ALLOWED_VALUES


def test_readme_client_snippet_runs(app_url, radiograph):
    """The README's gradio_client snippet works as written (URL and file swapped for the local ones)."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- client-snippet -->\s*```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("http://127.0.0.1:7860/", app_url).replace("examples/PNEUMONIA/person1946_bacteria_4874.jpeg", str(radiograph))
    exec(compile(snippet, "README.md", "exec"), {})


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if _chromium() is None:
        pytest.skip("no Chromium on this machine (.ci/run installs the Debian package)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


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


def _natural_size(page, selector: str) -> list[int]:
    return page.locator(selector).evaluate("img => [img.naturalWidth, img.naturalHeight]")


def _wait_for_image_size(page, selector: str, size: list[int]) -> None:
    page.wait_for_function(
        "([selector, w, h]) => { const img = document.querySelector(selector); return img && img.complete && img.naturalWidth === w && img.naturalHeight === h; }",
        arg=[selector, *size],
        timeout=60_000,
    )


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


def _toast_after(page, action) -> str:
    """The text of the one toast that ``action`` raises; the toast is closed and gone afterwards,
    so a toast still fading out can never be read as the next action's."""
    from playwright.sync_api import expect

    toasts = page.locator("[data-testid='toast-text']")
    expect(toasts).to_have_count(0, timeout=30_000)
    action()
    expect(toasts).to_have_count(1, timeout=60_000)
    text = toasts.inner_text()
    page.locator("[data-testid='toast-close']").click()
    expect(toasts).to_have_count(0, timeout=30_000)
    return text


def test_browser_analyses_uploads_and_examples(app_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(app_url, wait_until="networkidle")
    film, other = EXAMPLES[-1], EXAMPLES[0]  # full-resolution films of different shapes
    assert _display_size(film) != _display_size(other)

    # A full-resolution film: the app's own preview, then the first answer, then occlusion and agreement.
    _upload(page, film)
    _wait_for_image_size(page, "#preview img", _display_size(film))
    page.locator("#analyse").click()
    _wait_for_image_size(page, "#gradcam img", _display_size(film))
    _wait_for_image_size(page, "#occlusion img", _display_size(film))
    page.locator("#agreement").get_by_text(re.compile(r"Grad-CAM and occlusion (agree|partly agree|disagree) \(Spearman")).wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelector('#report textarea').value.includes('DISCLAIMER')", timeout=60_000)
    report = page.locator("#report textarea").input_value()
    shown = page.locator("#probability .prob-value").first.inner_text()
    assert f"Calibrated probability of pneumonia: {shown}." in report  # one rounding rule
    assert "Operating point: balanced" in report

    # The newest upload wins.
    _upload(page, other)
    _wait_for_image_size(page, "#preview img", _display_size(other))
    page.locator("#analyse").click()
    _wait_for_image_size(page, "#occlusion img", _display_size(other))

    # An example thumbnail runs with the settings on screen.
    page.get_by_label("Screening (sensitivity >= 95%)").check()
    page.locator("#examples img").nth(EXAMPLES.index(film)).click()
    page.wait_for_function("() => document.querySelector('#report textarea').value.includes('Operating point: screening')", timeout=60_000)
    _wait_for_image_size(page, "#occlusion img", _display_size(film))
    assert film.stem in page.locator("#upload").inner_text()
    _assert_disclaimer_always_in_view(page)
    page.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(app_url, wait_until="networkidle")
    _assert_disclaimer_always_in_view(phone)
    phone.close()


def test_browser_unreadable_upload_shows_the_loaders_message(app_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(app_url, wait_until="networkidle")
    for path in _unreadable_files(tmp_path):
        assert _toast_after(page, lambda: _upload(page, path)) == _loader_message(path)  # from the preview
        assert _toast_after(page, page.locator("#analyse").click) == _loader_message(path)  # from the analysis
    page.close()


def test_app_py_starts_and_answers_on_the_committed_checkpoint(tmp_path):
    """``python app.py`` as the README runs it: serves, answers, keeps one copy of each output,
    and its background warm-up does not fail."""
    import os
    import subprocess
    import sys
    import time

    port = _free_port()
    cache = tmp_path / "gradio"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(cache)}
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                assert process.poll() is None and time.time() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.5)
        example = sorted((ROOT / "examples" / "PNEUMONIA").glob("*.jpeg"))[0]
        label, probability, band, uncertainty = client.predict(gradio_client.handle_file(str(example)), "balanced", api_name="/predict")
        assert label in ("NORMAL", "PNEUMONIA") and 0.0 <= probability <= 1.0 and band in ("High", "Moderate", "Low")
        explained = client.predict(gradio_client.handle_file(str(example)), "balanced", "gradcam", "fast", api_name="/explain")
        assert DISCLAIMER in explained[6]
        # Each output is written once, into Gradio's cache, and served from there (no copy).
        outputs = [path.relative_to(cache).parts[0] for path in cache.rglob("analysis_*")]
        assert outputs and set(outputs) == {"xray_xai"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    output = (tmp_path / "app.log").read_text()
    assert "Traceback" not in output and "Exception in thread" not in output, output


def test_browser_model_tab_refuses_a_report_built_for_other_weights(app_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(app_url, wait_until="networkidle")
    # The committed report was built for the shipped weights, not for this tiny test model.
    page.get_by_role("tab", name="Model").click()
    page.locator("#model-report-problem").wait_for(state="visible", timeout=30_000)
    assert "stale" in page.locator("#model-report-problem").inner_text()
    page.close()
