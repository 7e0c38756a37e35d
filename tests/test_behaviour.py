"""Threshold rates, Bayes predictive values, curves and band accuracy from stored probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_score

from xray_xai.behaviour import band_rows, curves, predictive_values, rates_at

LABELS = [0, 0, 0, 1, 1, 1, 1]
PROBS = [0.1, 0.5, 0.7, 0.3, 0.5, 0.8, 0.95]


def test_rates_at_counts_threshold_as_positive():
    rates = rates_at(LABELS, PROBS, 0.5)
    assert (rates.tn, rates.fp, rates.fn, rates.tp) == (1, 2, 1, 3)
    assert rates.confusion == [[1, 2], [1, 3]]
    assert rates.sensitivity == pytest.approx(3 / 4) and rates.specificity == pytest.approx(1 / 3)
    assert rates.prevalence == pytest.approx(4 / 7) and rates.n == 7


def test_rates_undefined_without_a_class():
    rates = rates_at([1, 1], [0.2, 0.9], 0.5)
    assert rates.specificity is None and rates.sensitivity == 0.5


def test_predictive_values_textbook_example():
    ppv, npv = predictive_values(0.9, 0.9, 0.1)
    assert ppv == pytest.approx(0.5) and npv == pytest.approx(0.81 / 0.82)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.75])
def test_predictive_values_at_own_prevalence_match_observed(threshold):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(400), 0, 1)
    rates = rates_at(labels, probs, threshold)
    ppv, npv = predictive_values(rates.sensitivity, rates.specificity, rates.prevalence)
    predicted = (probs >= threshold).astype(int)
    assert ppv == pytest.approx(precision_score(labels, predicted))
    assert npv == pytest.approx(precision_score(labels, predicted, pos_label=0))


def test_rarer_disease_lowers_ppv_and_raises_npv():
    common, rare = predictive_values(0.95, 0.9, 0.5), predictive_values(0.95, 0.9, 0.02)
    assert rare[0] < common[0] and rare[1] > common[1]


def test_predictive_values_undefined_and_invalid():
    assert predictive_values(0.9, 1.0, 0.0) == (None, 1.0)  # no positive calls at all: PPV is 0/0
    assert predictive_values(None, 0.9, 0.3) == (None, None)
    with pytest.raises(ValueError):
        predictive_values(0.9, 0.9, 1.5)


def test_curves_perfect_and_single_class():
    perfect = curves([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect.auroc == 1.0 and perfect.auprc == 1.0
    assert perfect.fpr[0] == 0 and perfect.tpr[-1] == 1
    swapped = curves([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])
    assert swapped.auroc == 0.0
    single = curves([1, 1], [0.3, 0.6])
    assert single.auroc is None and single.auprc is None and len(single.fpr) == 0


def test_band_rows_count_and_accuracy_per_band():
    bands = ["Low", "Low", "Moderate", "Low", "Low", "Moderate", "High"]
    rows = {r.band: r for r in band_rows(LABELS, PROBS, bands, 0.5)}
    assert list(rows) == ["High", "Moderate", "Low"]
    assert (rows["High"].n, rows["High"].correct) == (1, 1)
    assert (rows["Moderate"].n, rows["Moderate"].correct) == (2, 1)  # 0.7 on a NORMAL film is wrong
    assert (rows["Low"].n, rows["Low"].correct) == (4, 2)
    assert rows["Low"].accuracy == 0.5
    assert band_rows([], [], [], 0.5)[0].accuracy is None
