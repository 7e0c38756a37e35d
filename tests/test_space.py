"""The Space's presentation helpers, without a browser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xray_xai import DISCLAIMER
from xray_xai.pipeline import Result
from xray_xai.results import Agreement, Analysis, Anatomy, OODResult, OperatingPoint, Prediction
from xray_xai.space import UI_OUTPUTS, agreement_markdown, alerts_markdown, badge_html, label_value, ui_values

POINT = OperatingPoint("balanced", 0.5, 0.9, 0.8)


def _result(probability=0.93, ood=OODResult(), anatomy=None, agreement=None, warnings=()):
    label = "PNEUMONIA" if probability >= 0.5 else "NORMAL"
    confidence = probability if label == "PNEUMONIA" else 1 - probability
    band = "High" if confidence >= 0.9 else "Moderate" if confidence >= 0.6 else "Low"
    analysis = Analysis(Prediction(label, probability, confidence, band, POINT), ood=ood, anatomy=anatomy, agreement=agreement, input_warnings=warnings, report="REPORT\n" + DISCLAIMER)
    maps = {"gradcam": np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)}
    return Result(analysis, np.full((120, 90), 0.5, np.float32), maps)


@pytest.mark.parametrize("probability, band, colour", [(0.95, "High", "#1b7f3b"), (0.7, "Moderate", "#b7791f"), (0.45, "Low", "#9b2c2c")])
def test_badge_colour_and_text(probability, band, colour):
    result = _result(probability)
    html = badge_html(result.analysis.prediction)
    assert colour in html and f"{band} confidence" in html and result.analysis.prediction.label in html


def test_badge_marks_unreliable_input_and_truncates_percent():
    html = badge_html(_result(0.99999).analysis.prediction, ood_flagged=True)
    assert "UNRELIABLE INPUT" in html and "99.9%" in html and "100.0%" not in html


def test_label_value_sums_to_one():
    value = label_value(_result(0.8125).analysis.prediction)
    assert value == {"PNEUMONIA": 0.8125, "NORMAL": 0.1875}


def test_agreement_markdown_before_and_after_occlusion():
    assert "waiting" in agreement_markdown(None)
    text = agreement_markdown(Agreement(0.61, 0.45, "agree", (9, 9)))
    assert "agree" in text and "+0.61" in text and "0.45" in text


def test_alerts_list_every_warning_and_nothing_when_clean():
    assert alerts_markdown(_result()) == ""
    anatomy = Anatomy(segmentation_ok=True, shortcut_warning=True, shortcut_methods=("gradcam",))
    text = alerts_markdown(_result(ood=OODResult(True, ("A colour photograph.",)), anatomy=anatomy, warnings=("Only the first frame was analysed.",)))
    assert "unlike the training data" in text and "A colour photograph." in text
    assert "other than the lungs" in text and "first frame" in text


def test_ui_values_match_outputs_and_json_download(tmp_path):
    values = ui_values(_result(), opacity=0.5, outline=True)
    assert len(values) == len(UI_OUTPUTS)
    named = dict(zip(UI_OUTPUTS, values))
    with Image.open(named["original"]) as original, Image.open(named["gradcam"]) as gradcam:
        assert original.format == gradcam.format == "PNG"
        assert (original.mode, original.size) == ("L", (90, 120)) and (gradcam.mode, gradcam.size) == ("RGB", (90, 120))
        assert np.array_equal(np.asarray(gradcam), _result().overlays(0.5, True)["gradcam"])  # lossless
    assert named["occlusion"] is None  # not computed yet
    payload = json.loads(open(named["json"]).read())
    assert payload["disclaimer"] == DISCLAIMER and payload["prediction"]["probability"] == pytest.approx(0.93)


def test_first_answer_has_no_json_yet_and_the_final_one_skips_what_is_shown():
    import gradio as gr

    first = dict(zip(UI_OUTPUTS, ui_values(_result(), 0.5, True, final=False)))
    assert first["json"] is None and first["original"] and first["gradcam"]
    final = dict(zip(UI_OUTPUTS, ui_values(_result(), 0.5, True, unchanged=("original", "gradcam"))))
    assert final["original"] == final["gradcam"] == gr.skip()
    assert final["json"] and final["report"] and final["badge"]
