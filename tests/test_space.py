"""The Space's presentation helpers, without a browser."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import gradio as gr
import gradio.utils
import numpy as np
import pytest
from PIL import Image

from xray_xai import DISCLAIMER
from xray_xai.calibration import OPERATING_POINTS
from xray_xai.imaging import InputError, load_image
from xray_xai.models.classifier import UnknownOperatingPoint
from xray_xai.pipeline import DISPLAY_MAX_SIDE, Result
from xray_xai.report import build_report
from xray_xai.results import Agreement, Analysis, Anatomy, BandReason, OODResult, OperatingPoint, Prediction
from xray_xai.ui.handlers import (
    CAM_CAPTION,
    OCCLUSION_CAPTION,
    OPERATING_POINT_CHOICES,
    UI_OUTPUTS,
    Handlers,
    agreement_markdown,
    alerts_markdown,
    api_answer,
    badge_html,
    cleared_values,
    example_picker,
    examples_in,
    operating_point_choices,
    output_dir,
    preview_image,
    probability_html,
    safe_stem,
    ui_values,
    user_errors,
    write_image,
)
from xray_xai.ui.overlay import draw_result

ROOT = Path(__file__).resolve().parent.parent

POINT = OperatingPoint("balanced", 0.5, 0.9, 0.8)


def _named(values: tuple) -> dict:
    """The UI's values by output name."""
    return dict(zip(UI_OUTPUTS, values, strict=True))


def _prediction(probability=0.93, **ensemble):
    label = "PNEUMONIA" if probability >= 0.5 else "NORMAL"
    confidence = probability if label == "PNEUMONIA" else 1 - probability
    band = "High" if confidence >= 0.9 else "Moderate" if confidence >= 0.6 else "Low"
    return Prediction(label, probability, confidence, band, POINT, **ensemble)


def _result(probability=0.93, ood=OODResult(), anatomy=None, agreement=None, warnings=()):
    analysis = Analysis(
        _prediction(probability),
        ood=ood,
        anatomy=anatomy,
        agreement=agreement,
        input_warnings=warnings,
        report="REPORT\n" + DISCLAIMER,
    )
    maps = {"gradcam": np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)}
    return Result(analysis, np.full((120, 90), 0.5, np.float32), maps)


@pytest.mark.parametrize(
    "probability, band, colour", [(0.95, "High", "#1b7f3b"), (0.7, "Moderate", "#b7791f"), (0.45, "Low", "#9b2c2c")]
)
def test_badge_colour_and_text(probability, band, colour):
    result = _result(probability)
    html = badge_html(result.analysis.prediction)
    assert colour in html and f"{band} confidence" in html and result.analysis.prediction.label in html


def test_badge_says_inconclusive_with_the_reason_and_truncates_percent():
    decisive = badge_html(_result(0.99999).analysis.prediction)
    assert "PNEUMONIA · &gt;99.9% · High confidence band" in decisive and "100.0%" not in decisive
    flagged = _prediction(0.97, answer="INCONCLUSIVE")
    html = badge_html(flagged, OODResult(True, ("Feature distance above the 99th percentile.",)))
    assert "INCONCLUSIVE" in html and "the film looks unlike the training films" in html
    assert "PNEUMONIA ·" not in html and "High confidence" not in html and "#1b7f3b" not in html
    both = badge_html(_prediction(0.6, answer="INCONCLUSIVE", prediction_set=("NORMAL", "PNEUMONIA")))
    assert "both NORMAL and PNEUMONIA are in its conformal prediction set" in both


def test_a_film_that_is_not_a_radiograph_gets_only_the_reason(tmp_path):
    ood = OODResult(True, ("A colour photograph.",), not_radiograph=True)
    analysis = Analysis(_prediction(0.52, answer="INCONCLUSIVE"), ood=ood, report="REPORT")
    named = _named(ui_values(Result(analysis, np.full((40, 30), 0.5, np.float32)), 0.5, True))
    assert "NOT A CHEST RADIOGRAPH" in named["badge"] and "A colour photograph." in named["badge"]
    assert not re.search("NORMAL|PNEUMONIA|%", named["badge"].replace("A CHEST RADIOGRAPH", ""))
    assert named["probability"] == named["agreement"] == "" and named["similar"] == []
    assert named["gradcam"] is None and named["occlusion"] is None
    assert api_answer(analysis) == ("INCONCLUSIVE", None, None, None, None, True, [], ["A colour photograph."])


def _shown_percentages(html: str) -> list[str]:
    return [unescape(text) for text in re.findall(r'class="prob-value">([^<]*)<', html)]


@pytest.mark.parametrize(
    "probability, shown",
    [
        (0.8125, ["81.2%", "18.8%"]),
        (0.99999, [">99.9%", "<0.1%"]),
        (0.0004, ["<0.1%", ">99.9%"]),
        (1.0, ["100.0%", "0.0%"]),
    ],
)
def test_probabilities_add_up_and_match_the_report(probability, shown):
    prediction = _prediction(probability)
    html = probability_html(prediction)
    assert _shown_percentages(html) == shown
    # The report states the same number for the same prediction.
    assert f"Calibrated probability of pneumonia: {shown[0]}." in build_report(Analysis(prediction))


def test_uncertainty_and_band_reasons_are_shown_when_present():
    single = _prediction(0.93)
    assert "Uncertainty" not in probability_html(single) and "Band lowered" not in badge_html(single)
    ensemble = _prediction(
        0.93,
        uncertainty=0.0412,
        member_probabilities=(0.89, 0.97),
        band_reasons=(BandReason("unusual_input", "High", "Low"),),
    )
    assert "Uncertainty ±4.1 points (2 networks)" in probability_html(ensemble)
    assert "spread, one standard deviation: ±4.1 points" in build_report(Analysis(ensemble))  # one format
    assert "Band lowered from High to Low: the film looks unlike the training films" in badge_html(ensemble)


def test_agreement_markdown_before_and_after_occlusion():
    assert "waiting" in agreement_markdown(None)
    text = agreement_markdown(Agreement(0.61, 0.45, "agree", (9, 9)))
    assert "agree" in text and "+0.61" in text and "0.45" in text


def test_alerts_list_every_warning_and_nothing_when_clean():
    assert alerts_markdown(_result()) == ""
    anatomy = Anatomy(segmentation_ok=True, shortcut_warning=True, shortcut_methods=("gradcam",))
    text = alerts_markdown(
        _result(
            ood=OODResult(True, ("A colour photograph.",)),
            anatomy=anatomy,
            warnings=("Only the first frame was analysed.",),
        )
    )
    assert "unlike the training data" in text and "A colour photograph." in text
    assert "other than the lungs" in text and "first frame" in text


def test_ui_values_match_outputs_and_json_download(tmp_path):
    values = ui_values(_result(), opacity=0.5, outline=True)
    assert len(values) == len(UI_OUTPUTS)
    named = _named(values)
    with Image.open(named["gradcam"]) as gradcam:
        assert gradcam.format == "JPEG"  # display copies (see the next test)
        assert (gradcam.mode, gradcam.size) == ("RGB", (90, 120))
        assert np.abs(np.asarray(gradcam, dtype=float) - draw_result(_result(), 0.5, True)["gradcam"]).mean() < 1.0
    assert named["occlusion"] is None  # not computed yet
    assert _shown_percentages(named["probability"]) == ["93.0%", "7.0%"]
    assert named["gradcam_caption"].startswith("**Grad-CAM** · ")
    payload = json.loads(open(named["json"]).read())
    assert payload["disclaimer"] == DISCLAIMER and payload["prediction"]["probability"] == pytest.approx(0.93)
    assert payload["answer"] == "PNEUMONIA" and Path(named["json"]).name == "upload_analysis.json"
    named = _named(ui_values(_result(), 0.5, True, stem=safe_stem("/tmp/x/Film 7 (copy).dcm")))
    assert Path(named["json"]).name == "Film_7_copy_analysis.json"


def test_first_answer_has_no_json_yet_and_the_final_one_skips_what_is_shown():
    first = _named(ui_values(_result(), 0.5, True, final=False))
    assert first["json"] is None and first["gradcam"]
    final = _named(ui_values(_result(), 0.5, True, unchanged=("gradcam", "similar")))
    assert final["gradcam"] == final["similar"] == gr.skip()
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
    Image.fromarray((np.arange(1500 * 1000, dtype=np.uint32).reshape(1500, 1000) % 65536).astype(np.uint16)).save(
        sixteen_bit, format="PNG"
    )
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
        assert caption == Path(path).parent.name  # the ground truth alone: readable on a phone
    assert {Path(path).parent.name for path, _ in examples} == {"NORMAL", "PNEUMONIA"}
    assert example_picker(examples)(gr.SelectData(None, {"index": 11, "value": None})) == examples[11][0]


def test_cleared_values_leave_nothing_of_an_earlier_film():
    cleared = _named(cleared_values())
    assert set(cleared) == set(UI_OUTPUTS)
    shown = _named(ui_values(_result(), 0.5, True))
    assert all(value in ("", None, [], CAM_CAPTION, OCCLUSION_CAPTION) for value in cleared.values())
    assert [
        name
        for name in UI_OUTPUTS
        if shown[name] not in ("", None, [], OCCLUSION_CAPTION) and cleared[name] == shown[name]
    ] == []


class ScriptedPipeline:
    """Answers with a fixed result and counts the model's runs; ``during_complete`` runs inside
    the occlusion step, before its first progress report."""

    def __init__(self) -> None:
        self.calls = 0
        self.during_complete = lambda: None

    def first_pass(self, path, options):
        self.calls += 1
        return _result()

    def complete(self, first, options, progress):
        self.calls += 1
        self.during_complete()
        progress(1, 2)
        return _result(agreement=Agreement(0.5, 0.4, "agree", (7, 7)))


def test_a_stream_stops_once_the_page_is_cleared_and_display_settings_redraw_without_the_model(tmp_path):
    pipeline, request = ScriptedPipeline(), gr.Request(session_hash="page")
    handlers = Handlers(pipeline)
    settings = ("balanced", "gradcam", "fast", 0.45, True, True)
    messages = list(handlers.stream(str(tmp_path / "film.png"), *settings, request=request))
    assert len(messages) == 2 and all(isinstance(m[-1], Result) for m in messages)
    assert Path(_named(messages[-1][:-1])["json"]).name == "film_analysis.json"
    # A new upload clears the page while occlusion runs: the old analysis sends nothing more.
    pipeline.during_complete = lambda: handlers.clear(request)
    assert len(list(handlers.stream("film.png", *settings, request=request))) == 1
    # Another page is not affected by this one's clears.
    assert len(list(handlers.stream("film.png", *settings, request=gr.Request(session_hash="other")))) == 2
    # Display settings draw again from the kept result, without the model.
    calls, result = pipeline.calls, messages[-1][-1]
    first, second = (
        handlers.redraw(result, 0.9, False, False, request),
        handlers.redraw(result, 0.2, True, True, request),
    )
    assert pipeline.calls == calls
    with Image.open(first[0]) as a, Image.open(second[0]) as b:
        assert np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean() > 1
    assert first[1] == gr.skip()  # no occlusion map in this result
    assert handlers.redraw(None, 0.5, True, True, request) == (gr.skip(), gr.skip())


def test_operating_points_are_named_by_their_target_and_trade_only_when_ordered():
    points = {
        "balanced": {"threshold": 0.74, "sensitivity": 0.96, "specificity": 0.97},
        "screening": {
            "threshold": 0.15,
            "sensitivity": 0.99,
            "specificity": 0.91,
            "target": "validation sensitivity >= 0.99",
        },
        "rule_in": {
            "threshold": 0.97,
            "sensitivity": 0.88,
            "specificity": 0.99,
            "target": "validation specificity >= 0.99",
        },
    }
    labels = dict((value, label) for label, value in operating_point_choices(points))
    assert labels["screening"] == "Screening: fewer missed cases, more false alarms (validation sensitivity >= 0.99)"
    assert labels["rule_in"] == "Rule-in: fewer false alarms, more missed cases (validation specificity >= 0.99)"
    assert labels["balanced"] == "Balanced (validation sensitivity 96.0%, specificity 97.0%)"
    unordered = {**points, "screening": {**points["screening"], "threshold": 0.84}}
    labels = dict((value, label) for label, value in operating_point_choices(unordered))
    assert labels["screening"] == "Screening (validation sensitivity >= 0.99)" and "fewer" not in labels["rule_in"]


def test_a_user_error_is_logged_in_one_line_without_a_traceback(caplog):
    def unreadable():
        raise InputError("This file is not an image.")

    with caplog.at_level("INFO", logger="xray_xai.ui.handlers"), pytest.raises(gr.Error) as shown:
        user_errors(unreadable)()
    assert shown.value.print_exception is False
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("Refused (unreadable): This file is not an image.", None)
    ]
