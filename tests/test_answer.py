"""The answer a person sees: INCONCLUSIVE from the conformal set or an unusual film, no answer at all
for something that is not a radiograph, and a band lowered when the evidence lies outside the lungs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai.checkpoint import ModelCard
from xray_xai.conformal import ConformalThresholds
from xray_xai.imaging import load_image
from xray_xai.models.classifier import Classifier
from xray_xai.models.ood import assess_ood
from xray_xai.pipeline import Pipeline, evidence_checked
from xray_xai.report import build_report
from xray_xai.results import Analysis, Anatomy, BandReason, OperatingPoint, Prediction

POINTS = {"balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9}}
BALANCED = OperatingPoint("balanced", 0.5, 0.9, 0.9)


def card(conformal: dict | None = None) -> ModelCard:
    return ModelCard(
        arch="resnet10t", input_size=32, mean=0.5, std=0.25, operating_points=POINTS, conformal=conformal or {}
    )


def thresholds(q_normal: float, q_pneumonia: float) -> dict:
    return ConformalThresholds(
        alpha=0.05, q_normal=q_normal, q_pneumonia=q_pneumonia, n_normal=100, n_pneumonia=100
    ).to_json()


@pytest.mark.parametrize(
    ("probability", "expected_set", "answer"),
    [
        (0.95, ("PNEUMONIA",), "PNEUMONIA"),  # 1 - 0.95 <= 0.2 and 0.95 > 0.3
        (0.05, ("NORMAL",), "NORMAL"),
        (0.25, ("NORMAL", "PNEUMONIA"), "INCONCLUSIVE"),  # 0.25 <= 0.3 and 0.75 <= 0.8: both labels kept
    ],
)
def test_the_conformal_set_decides_between_a_label_and_inconclusive(probability, expected_set, answer):
    classifier = Classifier(None, card(thresholds(q_normal=0.3, q_pneumonia=0.8)))
    prediction = classifier.decide(probability)
    assert prediction.prediction_set == expected_set and prediction.answer == answer


def test_a_singleton_set_that_disagrees_with_the_operating_point_is_inconclusive():
    classifier = Classifier(None, card(thresholds(q_normal=0.7, q_pneumonia=0.2)))
    prediction = classifier.decide(0.45)  # label NORMAL (under 0.5); set {NORMAL}: 0.45 <= 0.7, 0.55 > 0.2
    assert prediction.label == "NORMAL" and prediction.answer == "NORMAL"
    conflicting = Classifier(None, card(thresholds(q_normal=0.1, q_pneumonia=0.6))).decide(
        0.45
    )  # set {PNEUMONIA}, label NORMAL
    assert (
        conflicting.prediction_set == ("PNEUMONIA",)
        and conflicting.label == "NORMAL"
        and conflicting.answer == "INCONCLUSIVE"
    )


def test_an_unusual_film_is_inconclusive_and_a_card_without_thresholds_keeps_its_label():
    assert Classifier(None, card()).decide(0.9).answer == "PNEUMONIA"
    assert Classifier(None, card()).decide(0.9, unusual=True).answer == "INCONCLUSIVE"
    assert Prediction("NORMAL", 0.1, 0.9, "High", BALANCED).answer == "NORMAL"  # defaults to the label


def anatomy(occlusion: float | None, gradcam: float = 0.2) -> Anatomy:
    shares = {"gradcam": gradcam} | ({} if occlusion is None else {"occlusion": occlusion})
    return Anatomy(segmentation_ok=True, outside_lung_share=shares)


def test_evidence_outside_the_lungs_lowers_the_band_once_and_follows_the_newest_map():
    limits = {"gradcam": 0.5, "occlusion": 0.4}
    high = Prediction("PNEUMONIA", 0.97, 0.97, "High", BALANCED)
    assert evidence_checked(high, anatomy(None, gradcam=0.3), limits) == high
    first = evidence_checked(high, anatomy(None, gradcam=0.8), limits)
    assert first.band == "Moderate" and first.band_reasons == (
        BandReason("evidence_outside_lungs", "High", "Moderate", method="gradcam", share=0.8, limit=0.5),
    )
    # Occlusion (the judge) arrives: inside the lungs, so the step is undone; outside, one step only.
    assert evidence_checked(first, anatomy(0.1, gradcam=0.8), limits) == high
    again = evidence_checked(first, anatomy(0.9, gradcam=0.8), limits)
    assert again.band == "Moderate" and [r.method for r in again.band_reasons] == ["occlusion"]
    implausible = Anatomy(segmentation_ok=False, outside_lung_share={})
    assert evidence_checked(high, implausible, limits) == high
    assert "the evidence for this answer lies mostly outside the lungs" in build_report(Analysis(again)).lower()


def colour_photo() -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:240]
    rgb = np.stack([xx / 240 * 255, yy / 200 * 255, np.full_like(xx, 128.0)], axis=-1) + rng.normal(0, 2, (200, 240, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_colour_photo_is_not_a_radiograph_but_an_inverted_film_is():
    assert assess_ood(load_image(colour_photo())).not_radiograph
    film = synthetic_radiograph(np.random.default_rng(1), 300, 260, 1)
    buffer = io.BytesIO()
    Image.fromarray(255 - film).save(buffer, "PNG")
    inverted = assess_ood(load_image(buffer.getvalue()))
    assert inverted.flagged and not inverted.not_radiograph


def test_something_that_is_not_a_radiograph_gets_no_label_maps_or_similar_films(tmp_path):
    pipeline = Pipeline(Classifier.load(make_tiny_checkpoint(tmp_path)))
    result = pipeline.analyze(colour_photo())
    assert result.analysis.prediction.answer == "INCONCLUSIVE" and result.maps == {}
    assert result.analysis.similar == () and result.analysis.track_record == () and result.analysis.boxes == ()
