"""The evaluation CLI end to end on a tiny model and dataset, the JSON sections that read the card,
and the metrics and bootstrap intervals of :mod:`xray_xai.metrics`."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from tiny import make_tiny_checkpoint, make_tiny_dataset

from xray_xai import CLASSES
from xray_xai.checkpoint import ModelCard, save_checkpoint, sha256_file
from xray_xai.data import list_samples
from xray_xai.evaluation.checkpoint_metrics import compute_metrics
from xray_xai.evaluation.classifier import main, run
from xray_xai.imaging import load_image
from xray_xai.metrics import (
    auroc_interval,
    bootstrap_interval,
    ece_interval,
    paired_auroc_difference,
    share_interval,
    threshold_metrics,
)
from xray_xai.models.classifier import Classifier

OPERATING_POINT_KEYS = {
    "threshold",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "balanced_accuracy",
    "confusion",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    data = make_tiny_dataset(root / "data", per_class=4)
    checkpoint = spread_checkpoint(root / "checkpoint", data)
    (data / "PNEUMONIA" / "person999_virus_1.png").write_bytes(b"not an image")
    return root, checkpoint, data


def image_logits(classifier: Classifier, samples: list) -> np.ndarray:
    """Raw logits, one image at a time through the app's loader and preprocessing."""
    with torch.inference_mode():
        return np.array([float(classifier.model(classifier.prepare(load_image(s.path).pixels))) for s in samples])


def spread_checkpoint(folder, data) -> Path:
    """A tiny checkpoint whose head is rescaled so that its logits on ``data`` span about -4..4.

    A random network scores every image alike (P ~ 0.501); spread scores make the calibration
    bins and the operating-point thresholds matter.
    """
    path = make_tiny_checkpoint(folder)
    classifier = Classifier.load(path)
    logits = image_logits(classifier, list_samples(data))
    scale = 8 / np.ptp(logits)
    head = classifier.model.get_classifier()
    with torch.no_grad():
        head.weight *= scale
        head.bias.copy_((head.bias - float(np.mean(logits))) * scale)
    save_checkpoint(classifier.model, classifier.card, path)
    return path


def card_only_classifier(temperature: float = 1.0) -> Classifier:
    card = ModelCard(
        arch="none",
        input_size=8,
        mean=0.5,
        std=0.25,
        temperature=temperature,
        operating_points={
            name: {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9}
            for name in ("balanced", "screening", "rule_in")
        },
    )
    return Classifier(model=None, card=card)


@pytest.mark.slow
def test_cli_writes_every_metric_and_plot(tiny):
    root, checkpoint, data = tiny
    out = root / "out"
    assert (
        main(
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--checkpoint",
                str(checkpoint),
                "--batch-size",
                "3",
                "--bootstrap",
                "200",
                "--threads",
                "1",
            ]
        )
        is None
    )
    metrics = json.loads((out / "metrics.json").read_text())

    assert metrics["n"] == 8
    assert metrics["counts"] == {"NORMAL": 4, "PNEUMONIA": 4}
    assert metrics["failed"]["count"] == 1
    assert metrics["failed"]["files"][0]["file"] == "PNEUMONIA/person999_virus_1.png"
    assert metrics["checkpoint_sha256"] == sha256_file(checkpoint.with_suffix(".safetensors"))

    # The same predictions made independently, one image at a time, and scored with sklearn / numpy.
    card = json.loads(checkpoint.read_text())
    classifier = Classifier.load(checkpoint)
    readable = [s for s in list_samples(data) if s.path.name != "person999_virus_1.png"]
    y = np.array([s.label for s in readable])
    logits = image_logits(classifier, readable)
    raw, p = 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(-logits / card["temperature"]))
    assert len(set(np.floor(p * 15))) >= 4  # spread over several calibration bins
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert metrics["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-9)
    lo, hi = metrics["auroc_ci95"]
    assert 0 <= lo <= hi <= 1
    lo, hi = metrics["ece_ci95"]
    assert 0 <= lo <= hi <= 1
    for block, probs in ((metrics, p), (metrics["uncalibrated"], raw)):
        assert block["brier"] == pytest.approx(
            np.mean((probs - y) ** 2), abs=1e-4
        )  # batched vs one by one: float noise
        assert block["ece"] == pytest.approx(expected_calibration_error(probs, y), abs=1e-4)
    assert set(metrics["operating_points"]) == {"balanced", "screening", "rule_in"}
    for name, point in metrics["operating_points"].items():
        assert OPERATING_POINT_KEYS <= set(point)
        assert point["threshold"] == card["operating_points"][name]["threshold"]
        positive = p >= point["threshold"]
        tp, fp = int((positive & (y == 1)).sum()), int((positive & (y == 0)).sum())
        fn, tn = 4 - tp, 4 - fp
        assert point["confusion"] == [[tn, fp], [fn, tp]]
        assert point["accuracy"] == pytest.approx((tp + tn) / 8)
        assert point["accuracy_ci95"] == share_interval(y, (p >= point["threshold"]) == y, 200, 0)
        assert point["sensitivity"] == pytest.approx(tp / 4) and point["specificity"] == pytest.approx(tn / 4)
        assert point["balanced_accuracy"] == pytest.approx((tp / 4 + tn / 4) / 2)
        assert point["ppv"] == (pytest.approx(tp / (tp + fp)) if tp + fp else None)
        assert point["npv"] == (pytest.approx(tn / (tn + fn)) if tn + fn else None)
    assert (
        len({(point["confusion"][1][1], point["confusion"][0][1]) for point in metrics["operating_points"].values()})
        > 1
    )
    # Each PNG is the figure it names, at 120 dpi (the panels themselves are tested in test_plots).
    sizes = {"roc.png": (600, 600), "pr.png": (600, 600), "reliability.png": (1080, 540)} | {
        f"confusion_{n}.png": (480, 480) for n in metrics["operating_points"]
    }
    assert metrics["plots"] == list(sizes) and {p.name for p in out.glob("*.png")} == set(sizes)
    for plot, size in sizes.items():
        with Image.open(out / plot) as image:
            assert image.size == size and len(image.getcolors(1 << 16) or range(1 << 16)) > 50, plot  # drawn, not blank
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    by_file = {f"{CLASSES[s.label]}/{s.path.name}": probability for s, probability in zip(readable, p, strict=True)}
    assert len(rows) == 8 and all(float(r["probability"]) == pytest.approx(by_file[r["file"]], abs=1e-4) for r in rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-width bins [k/n, (k+1)/n) (the last one closed): sum of |mean p - positive rate| * bin share."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        member = (probs >= lo) & ((probs < hi) | (k == n_bins - 1))
        if member.any():
            total += member.mean() * abs(probs[member].mean() - labels[member].mean())
    return total


def test_cli_single_class_gives_null_auroc_not_a_crash(tiny, tmp_path):
    _, checkpoint, data = tiny
    single = tmp_path / "single"
    shutil.copytree(data / "NORMAL", single / "NORMAL")
    (single / "PNEUMONIA").mkdir()
    metrics = run(
        ["--data", str(single), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--threads", "1"]
    )
    assert metrics["n"] == 4 and metrics["counts"]["PNEUMONIA"] == 0
    assert metrics["auroc"] is None and metrics["auroc_ci95"] is None and metrics["auprc"] is None
    assert any("one class" in note for note in metrics["notes"])
    assert metrics["operating_points"]["balanced"]["sensitivity"] is None
    assert metrics["plots"] == [
        "reliability.png",
        "confusion_balanced.png",
        "confusion_screening.png",
        "confusion_rule_in.png",
    ]
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == set(
        metrics["plots"]
    )  # no ROC or PR curve of one class


def test_cli_val_split_and_versus(tiny, tmp_path):
    root, checkpoint, data = tiny
    val = ["IM-1001", "person102"]
    (checkpoint.parent / "classifier_val_patients.json").write_text(json.dumps({"patients": val}))
    other = make_tiny_checkpoint(tmp_path / "other", temperature=1.0, seed=1)
    args = ["--data", str(data), "--checkpoint", str(checkpoint), "--bootstrap", "50", "--threads", "1"]
    metrics = run([*args, "--out", str(tmp_path / "val"), "--split", "val", "--versus", str(other)])
    assert metrics["split"] == "val" and metrics["n"] == 2 and metrics["counts"] == {"NORMAL": 1, "PNEUMONIA": 1}
    versus = metrics["versus"]
    assert versus["checkpoint_sha256"] == sha256_file(other.with_suffix(".safetensors"))
    assert versus["auroc_difference"]["difference"] == pytest.approx(metrics["auroc"] - versus["auroc"])
    (checkpoint.parent / "classifier_val_patients.json").unlink()
    with pytest.raises(SystemExit, match="classifier_val_patients.json"):
        main([*args, "--out", str(tmp_path / "none"), "--split", "val"])


@pytest.mark.slow
def test_paired_auroc_difference_is_zero_against_itself_and_signed():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    good = labels + rng.normal(0, 0.5, 100)
    bad = labels + rng.normal(0, 2.0, 100)
    same = paired_auroc_difference(labels, good, good, 100)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0]}
    better = paired_auroc_difference(labels, good, bad, 300)
    assert better["difference"] == pytest.approx(roc_auc_score(labels, good) - roc_auc_score(labels, bad))
    lo, hi = better["ci95"]
    assert 0 < lo <= better["difference"] <= hi
    assert paired_auroc_difference(np.zeros(4), good[:4], bad[:4]) is None


def test_threshold_metrics_known_confusion():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.4, 0.8, 0.9])
    m = threshold_metrics(labels, probs, 0.5)
    assert m["confusion"] == [[2, 1], [1, 2]]
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "accuracy"):
        assert m[key] == pytest.approx(2 / 3), key
    # p == threshold counts as positive; nothing predicted negative -> NPV undefined.
    m = threshold_metrics(labels, probs, 0.1)
    assert m["confusion"] == [[0, 3], [0, 3]] and m["npv"] is None and m["sensitivity"] == 1.0


def test_perfect_separation_metrics():
    labels = np.array([0] * 5 + [1] * 5)
    logits = np.linspace(-4, 4, 10)
    metrics = compute_metrics(labels, logits, card_only_classifier(), n_bootstrap=100)
    assert metrics["auroc"] == 1.0 and metrics["auprc"] == 1.0 and metrics["auroc_ci95"] == [1.0, 1.0]
    assert metrics["operating_points"]["balanced"]["confusion"] == [[5, 0], [0, 5]]
    assert metrics["operating_points"]["balanced"]["accuracy"] == 1.0


def test_temperature_changes_calibrated_but_not_uncalibrated_metrics():
    labels = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    logits = np.array([-3.0, 2.0, 1.0, 4.0, -1.0, -2.0, 3.0, 0.5])
    plain = compute_metrics(labels, logits, card_only_classifier(1.0), n_bootstrap=0)
    scaled = compute_metrics(labels, logits, card_only_classifier(3.0), n_bootstrap=0)
    assert plain["uncalibrated"] == scaled["uncalibrated"]
    assert plain["brier"] == pytest.approx(plain["uncalibrated"]["brier"])
    assert not math.isclose(scaled["brier"], plain["brier"])
    assert scaled["auroc"] == plain["auroc"]  # a monotone rescaling keeps the ranking


@pytest.mark.slow
def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 40)
    scores = labels + rng.normal(0, 1, 80)
    first = auroc_interval(labels, scores, 300, seed=7)
    assert first == auroc_interval(labels, scores, 300, seed=7)
    assert first != auroc_interval(labels, scores, 300, seed=8)
    assert first[0] < roc_auc_score(labels, scores) < first[1]
    assert auroc_interval(np.zeros(10), scores[:10], 100) is None


def test_bootstrap_resamples_films_within_each_class_and_pairs_every_array():
    labels = np.repeat([0, 1], [30, 50])
    seen = []
    interval = bootstrap_interval(labels, lambda i: seen.append(i) or float(labels[i].sum()), 200, seed=0)
    assert interval == [50.0, 50.0]  # every resample holds exactly the 30 NORMAL and 50 PNEUMONIA films...
    assert len(seen) >= 200 and all(len(i) == 80 and len(set(i)) < 80 for i in seen[-200:])  # ...drawn with replacement
    # One index selects all arrays: a statistic of two copies of the same scores never differs.
    rng = np.random.default_rng(2)
    scores = labels + rng.normal(0, 1, 80)
    assert bootstrap_interval(
        labels, lambda i: roc_auc_score(labels[i], scores[i]) - roc_auc_score(labels[i], scores.copy()[i]), 100
    ) == [0.0, 0.0]


def test_share_and_ece_intervals_measure_the_sampling_spread():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [60, 140])
    probs = np.clip(0.7 * labels + rng.normal(0.15, 0.2, 200), 0, 1)
    right = (probs >= 0.5) == labels
    accuracy = share_interval(labels, right, 1000, seed=5)
    assert accuracy == share_interval(labels, right, 1000, seed=5)
    assert accuracy[0] < right.mean() < accuracy[1]
    # Resampling within each class removes the class-mix part of the variance: no wider than the
    # unstratified (Wald) interval, and not much narrower here, where accuracy differs little by class.
    wald = 2 * 1.96 * np.sqrt(right.mean() * (1 - right.mean()) / len(right))
    assert 0.7 * wald < accuracy[1] - accuracy[0] < 1.1 * wald
    calibration = ece_interval(labels, probs, 400, seed=5)
    assert 0 <= calibration[0] < calibration[1] <= 1
    assert share_interval(labels, np.ones(200, bool), 100) == [1.0, 1.0]
    # No interval: no resamples, no films, one class, or one film of a class (it would be in every resample).
    assert share_interval(labels, right, 0) is None and ece_interval(labels, probs, 0) is None
    assert share_interval(labels[:0], right[:0], 100) is None
    assert share_interval(labels[:60], right[:60], 100) is None
    assert (
        share_interval(labels[59:], right[59:], 100) is None
        and share_interval(labels[58:], right[58:], 100) is not None
    )
