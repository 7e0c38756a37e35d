"""xray_xai.metrics: threshold rates and their 0/0 convention, Bayes predictive values, areas and band accuracy."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from xray_xai.metrics import (
    auprc,
    auroc,
    band_rows,
    called_pneumonia,
    confusion_at,
    finite_or_none,
    predictive_values,
    ratio,
    threshold_metrics,
)

LABELS = [0, 0, 0, 1, 1, 1, 1]
PROBS = [0.1, 0.5, 0.7, 0.3, 0.5, 0.8, 0.95]


def test_confusion_at_counts_threshold_as_positive():
    rates = confusion_at(LABELS, PROBS, 0.5)
    assert (rates.tn, rates.fp, rates.fn, rates.tp) == (1, 2, 1, 3)
    assert rates.confusion == [[1, 2], [1, 3]]
    assert rates.sensitivity == pytest.approx(3 / 4) and rates.specificity == pytest.approx(1 / 3)
    assert rates.ppv == pytest.approx(3 / 5) and rates.npv == pytest.approx(1 / 2)
    assert rates.accuracy == pytest.approx(4 / 7) and rates.f1 == pytest.approx(6 / 9)
    assert rates.prevalence == pytest.approx(4 / 7) and rates.n == 7
    assert called_pneumonia(PROBS, 0.5).tolist() == [False, True, True, False, True, True, True]


def test_undefined_ratios_are_none_never_nan():
    """The one 0/0 convention: None (JSON null, "n/a" in the app) wherever a denominator is zero."""
    assert ratio(0, 0) is None and ratio(3, 4) == 0.75
    assert (
        finite_or_none(float("nan")) is None and finite_or_none(float("inf")) is None and finite_or_none(None) is None
    )
    only_pneumonia = confusion_at([1, 1], [0.2, 0.9], 0.5)
    assert only_pneumonia.specificity is None and only_pneumonia.npv == 0.0 and only_pneumonia.sensitivity == 0.5
    assert only_pneumonia.balanced_accuracy is None
    nothing_called = confusion_at([0, 1], [0.1, 0.2], 0.5)
    assert nothing_called.ppv is None and nothing_called.f1 == 0.0  # no PNEUMONIA call: PPV is 0/0, F1 is 0 / 1
    empty = threshold_metrics([], [], 0.5, n_bootstrap=100)
    assert empty["confusion"] == [[0, 0], [0, 0]]
    assert all(
        empty[key] is None
        for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "accuracy_ci95")
    )
    assert "NaN" not in json.dumps(threshold_metrics([1, 1, 1], [0.2, 0.6, 0.9], 0.5))  # strict JSON


@pytest.mark.parametrize("seed", range(6))
def test_threshold_metrics_equal_scikit_learn_with_nan_as_none(seed):
    """The former evaluation code: scikit-learn's scores with zero_division=NaN, NaN written as null."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    labels = rng.integers(0, 2, n) if seed % 3 else np.full(n, seed % 2)  # some sets hold one class only
    probs = rng.random(n)
    for threshold in (0.0, 0.3, 0.5, 0.9, 1.1):
        predicted = (probs >= threshold).astype(int)
        nan = float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = {
                "accuracy": accuracy_score(labels, predicted),
                "sensitivity": recall_score(labels, predicted, pos_label=1, zero_division=nan),
                "specificity": recall_score(labels, predicted, pos_label=0, zero_division=nan),
                "ppv": precision_score(labels, predicted, pos_label=1, zero_division=nan),
                "npv": precision_score(labels, predicted, pos_label=0, zero_division=nan),
                "f1": f1_score(labels, predicted, pos_label=1, zero_division=nan),
                "balanced_accuracy": balanced_accuracy_score(labels, predicted) if len(set(labels)) == 2 else nan,
            }
        metrics = threshold_metrics(labels, probs, threshold)
        assert metrics["confusion"] == confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
        assert {key: metrics[key] for key in expected} == {
            key: finite_or_none(value) for key, value in expected.items()
        }, threshold


def test_predictive_values_textbook_example():
    ppv, npv = predictive_values(0.9, 0.9, 0.1)
    assert ppv == pytest.approx(0.5) and npv == pytest.approx(0.81 / 0.82)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.75])
def test_predictive_values_at_own_prevalence_match_observed(threshold):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(400), 0, 1)
    rates = confusion_at(labels, probs, threshold)
    ppv, npv = predictive_values(rates.sensitivity, rates.specificity, rates.prevalence)
    assert ppv == pytest.approx(rates.ppv) and ppv == pytest.approx(precision_score(labels, probs >= threshold))
    assert npv == pytest.approx(rates.npv)


def test_rarer_disease_lowers_ppv_and_raises_npv():
    common, rare = predictive_values(0.95, 0.9, 0.5), predictive_values(0.95, 0.9, 0.02)
    assert rare[0] < common[0] and rare[1] > common[1]


def test_predictive_values_undefined_and_invalid():
    assert predictive_values(0.9, 1.0, 0.0) == (None, 1.0)  # no positive calls at all: PPV is 0/0
    assert predictive_values(None, 0.9, 0.3) == (None, None)
    with pytest.raises(ValueError):
        predictive_values(0.9, 0.9, 1.5)


def test_areas_are_scikit_learns_and_none_on_one_class():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50)
    probs = rng.random(50)
    assert auroc(labels, probs) == roc_auc_score(labels, probs)
    assert auprc(labels, probs) == average_precision_score(labels, probs)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0 and auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([1, 1], [0.3, 0.6]) is None and auprc([1, 1], [0.3, 0.6]) is None


def test_band_rows_count_and_accuracy_per_band():
    bands = ["Low", "Low", "Moderate", "Low", "Low", "Moderate", "High"]
    correct = called_pneumonia(PROBS, 0.5) == np.array(LABELS)
    rows = {r.band: r for r in band_rows(correct, bands)}
    assert list(rows) == ["High", "Moderate", "Low"]
    assert (rows["High"].n, rows["High"].correct) == (1, 1)
    assert (rows["Moderate"].n, rows["Moderate"].correct) == (2, 1)  # 0.7 on a NORMAL film is wrong
    assert (rows["Low"].n, rows["Low"].correct) == (4, 2)
    assert rows["Low"].accuracy == 0.5
    assert band_rows([], [])[0].accuracy is None
