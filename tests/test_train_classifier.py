"""Pieces of the classifier's training script that need no training: the card's calibration metrics and resuming."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from xray_xai.calibration import brier, nll, sigmoid
from xray_xai.metrics import ece
from xray_xai.training.classifier import TrainConfig, same_run
from xray_xai.training.finalize import calibration_metrics


def test_calibration_metrics_score_before_and_after_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 100)
    labels = (rng.uniform(size=100) < sigmoid(logits / 2)).astype(int)
    metrics = calibration_metrics(logits, labels, 2.0)
    raw, calibrated = sigmoid(logits), sigmoid(logits / 2)
    assert metrics == {
        "nll_before": nll(raw, labels),
        "nll_after": nll(calibrated, labels),
        "ece_before": ece(raw, labels),
        "ece_after": ece(calibrated, labels),
        "brier_before": brier(raw, labels),
        "brier_after": brier(calibrated, labels),
    }
    assert metrics["nll_after"] < metrics["nll_before"]  # the true temperature helps


@pytest.mark.parametrize(
    "saved, same", [({}, True), ({"epochs": 99}, True), ({"lr": 1.0}, False), ({"blur": 2.5}, False)]
)
def test_same_run_fills_new_options_with_defaults_and_allows_more_epochs(saved, same):
    current = json.loads(json.dumps(asdict(TrainConfig())))
    assert same_run(saved, current) is same
