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

from app import build_demo  # noqa: E402
from tests.tiny import make_tiny_checkpoint, synthetic_radiograph  # noqa: E402
from xray_xai import DISCLAIMER  # noqa: E402
from xray_xai.classifier import Classifier  # noqa: E402
from xray_xai.pipeline import Pipeline  # noqa: E402
from xray_xai.space import Handlers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    """The real Blocks app on a small random-weight resnet18 at 64 px (fast, offline)."""
    folder = tmp_path_factory.mktemp("app")
    card_path = make_tiny_checkpoint(folder, temperature=1.0, arch="resnet18", size=64)
    pytest.MonkeyPatch().setenv("GRADIO_EXAMPLES_CACHE", str(folder / "examples_cache"))
    return Pipeline(Classifier.load(card_path))


@pytest.fixture(scope="module")
def app_url(pipeline):
    demo = build_demo(Handlers(pipeline))
    demo.queue(max_size=16, default_concurrency_limit=1)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, run_history=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(1), 300, 260, 1)).save(path)
    return path


def test_predict_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    label, probability, band = client.predict(gradio_client.handle_file(str(radiograph)), "balanced", api_name="/predict")
    assert label in {"NORMAL", "PNEUMONIA"}
    assert 0.0 <= probability <= 1.0
    assert band in {"High", "Moderate", "Low"}
    assert (label == "PNEUMONIA") == (probability >= 0.5)


def test_explain_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    label, probability, band, gradcam, occlusion, agreement, report, analysis = client.predict(
        gradio_client.handle_file(str(radiograph)), "screening", "gradcam", "fast", api_name="/explain"
    )
    for overlay in (gradcam, occlusion):
        with Image.open(overlay) as image:
            assert image.format == "PNG"
            assert image.size == (260, 300)  # the upload's own size and aspect ratio
    assert agreement["verdict"] in {"agree", "partly agree", "disagree"}
    assert DISCLAIMER in report
    assert analysis["prediction"]["probability"] == pytest.approx(probability)
    assert analysis["prediction"]["operating_point"]["name"] == "screening"
    assert analysis["disclaimer"] == DISCLAIMER


def test_invalid_upload_gives_readable_error(app_url, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    client = gradio_client.Client(app_url, verbose=False)
    with pytest.raises(Exception) as info:
        client.predict(gradio_client.handle_file(str(bad)), "balanced", api_name="/predict")
    message = str(info.value)
    assert "image" in message.lower() and "Traceback" not in message
    assert "error" not in message.lower().split() or len(message) > 30  # not a bare generic "Error"


def test_only_documented_endpoints_are_public(app_url):
    info = gradio_client.Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == {"/predict", "/explain"}


def test_mcp_server_offers_both_endpoints(pipeline):
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


def test_readme_client_snippet_runs(app_url, radiograph):
    """The README's gradio_client snippet works as written (URL and file swapped for the local ones)."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- client-snippet -->\s*```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("http://127.0.0.1:7860/", app_url).replace("examples/PNEUMONIA/person1946_bacteria_4874.jpeg", str(radiograph))
    exec(compile(snippet, "README.md", "exec"), {})


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (CI installs the Debian package)")
def test_browser_click_example(app_url, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url, wait_until="networkidle")
        page.get_by_text("PNEUMONIA (ground truth)").first.click()
        page.locator("#disclaimer").wait_for(state="visible")
        report = page.locator("#report textarea")
        page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('DISCLAIMER'))", timeout=60_000)
        page.wait_for_function("() => document.querySelectorAll('img[src*=\".png\"]').length >= 3", timeout=60_000)
        assert "IMPRESSION" in report.input_value()
        assert page.locator("#disclaimer").is_visible()
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        # The Model tab is wired in; its committed report was built for other weights than this tiny model's.
        page.get_by_role("tab", name="Model").click()
        page.locator("#model-report-problem").wait_for(state="visible", timeout=30_000)
        assert "stale" in page.locator("#model-report-problem").inner_text()
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_app_py_starts_and_answers_on_the_committed_checkpoint(tmp_path):
    """``python app.py`` as the README runs it: serves, answers, and its background warm-up does not fail."""
    import os
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_EXAMPLES_CACHE": str(tmp_path / "cache")}
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
        label, probability, band = client.predict(gradio_client.handle_file(str(example)), "balanced", api_name="/predict")
        assert label in ("NORMAL", "PNEUMONIA") and 0.0 <= probability <= 1.0 and band in ("High", "Moderate", "Low")
        explained = client.predict(gradio_client.handle_file(str(example)), "balanced", "gradcam", "fast", api_name="/explain")
        assert DISCLAIMER in explained[6]
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    output = (tmp_path / "app.log").read_text()
    assert "Traceback" not in output and "Exception in thread" not in output, output
