"""Shortcut thresholds: fitted on the app's own maps, stored in the classifier card, used by the pipeline."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from tiny import lung_mask, make_tiny_checkpoint, make_tiny_dataset, synthetic_radiograph

from xray_xai.checkpoint import ModelCard
from xray_xai.data import list_samples
from xray_xai.models.classifier import Classifier
from xray_xai.models.lungs import LungMask
from xray_xai.pipeline import Options, Pipeline
from xray_xai.training.shortcuts import fit_thresholds, outside_lung_shares, write_thresholds

SIZE = 64  # the app's fast occlusion window (48 px) must fit


class FixedSegmenter:
    """Stands in for the U-Net: the synthetic images' true lung fields at the classifier's input size."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok

    def segment(self, pixels: np.ndarray) -> LungMask:
        mask = lung_mask(SIZE, SIZE) > 0
        return LungMask(
            mask=mask, probability=mask.astype(np.float32), ok=self.ok, note=None if self.ok else "implausible"
        )


def png(label: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_radiograph(np.random.default_rng(label), 48, 40, label)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_fit_is_the_95th_percentile_per_method():
    # By hand: sorted 0.1 0.2 0.3 0.5 0.9, the 95th percentile sits at rank 0.95 * 4 = 3.8,
    # i.e. 0.5 + 0.8 * (0.9 - 0.5) = 0.82 (linear interpolation between order statistics).
    shares = {
        "gradcam": list(np.linspace(0, 1, 101)),
        "occlusion": [0.3, 0.9, 0.1, 0.5, 0.2],
        "flat": [0.2] * 10,
        "empty": [],
    }
    assert fit_thresholds(shares) == {"gradcam": 0.95, "occlusion": 0.82, "flat": 0.2}


def test_shares_come_from_the_apps_analysis_and_skip_failed_segmentations(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path, size=SIZE)
    samples = list_samples(make_tiny_dataset(tmp_path / "data", per_class=2))
    options = Options(occlusion="fast")
    pipeline = Pipeline(Classifier.load(checkpoint), FixedSegmenter())
    shares = outside_lung_shares(pipeline, samples, options)
    assert sorted(shares) == ["gradcam", "occlusion"]
    # Independently: the share of each map's positive mass that falls outside the true lung fields.
    outside = lung_mask(SIZE, SIZE) == 0
    for method, values in shares.items():
        maps = [np.clip(pipeline.analyze(s.path, options).maps[method].astype(np.float64), 0, None) for s in samples]
        expected = [m[outside].sum() / m.sum() for m in maps]
        assert 0.0 < min(expected) and max(expected) < 1.0  # neither all inside nor all outside
        assert values == pytest.approx(expected, abs=1e-6)
    assert outside_lung_shares(Pipeline(Classifier.load(checkpoint), FixedSegmenter(ok=False)), samples, options) == {}


@pytest.mark.parametrize(("threshold", "flagged"), [(0.0, True), (1.0, False)])
def test_written_thresholds_drive_the_pipelines_warning(tmp_path, threshold, flagged):
    checkpoint = make_tiny_checkpoint(tmp_path, size=SIZE)
    card = write_thresholds(checkpoint, {"gradcam": threshold, "occlusion": threshold}, n=7, n_images=9)
    assert ModelCard.from_json(checkpoint).explanations["shortcut_threshold"] == {
        "gradcam": threshold,
        "occlusion": threshold,
    }
    assert "7 validation images" in card.explanations["shortcut_threshold_rule"]
    Classifier.load(checkpoint)  # the card still matches its weights
    anatomy = Pipeline(Classifier.load(checkpoint), FixedSegmenter()).analyze(png(1)).analysis.anatomy
    assert anatomy.shortcut_warning is flagged
    assert set(anatomy.shortcut_methods) == ({"gradcam", "occlusion"} if flagged else set())
