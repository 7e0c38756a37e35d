"""Evaluation of the confidence bands and of robustness to softer films."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import DEFAULT_POINTS, TINY_ARCH, make_tiny_checkpoint, make_tiny_dataset

from xray_xai.checkpoint import ModelCard
from xray_xai.evaluation.checkpoint_metrics import band_metrics
from xray_xai.evaluation.classifier import describe_perturbation, perturbation, run
from xray_xai.evaluation.scoring import Scored, blur_input, stretch_input
from xray_xai.models.classifier import Classifier


def card_classifier(**uncertainty) -> Classifier:
    card = ModelCard(arch=TINY_ARCH, input_size=8, mean=0.5, std=0.25, temperature=1.0, operating_points=DEFAULT_POINTS,
                     uncertainty=uncertainty)  # fmt: skip
    return Classifier(None, card)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_band_metrics_count_accuracy_per_band_and_high_band_errors():
    # balanced threshold 0.5; films: (P, label, members, unusual)
    films = [
        (0.99, 1, (0.99, 0.99), False),  # High, right
        (0.95, 0, (0.94, 0.96), False),  # High, wrong
        (0.95, 0, (0.70, 0.999), False),  # High -> Moderate by disagreement, wrong
        (0.05, 0, (0.05, 0.05), False),  # High (NORMAL), right
        (0.80, 1, (0.80, 0.80), False),  # Moderate, right
        (0.55, 0, (0.55, 0.55), False),  # Low, wrong
        (0.97, 1, (0.97, 0.97), True),  # High -> Low as unusual, right
    ]
    p, labels, members, unusual = (np.array(column) for column in zip(*films, strict=True))
    scored = Scored([], np.array([logit(v) for v in p]), members.astype(float), unusual.astype(bool), [])
    metrics = band_metrics(labels, scored, card_classifier(threshold=0.05))
    assert metrics["bands"] == {
        "High": {"n": 3, "accuracy": pytest.approx(2 / 3)},
        "Moderate": {"n": 2, "accuracy": pytest.approx(0.5)},
        "Low": {"n": 2, "accuracy": pytest.approx(0.5)},
    }
    assert metrics["high_band_error_rate"] == pytest.approx(1 / 7)
    lo, hi = metrics["high_band_error_rate_ci95"]
    assert lo == 0 and 1 / 7 < hi <= 3 / 7  # one wrong High answer in 7 films, resampled
    assert (
        band_metrics(labels, scored, card_classifier(threshold=0.05), n_bootstrap=0)["high_band_error_rate_ci95"]
        is None
    )
    assert metrics["flagged"]["wrong"] == {"n": 3, "share_flagged": pytest.approx(2 / 3)}
    assert metrics["flagged"]["right"] == {"n": 4, "share_flagged": pytest.approx(2 / 4)}
    assert metrics["band_lowered"] == {"wrong": pytest.approx(1 / 3), "right": pytest.approx(1 / 4)}
    assert metrics["out_of_distribution"] == 1
    assert metrics["uncertainty"]["median_wrong"] == pytest.approx(0.01)  # spreads 0.01, 0.1495, 0


def test_blur_input_is_a_gaussian_blur_at_input_size():
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 16] = 1.0
    out = blur_input(2.0)(x)
    assert out.shape == x.shape and out.sum() == pytest.approx(1.0, abs=1e-4)
    profile = out[0, 0, 16].numpy()
    assert profile[16] == pytest.approx(1 / (2 * np.pi * 4), rel=1e-3)  # the 2-D Gaussian's peak at sigma 2
    assert np.argmax(profile) == 16


def test_stretch_input_makes_the_film_taller_and_keeps_its_width():
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 22:42, 12:52] = 1.0
    rows, cols = torch.nonzero(stretch_input(1.5)(x)[0, 0] > 0.5, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) == 30 and int(cols.max() - cols.min() + 1) == 40
    assert torch.allclose(stretch_input(1.0)(x), x, atol=1e-5)


def test_perturbations_compose_and_are_recorded():
    assert perturbation(0.0, 1.0) is None and describe_perturbation(0.0, 1.0) is None
    assert describe_perturbation(2.0, 1.15) == {"gaussian_blur_sigma_px": 2.0, "height_stretch": 1.15}
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 12:21, 12:21] = 1.0
    both = perturbation(2.0, 1.5)(x)
    assert torch.allclose(both, blur_input(2.0)(stretch_input(1.5)(x)), atol=1e-6)
    with pytest.raises(SystemExit, match="positive"):
        perturbation(0.0, 0.0)


@pytest.mark.slow
def test_cli_writes_bands_and_blurred_scores(tmp_path):
    torch.set_num_threads(1)
    checkpoint = make_tiny_checkpoint(tmp_path / "checkpoint")
    data = make_tiny_dataset(tmp_path / "data", per_class=3)
    clean = run(
        ["--data", str(data), "--out", str(tmp_path / "clean"), "--checkpoint", str(checkpoint), "--bootstrap", "0"]
    )
    blurred = run(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "blur"),
            "--checkpoint",
            str(checkpoint),
            "--bootstrap",
            "0",
            "--blur",
            "4",
        ]
    )
    written = json.loads((tmp_path / "blur" / "metrics.json").read_text())
    assert written["perturbation"] == {"gaussian_blur_sigma_px": 4.0} and clean["perturbation"] is None
    for metrics in (clean, written):
        assert sum(band["n"] for band in metrics["bands"].values()) == metrics["n"] == 6
        assert 0 <= metrics["high_band_error_rate"] <= 1
    assert blurred["mean_probability"] != pytest.approx(clean["mean_probability"], abs=1e-6)
    rows = (tmp_path / "clean" / "predictions.csv").read_text().splitlines()[1:]
    probs = np.array([float(r.split(",")[-1]) for r in rows])
    assert clean["mean_probability"] == pytest.approx(probs.mean(), abs=1e-5)
