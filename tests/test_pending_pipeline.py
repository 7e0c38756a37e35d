"""The app serves its page while the models load: requests wait for them and get the right answers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai.checkpoint import CheckpointError, read_card
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import PendingPipeline, Pipeline
from xray_xai.ui.handlers import Handlers


@pytest.fixture(scope="module")
def card_path(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("pending"), temperature=1.0)


@pytest.fixture(scope="module")
def loaded(card_path) -> Pipeline:
    return Pipeline(Classifier.load(card_path))


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory):
    path = tmp_path_factory.mktemp("films") / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(2), 120, 100, 1)).save(path)
    return str(path)


class GatedLoad:
    """A loader that waits for :meth:`release` (models still loading) and counts its calls."""

    def __init__(self, card_path) -> None:
        self.card_path, self.calls, self.gate = card_path, 0, threading.Event()

    def __call__(self) -> Pipeline:
        self.calls += 1
        assert self.gate.wait(30), "the test never released the load"
        return Pipeline(Classifier.load(self.card_path))

    def release(self) -> None:
        self.gate.set()


def test_requests_wait_for_the_models_and_all_get_the_loaded_pipelines_answers(card_path, loaded, radiograph):
    load = GatedLoad(card_path)
    handlers = Handlers(PendingPipeline(load, read_card(card_path)))
    # The page needs only the card: nothing waits, nothing loads.
    assert handlers.card.sha256 == loaded.classifier.card.sha256
    assert handlers.operating_point_choices() == Handlers(loaded).operating_point_choices()
    assert load.calls == 0
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(handlers.predict, radiograph, "balanced") for _ in range(3)]
        time.sleep(0.3)
        assert not any(answer.done() for answer in answers)  # waiting, not failing or answering early
        load.release()
        results = [answer.result(timeout=30) for answer in answers]
    expected = Handlers(loaded).predict(radiograph, "balanced")
    assert all(result == expected for result in results)
    assert load.calls == 1  # one load, shared by every request
    assert handlers.pipeline is handlers.pipeline


def test_a_loading_error_is_raised_to_every_request(card_path, radiograph):
    calls = []

    def broken() -> Pipeline:
        calls.append(1)
        raise CheckpointError("weights fail their integrity check")

    handlers = Handlers(PendingPipeline(broken, read_card(card_path)))
    for _ in range(2):
        with pytest.raises(CheckpointError, match="integrity"):
            handlers.predict(radiograph)
    assert len(calls) == 1


@pytest.mark.slow
def test_the_page_is_served_before_the_models_load_and_the_first_request_gets_its_answer(card_path, loaded, radiograph):
    import urllib.request

    gradio_client = pytest.importorskip("gradio_client")
    from tests.app_server import served

    load = GatedLoad(card_path)
    pending = PendingPipeline(load, read_card(card_path))
    with served(pending) as url:
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and load.calls == 0
        client = gradio_client.Client(url, verbose=False)
        job = client.submit(gradio_client.handle_file(radiograph), "balanced", api_name="/predict")
        time.sleep(0.5)
        assert not job.done()
        load.release()
        assert tuple(job.result(timeout=60)) == Handlers(loaded).predict(radiograph, "balanced")


@pytest.mark.slow
def test_the_apps_page_is_built_without_loading_a_network():
    """``import app`` builds the page from the card alone: no torch, no timm, no OpenVINO, no network
    loaded; and nothing that only the analyses or the Model tab's figures need (matplotlib, scipy,
    scikit-learn), which the page would wait for. Checking a request's options (done before the
    models are loaded) loads none of them either."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ("torch", "timm", "openvino", "segmentation_models_pytorch", "matplotlib", "scipy", "sklearn")
    script = (
        "import sys, app\nfrom xray_xai.pipeline import Options\nOptions(cam_method='layercam').validate()\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "[]"
