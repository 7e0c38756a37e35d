"""The track record each analysis quotes from the stored model report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
from xray_xai.checkpoint import ModelCard
from xray_xai.model_report import ModelReport, load_matching, track_record
from xray_xai.models.classifier import Classifier
from xray_xai.pipeline import Options, Pipeline
from xray_xai.report import build_report
from xray_xai.results import Analysis, OperatingPoint, Prediction, TrackRecord

BALANCED = OperatingPoint("balanced", 0.5, 0.9, 0.9)
POINTS = {
    "balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9},
    "screening": {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.8},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.8, "specificity": 0.95},
}


def _split(rows: list[tuple[int, float, str]]) -> dict:
    return {
        "file": [f"f{i}.jpeg" for i in range(len(rows))],
        "label": [label for label, _, _ in rows],
        "probability": [p for _, p, _ in rows],
        "band": [band for _, _, band in rows],
    }


def write_report(folder: Path, sha: str) -> Path:
    """Validation: three High PNEUMONIA answers (one wrong), one High NORMAL answer (right).
    shift_dev: two High PNEUMONIA answers (both wrong), one Low PNEUMONIA answer (right)."""
    validation = [(1, 0.97, "High"), (1, 0.95, "High"), (0, 0.96, "High"), (0, 0.05, "High")]
    shift = [(0, 0.99, "High"), (0, 0.93, "High"), (1, 0.55, "Low")]
    raw = {
        "classifier_sha256": sha,
        "operating_points": POINTS,
        "band_operating_point": "balanced",
        "splits": {"validation": _split(validation), "shift_dev": _split(shift)},
        "errors": {"sprite": "errors.jpg", "tile": 128, "films": []},
    }
    path = folder / "model_report.json"
    path.write_text(json.dumps(raw))
    return path


def _prediction(label: str, band: str, point: OperatingPoint = BALANCED) -> Prediction:
    return Prediction(label, 0.9, 0.9, band, point)


def test_track_record_counts_stored_answers_with_the_same_label_and_band(tmp_path):
    report = ModelReport.load(write_report(tmp_path, "ab" * 32))
    high_pneumonia = track_record(report, _prediction("PNEUMONIA", "High"))
    assert high_pneumonia == (
        TrackRecord("validation", "PNEUMONIA", "High", n=3, correct=2),
        TrackRecord("shift_dev", "PNEUMONIA", "High", n=2, correct=0),
    )
    assert track_record(report, _prediction("NORMAL", "High")) == (
        TrackRecord("validation", "NORMAL", "High", n=1, correct=1),
        TrackRecord("shift_dev", "NORMAL", "High", n=0, correct=0),
    )
    assert track_record(report, _prediction("PNEUMONIA", "Low"))[1] == TrackRecord(
        "shift_dev", "PNEUMONIA", "Low", n=1, correct=1
    )


def test_no_track_record_at_an_operating_point_the_bands_were_not_given_at(tmp_path):
    report = ModelReport.load(write_report(tmp_path, "ab" * 32))
    screening = OperatingPoint("screening", 0.3, 0.95, 0.8)
    assert track_record(report, _prediction("PNEUMONIA", "High", screening)) == ()


def test_stale_broken_or_missing_report_gives_no_track_record(tmp_path, caplog):
    path = write_report(tmp_path, "ab" * 32)
    assert isinstance(load_matching(path, "ab" * 32), ModelReport)
    with caplog.at_level(logging.WARNING, logger="xray_xai.model_report"):
        assert load_matching(path, "cd" * 32) is None
    assert "other classifier weights" in caplog.text
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"classifier_sha256": "ab" * 32, "splits": {}}))
    with caplog.at_level(logging.WARNING, logger="xray_xai.model_report"):
        assert load_matching(broken, "ab" * 32) is None
    assert "cannot be read" in caplog.text
    assert load_matching(tmp_path / "missing.json", "ab" * 32) is None


def test_report_quotes_the_track_record_split_by_split():
    records = (
        TrackRecord("validation", "PNEUMONIA", "High", n=3, correct=2),
        TrackRecord("shift_dev", "PNEUMONIA", "High", n=0, correct=0),
    )
    text = build_report(Analysis(prediction=_prediction("PNEUMONIA", "High"), track_record=records))
    line = next(line for line in text.splitlines() if line.startswith("- Track record"))
    assert "(PNEUMONIA, High band)" in line
    assert "right for 2 of 3 (66.6%) validation films" in line
    assert "never given to shift_dev films from another acquisition batch" in line
    assert "Track record" not in build_report(Analysis(prediction=_prediction("PNEUMONIA", "High")))


def test_pipeline_quotes_the_track_record_of_its_answer(tmp_path):
    points = {**POINTS, "balanced": {"threshold": 0.0, "sensitivity": 1.0, "specificity": 0.0}}  # always PNEUMONIA
    card_path = make_tiny_checkpoint(tmp_path / "ckpt", arch="resnet18", size=64, operating_points=points)
    classifier = Classifier.load(card_path)
    report = ModelReport.load(write_report(tmp_path, ModelCard.from_json(card_path).sha256))
    film = tmp_path / "chest.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(0), 240, 300, 1)).save(film)

    result = Pipeline(classifier, model_report=report).first_pass(film, Options(occlusion="off"))
    prediction = result.analysis.prediction
    assert prediction.label == "PNEUMONIA"
    assert result.analysis.track_record == track_record(report, prediction) and len(result.analysis.track_record) == 2
    line = next(line for line in result.analysis.report.splitlines() if line.startswith("- Track record"))
    kind = "(PNEUMONIA, " if prediction.answer == "PNEUMONIA" else "(PNEUMONIA side of the threshold, "
    assert f"{kind}{prediction.band} band" in line
    assert result.to_json()["track_record"][0]["split"] == "validation"

    other_point = Pipeline(classifier, model_report=report).first_pass(
        film, Options(occlusion="off", operating_point="screening")
    )
    assert other_point.analysis.track_record == () and "Track record" not in other_point.analysis.report
    assert Pipeline(classifier).first_pass(film, Options(occlusion="off")).analysis.track_record == ()
