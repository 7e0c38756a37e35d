"""The Space's presentation helpers, without a browser."""

from __future__ import annotations

import json
from html import unescape
import re
from pathlib import Path

import gradio as gr
import gradio.utils
import numpy as np
import pytest
from PIL import Image

from xray_xai import DISCLAIMER
from xray_xai.calibration import OPERATING_POINTS
from xray_xai.models.classifier import UnknownOperatingPoint
from xray_xai.imaging import InputError, load_image
from xray_xai.pipeline import DISPLAY_MAX_SIDE, Result
from xray_xai.ui.overlay import draw_result
from xray_xai.report import build_report, percent
from xray_xai.results import Agreement, Analysis, Anatomy, BandReason, OODResult, OperatingPoint, Prediction
from xray_xai.ui.handlers import (
    OPERATING_POINT_CHOICES,
    UI_OUTPUTS,
    agreement_markdown,
    alerts_markdown,
    badge_html,
    example_picker,
    examples_in,
    output_dir,
    preview_image,
    probability_html,
    ui_values,
    user_errors,
    write_image,
)

ROOT = Path(__file__).resolve().parent.parent

POINT = OperatingPoint("balanced", 0.5, 0.9, 0.8)


def _prediction(probability=0.93, **ensemble):
    label = "PNEUMONIA" if probability >= 0.5 else "NORMAL"
    confidence = probability if label == "PNEUMONIA" else 1 - probability
    band = "High" if confidence >= 0.9 else "Moderate" if confidence >= 0.6 else "Low"
    return Prediction(label, probability, confidence, band, POINT, **ensemble)


def _result(probability=0.93, ood=OODResult(), anatomy=None, agreement=None, warnings=()):
    analysis = Analysis(_prediction(probability), ood=ood, anatomy=anatomy, agreement=agreement, input_warnings=warnings, report="REPORT\n" + DISCLAIMER)
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


def _shown_percentages(html: str) -> list[str]:
    return [unescape(text) for text in re.findall(r'class="prob-value">([^<]*)<', html)]


@pytest.mark.parametrize(
    "probability, shown",
    [(0.8125, ["81.2%", "18.7%"]), (0.99999, ["99.9%", "<0.1%"]), (0.0004, ["<0.1%", "99.9%"]), (1.0, ["100.0%", "0.0%"])],
)
def test_probability_uses_the_reports_percent_and_never_rounds_to_the_ends(probability, shown):
    prediction = _prediction(probability)
    html = probability_html(prediction)
    assert _shown_percentages(html) == shown
    # The report states the same number for the same prediction.
    assert f"Calibrated probability of pneumonia: {shown[0]}." in build_report(Analysis(prediction))


def test_percent_edges():
    assert [percent(x) for x in (0.0, 1e-9, 0.00099, 0.001, 0.8999, 0.99999, 1.0)] == ["0.0%", "<0.1%", "<0.1%", "0.1%", "89.9%", "99.9%", "100.0%"]


def test_uncertainty_and_band_reasons_are_shown_when_present():
    single = _prediction(0.93)
    assert "Uncertainty" not in probability_html(single) and "Band lowered" not in badge_html(single)
    ensemble = _prediction(0.93, uncertainty=0.0412, member_probabilities=(0.89, 0.97), band_reasons=(BandReason("unusual_input", "High", "Low"),))
    assert "Uncertainty ±0.04 (2 members)" in probability_html(ensemble)
    assert "Band lowered: The film looks unlike the training films" in badge_html(ensemble)


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
        assert original.format == gradcam.format == "JPEG"  # display copies (see the next test)
        assert (original.mode, original.size) == ("L", (90, 120)) and (gradcam.mode, gradcam.size) == ("RGB", (90, 120))
        assert np.abs(np.asarray(gradcam, dtype=float) - draw_result(_result(), 0.5, True)["gradcam"]).mean() < 1.0
    assert named["occlusion"] is None  # not computed yet
    assert _shown_percentages(named["probability"]) == ["93.0%", "7.0%"]
    payload = json.loads(open(named["json"]).read())
    assert payload["disclaimer"] == DISCLAIMER and payload["prediction"]["probability"] == pytest.approx(0.93)


def test_first_answer_has_no_json_yet_and_the_final_one_skips_what_is_shown():
    first = dict(zip(UI_OUTPUTS, ui_values(_result(), 0.5, True, final=False)))
    assert first["json"] is None and first["original"] and first["gradcam"]
    final = dict(zip(UI_OUTPUTS, ui_values(_result(), 0.5, True, unchanged=("original", "gradcam"))))
    assert final["original"] == final["gradcam"] == gr.skip()
    assert final["json"] and final["report"] and final["badge"]


def test_outputs_are_written_once_into_gradios_cache():
    """Gradio serves a file already in its cache as it is (no second copy, one retention policy)."""
    path = write_image(np.zeros((40, 30), np.uint8))
    assert Path(path).parent == output_dir() and output_dir().is_relative_to(gradio.utils.get_upload_folder())
    assert gr.Image().move_resource_to_block_cache(path) == path


def test_the_ui_shows_jpegs_that_look_like_the_lossless_pngs_the_api_returns():
    y, x = np.mgrid[0:120, 0:160]
    overlay = np.stack([x * 1.5, y * 2.0, (x + y) * 0.9], axis=-1).clip(0, 255).astype(np.uint8)
    overlay[40:80, 60:100] = (220, 30, 30)  # a saturated patch: chroma subsampling would bleed it
    with Image.open(write_image(overlay)) as png, Image.open(write_image(overlay, display=True)) as jpeg:
        assert png.format == "PNG" and np.array_equal(np.asarray(png), overlay)
        assert jpeg.format == "JPEG" and jpeg.size == png.size
        error = np.abs(np.asarray(jpeg, dtype=float) - overlay)
        assert error.mean() < 1.0 and error[38:82, 58:102].max() < 10


def test_preview_is_the_loaders_reading_of_any_format(tmp_path):
    sixteen_bit = tmp_path / "film"  # no extension: recognised by content, like DICOMs
    Image.fromarray((np.arange(1500 * 1000, dtype=np.uint32).reshape(1500, 1000) % 65536).astype(np.uint16)).save(sixteen_bit, format="PNG")
    with Image.open(preview_image(str(sixteen_bit))) as preview:
        assert preview.format == "JPEG" and preview.mode == "L"
        assert preview.size == (round(DISPLAY_MAX_SIDE * 1000 / 1500), DISPLAY_MAX_SIDE)
    assert preview_image(None) is None


def test_unreadable_upload_gets_the_loaders_own_message(tmp_path):
    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(InputError) as loader:
        load_image(heic)
    assert "HEIC" in str(loader.value)
    with pytest.raises(gr.Error) as shown:
        user_errors(preview_image)(str(heic))
    assert shown.value.message == str(loader.value)


def test_only_user_input_errors_become_messages():
    def unknown_point():
        raise UnknownOperatingPoint("Unknown operating point 'x'; choose one of balanced, screening, rule_in.")

    with pytest.raises(gr.Error) as shown:
        user_errors(unknown_point)()
    assert shown.value.message == "Unknown operating point 'x'; choose one of balanced, screening, rule_in."

    def bug():
        raise ValueError("operands could not be broadcast together")

    def streaming_bug():
        yield 1
        raise ValueError("operands could not be broadcast together")

    with pytest.raises(ValueError, match="broadcast"):
        user_errors(bug)()
    with pytest.raises(ValueError, match="broadcast"):
        list(user_errors(streaming_bug)())


def test_setting_choices_match_the_library():
    assert [value for _, value in OPERATING_POINT_CHOICES] == list(OPERATING_POINTS)


def test_examples_show_ground_truth_and_a_click_picks_that_film():
    examples = examples_in(ROOT / "examples")
    assert len(examples) == 16
    for path, caption in examples:
        assert caption == f"{Path(path).parent.name} · {Path(path).stem}"
    assert {Path(path).parent.name for path, _ in examples} == {"NORMAL", "PNEUMONIA"}
    assert example_picker(examples)(gr.SelectData(None, {"index": 11, "value": None})) == examples[11][0]
