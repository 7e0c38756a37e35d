"""The sections of the evaluation's ``metrics.json`` that read the model card: ranking and
calibration of the calibrated probabilities, each of the card's operating points, the app's
confidence bands, and a second checkpoint side by side. The metrics themselves are
:mod:`xray_xai.metrics`."""

from __future__ import annotations

import numpy as np

from .. import CLASSES
from ..calibration import OPERATING_POINTS, brier, sigmoid
from ..metrics import (
    CI_LEVEL,
    auprc,
    auroc,
    auroc_interval,
    band_rows,
    both_classes,
    ece,
    ece_interval,
    finite_or_none,
    paired_auroc_difference,
    ratio,
    share_interval,
    threshold_metrics,
)
from ..models.classifier import Classifier
from .scoring import Scored, calibrated


def compute_metrics(
    labels: np.ndarray, logits: np.ndarray, classifier: Classifier, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Ranking, calibration and per-operating-point metrics of raw logits under a model card."""
    labels = np.asarray(labels, dtype=int)
    raw = sigmoid(logits)
    probs = calibrated(classifier, logits)
    notes = []
    if not both_classes(labels):
        notes.append("Only one class present: AUROC, AUPRC and their interval are undefined (null).")
    card = classifier.card
    metrics = {
        "n": int(len(labels)),
        "counts": {name: int((labels == i).sum()) for i, name in enumerate(CLASSES)},
        "auroc": auroc(labels, probs),
        "auroc_ci95": auroc_interval(labels, probs, n_bootstrap, seed),
        "auprc": auprc(labels, probs),
        "ece": ece(probs, labels),
        "ece_ci95": ece_interval(labels, probs, n_bootstrap, seed),
        "brier": brier(probs, labels),
        "mean_probability": float(probs.mean()) if len(probs) else None,
        "uncalibrated": {"ece": ece(raw, labels), "brier": brier(raw, labels)},
        "operating_points": {
            name: threshold_metrics(labels, probs, card.operating_points[name]["threshold"], n_bootstrap, seed)
            | {"validation": {k: card.operating_points[name][k] for k in ("sensitivity", "specificity")}}
            for name in OPERATING_POINTS
            if name in card.operating_points
        },
        "temperature": card.temperature,
        "bootstrap": {
            "resamples": n_bootstrap,
            "seed": seed,
            "level": CI_LEVEL,
            "unit": "image, resampled within each class",
        },
        "notes": notes,
    }
    missing = [name for name in OPERATING_POINTS if name not in card.operating_points]
    if missing:
        notes.append(f"The model card defines no {', '.join(missing)} operating point.")
    return metrics


def band_metrics(
    labels: np.ndarray,
    scored: Scored,
    classifier: Classifier,
    operating_point: str = "balanced",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """How far the app's confidence bands (after lowering for uncertainty and unusual input)
    can be trusted at one operating point: accuracy per band, the wrong answers given in the
    High band as a share of all films (with its bootstrap interval), and how often wrong and
    right answers are flagged (a band below High or an out-of-distribution warning)."""
    probs = calibrated(classifier, scored.logits)
    predictions = [
        classifier.decide(float(p), operating_point, members, bool(unusual))
        for p, members, unusual in zip(probs, scored.member_probabilities, scored.unusual, strict=True)
    ]
    positive = classifier.card.classes[1]
    correct = np.array([(pred.label == positive) == bool(y) for pred, y in zip(predictions, labels, strict=True)])
    bands = np.array([pred.band for pred in predictions])
    flagged = (bands != "High") | scored.unusual
    lowered = np.array([bool(pred.band_reasons) for pred in predictions])
    spread = np.array([pred.uncertainty if pred.uncertainty is not None else np.nan for pred in predictions])
    high_band_errors = (bands == "High") & ~correct

    def share(mask: np.ndarray) -> float | None:
        return ratio(mask.sum(), mask.size)

    return {
        "operating_point": operating_point,
        "bands": {row.band: {"n": row.n, "accuracy": row.accuracy} for row in band_rows(correct, bands)},
        "high_band_error_rate": float(high_band_errors.sum() / max(1, len(labels))),
        "high_band_error_rate_ci95": share_interval(labels, high_band_errors, n_bootstrap, seed),
        "flagged": {
            "rule": "band below High, or an out-of-distribution warning",
            "wrong": {"n": int((~correct).sum()), "share_flagged": share(flagged[~correct])},
            "right": {"n": int(correct.sum()), "share_flagged": share(flagged[correct])},
        },
        "band_lowered": {"wrong": share(lowered[~correct]), "right": share(lowered[correct])},
        "out_of_distribution": int(scored.unusual.sum()),
        "uncertainty": None
        if np.isnan(spread).all()
        else {
            "median_wrong": finite_or_none(np.nanmedian(spread[~correct])) if (~correct).any() else None,
            "median_right": finite_or_none(np.nanmedian(spread[correct])) if correct.any() else None,
        },
    }


def versus_metrics(
    labels: np.ndarray,
    logits: np.ndarray,
    classifier: Classifier,
    other: Classifier,
    other_logits: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """Side-by-side numbers of a second checkpoint scored on the same images."""
    probs, other_probs = calibrated(classifier, logits), calibrated(other, other_logits)
    return {
        "arch": other.card.arch,
        "checkpoint_sha256": other.card.sha256,
        "auroc": auroc(labels, other_probs),
        "ece": ece(other_probs, labels),
        "brier": brier(other_probs, labels),
        "auroc_difference": paired_auroc_difference(labels, probs, other_probs, n_bootstrap, seed),
    }
