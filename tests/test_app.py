"""The Space end to end: gradio_client against the app on localhost (browser tests: test_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from tests.app_server import free_port, served  # noqa: E402
from tests.tiny import make_tiny_checkpoint, synthetic_radiograph  # noqa: E402
from xray_xai import DISCLAIMER  # noqa: E402
from xray_xai.calibration import OPERATING_POINTS  # noqa: E402
from xray_xai.imaging import InputError, load_image  # noqa: E402
from xray_xai.models.classifier import Classifier  # noqa: E402
from xray_xai.pipeline import Pipeline  # noqa: E402
from xray_xai.ui.handlers import CAM_CHOICES, OCCLUSION_CHOICES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_VALUES = {"operating_point": list(OPERATING_POINTS), "cam_method": CAM_CHOICES, "occlusion": OCCLUSION_CHOICES}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    """The real Blocks app on a small random-weight resnet18 at 64 px (fast, offline)."""
    folder = tmp_path_factory.mktemp("app")
    card_path = make_tiny_checkpoint(folder, temperature=1.0, arch="resnet18", size=64)
    return Pipeline(Classifier.load(card_path))


@pytest.fixture(scope="module")
def app_url(pipeline):
    with served(pipeline) as url:
        yield url


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(1), 300, 260, 1)).save(path)
    return path


def test_predict_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    answer, label, probability, band, uncertainty, flagged, band_reasons, ood_reasons = client.predict(
        gradio_client.handle_file(str(radiograph)), "balanced", api_name="/predict"
    )
    assert uncertainty is None  # the tiny test model is a single network
    assert label in {"NORMAL", "PNEUMONIA"} and answer in {label, "INCONCLUSIVE"}
    assert 0.0 <= probability <= 1.0
    assert band in {"High", "Moderate", "Low"}
    assert (label == "PNEUMONIA") == (probability >= 0.5)
    assert isinstance(flagged, bool) and bool(ood_reasons) == flagged
    assert isinstance(band_reasons, list) and all(reason.endswith(".") for reason in band_reasons)
    if flagged:  # a film unlike the training films never gets a decisive answer
        assert answer == "INCONCLUSIVE"


def test_a_colour_photo_gets_no_answer_only_the_reason(app_url, tmp_path):
    y, x = np.mgrid[0:200, 0:240]
    photo = tmp_path / "gradient.png"
    Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)).save(photo)
    client = gradio_client.Client(app_url, verbose=False)
    answer, label, probability, band, _, flagged, _, ood_reasons = client.predict(
        gradio_client.handle_file(str(photo)), "balanced", api_name="/predict"
    )
    assert (answer, label, probability, band, flagged) == ("INCONCLUSIVE", None, None, None, True) and ood_reasons
    explained = client.predict(
        gradio_client.handle_file(str(photo)), "balanced", "gradcam", "fast", api_name="/explain"
    )
    answer, label, _, _, _, gradcam, occlusion, _, report, analysis = explained
    assert answer == analysis["answer"] == "INCONCLUSIVE" and label is None and gradcam is None and occlusion is None
    assert "WHY THERE IS NO ANSWER" in report and not analysis["similar"] and not analysis["track_record"]


def test_explain_endpoint(app_url, radiograph):
    client = gradio_client.Client(app_url, verbose=False)
    answer, label, probability, band, uncertainty, gradcam, occlusion, agreement, report, analysis = client.predict(
        gradio_client.handle_file(str(radiograph)), "screening", "gradcam", "fast", api_name="/explain"
    )
    assert answer == analysis["answer"] == analysis["prediction"]["answer"] and label == analysis["prediction"]["label"]
    assert (
        uncertainty is None and analysis["prediction"]["uncertainty"] is None and analysis["prediction"]["band"] == band
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

    with served(pipeline, mcp_server=True) as url:
        tools = httpx.get(f"{url}gradio_api/mcp/schema", timeout=30).json()
    assert {tool["name"] for tool in tools} == {"predict", "explain"}
    assert "not a diagnosis" in next(t for t in tools if t["name"] == "predict")["description"]
    explain = next(t for t in tools if t["name"] == "explain")["inputSchema"]["properties"]
    assert {name: explain[name].get("enum") for name in ALLOWED_VALUES} == ALLOWED_VALUES


def test_readme_client_snippet_runs(app_url, radiograph):
    """The README's gradio_client snippet works as written (URL and file swapped for the local ones)."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- client-snippet -->\s*```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("http://127.0.0.1:7860/", app_url).replace(
        "examples/PNEUMONIA/person1946_bacteria_4874.jpeg", str(radiograph)
    )
    exec(compile(snippet, "README.md", "exec"), {})


@pytest.mark.slow
def test_app_py_starts_and_answers_on_the_committed_checkpoint(tmp_path):
    """``python app.py`` as the README runs it: serves, answers, keeps one copy of each output,
    and its background warm-up does not fail."""
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    cache = tmp_path / "gradio"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(cache)}
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
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
        answer, label, probability, band, *_ = client.predict(
            gradio_client.handle_file(str(example)), "balanced", api_name="/predict"
        )
        assert answer in ("NORMAL", "PNEUMONIA", "INCONCLUSIVE") and label in ("NORMAL", "PNEUMONIA")
        assert 0.0 <= probability <= 1.0 and band in ("High", "Moderate", "Low")
        explained = client.predict(
            gradio_client.handle_file(str(example)), "balanced", "gradcam", "fast", api_name="/explain"
        )
        assert DISCLAIMER in explained[8]
        # Each output is written once, into Gradio's cache, and served from there (no copy).
        outputs = [path.relative_to(cache).parts[0] for path in cache.rglob("analysis_*")]
        assert outputs and set(outputs) == {"xray_xai"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    output = (tmp_path / "app.log").read_text()
    assert "Traceback" not in output and "Exception in thread" not in output, output
