"""The classifier scores through the runtime its card names and keeps the torch model for the maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from xray_xai.models import runtime
from xray_xai.models.classifier import Classifier

pytest.importorskip("openvino", reason="OpenVINO (the serving runtime in requirements.txt) is not installed")


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """(a card served by torch, the same card served by OpenVINO f32)."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "ov"))
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    plain = make_tiny_checkpoint(tmp_path)
    raw = json.loads(plain.read_text())
    raw["runtime"] = {"engine": "openvino", "precision": "f32", "passing": ["f32"]}
    served = plain.with_name("served.json")
    served.write_text(json.dumps(raw))
    return plain, served


@pytest.mark.slow
def test_scores_through_the_compiled_networks(cards):
    plain, served = Classifier.load(cards[0]), Classifier.load(cards[1])
    assert plain.serving is plain.model and plain.served_runtime.startswith("PyTorch")
    assert isinstance(served.serving, runtime.CompiledNet) and served.served_runtime.endswith("f32")
    assert not isinstance(served.model, runtime.CompiledNet) and served.explainer is served.model  # maps need torch
    x = torch.randn(3, 1, plain.input_size, plain.input_size, generator=torch.Generator().manual_seed(0))
    a, b = plain.score(x), served.score(x)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
    np.testing.assert_allclose(b.features, a.features, atol=1e-4)
    np.testing.assert_allclose(served.probabilities(x), plain.probabilities(x), atol=1e-5)


def test_the_environment_overrides_the_card(cards, monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    classifier = Classifier.load(cards[1])
    assert classifier.serving is classifier.model


@pytest.mark.slow
def test_lung_segmenter_is_unchanged_without_a_served_one(cards):
    classifier = Classifier.load(cards[1])
    assert classifier.lung_segmenter(None) is None
    marker = object()
    assert classifier.lung_segmenter(marker) is marker  # no lung-box member: nothing compiled to share
